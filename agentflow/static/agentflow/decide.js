/* agentflow console: Approve / Reject buttons post to the decide view with fetch().
 *
 * The reviewer's data is collected from the form's fields and sent only when it differs
 * from what the form showed at first, so an unchanged approval never sends the redacted
 * copy back as data. The JSON answer (or the error) is shown in the form, as text.
 */
(function () {
  "use strict";

  function readField(element) {
    var kind = element.dataset.kind;
    var value = element.value;
    if (kind === "boolean") {
      return {set: true, value: element.checked};
    }
    if (kind === "string") {
      return {set: true, value: value};
    }
    if (value.trim() === "") {
      return {set: false};
    }
    if (kind === "number" || kind === "integer") {
      var number = Number(value);
      if (!Number.isFinite(number) || (kind === "integer" && !Number.isInteger(number))) {
        throw new Error(element.dataset.field + " must be " + (kind === "integer" ? "a whole number" : "a number") + ".");
      }
      return {set: true, value: number};
    }
    try {
      return {set: true, value: JSON.parse(value)};
    } catch (error) {
      throw new Error((element.dataset.field || "The data") + " is not valid JSON: " + error.message);
    }
  }

  function collect(form) {
    var initial = JSON.parse(form.dataset.initial || "null");
    var fields = form.querySelectorAll("[data-kind]");
    if (fields.length === 1 && fields[0].dataset.kind === "whole") {
      var whole = readField(fields[0]);
      return whole.set ? whole.value : null;
    }
    var data = initial && typeof initial === "object" && !Array.isArray(initial) ? Object.assign({}, initial) : {};
    fields.forEach(function (element) {
      var read = readField(element);
      if (read.set) {
        data[element.dataset.field] = read.value;
      } else {
        delete data[element.dataset.field];
      }
    });
    return data;
  }

  function canonical(value) {
    if (Array.isArray(value)) {
      return "[" + value.map(canonical).join(",") + "]";
    }
    if (value && typeof value === "object") {
      return "{" + Object.keys(value).sort().map(function (key) {
        return JSON.stringify(key) + ":" + canonical(value[key]);
      }).join(",") + "}";
    }
    return JSON.stringify(value);
  }

  function show(form, text, state) {
    var output = form.querySelector(".af-decide-result");
    output.textContent = text;
    output.dataset.state = state;
  }

  function decide(form, decision) {
    var body = new FormData();
    body.append("decision", decision);
    body.append("comment", form.querySelector("[name=comment]").value);
    if (decision === "approve") {
      var data = collect(form);
      if (canonical(data) !== form.dataset.shown) {
        body.append("data", JSON.stringify(data));
      }
    }
    var token = form.querySelector("[name=csrfmiddlewaretoken]").value;
    body.append("csrfmiddlewaretoken", token);
    form.querySelectorAll("button").forEach(function (button) { button.disabled = true; });
    show(form, "Sending…", "pending");
    return fetch(form.action, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: {"X-CSRFToken": token, "Accept": "application/json"}
    }).then(function (response) {
      return response.json().catch(function () {
        return {error: "The server answered " + response.status + " without JSON."};
      }).then(function (answer) {
        if (response.ok) {
          show(form, "You " + answer.status + " it.", "done");
          var panel = form.closest(".af-approval");
          var status = panel && panel.querySelector(".af-approval-status");
          if (status) {
            status.textContent = answer.status;
            status.className = "af-approval-status " + window.agentflow.statusClass(answer.status);
          }
          form.dataset.decided = answer.status;
        } else {
          show(form, answer.error || ("Refused (" + response.status + ")."), "error");
          if (response.status !== 409) {
            form.querySelectorAll("button").forEach(function (button) { button.disabled = false; });
          }
        }
      });
    }).catch(function (error) {
      show(form, "Could not reach the server: " + error.message, "error");
      form.querySelectorAll("button").forEach(function (button) { button.disabled = false; });
    });
  }

  function prepare(form) {
    try {
      form.dataset.shown = canonical(collect(form));
    } catch (error) {
      form.dataset.shown = "";
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form.af-decide").forEach(prepare);
  });

  // Forms a live refresh brought in (live.js); a kept form keeps what it first showed.
  document.addEventListener("agentflow:swapped", function (event) {
    event.target.querySelectorAll("form.af-decide").forEach(function (form) {
      if (form.dataset.shown === undefined) {
        prepare(form);
      }
    });
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form.af-decide")) {
      return;
    }
    event.preventDefault();
    var decision = event.submitter && event.submitter.value;
    if (decision !== "approve" && decision !== "reject") {
      return;
    }
    try {
      decide(form, decision);
    } catch (error) {
      show(form, error.message, "error");
      form.querySelectorAll("button").forEach(function (button) { button.disabled = false; });
    }
  });
}());
