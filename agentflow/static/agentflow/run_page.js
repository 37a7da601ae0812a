/* agentflow console: the run page follows its run's events live.
 *
 * Run events change the status badge; step events change a step's status, or add a row
 * for a new step when the last page of the timeline is shown; approval events show the
 * decision in the approval panel. Every event is also listed, as text, under "Live events".
 */
(function () {
  "use strict";

  var RUN_STATUS = {
    "run.created": "pending",
    "run.started": "running",
    "run.waiting": "waiting",
    "run.paused": "paused",
    "run.resumed": "waiting",
    "run.succeeded": "succeeded",
    "run.failed": "failed",
    "run.cancelled": "cancelled"
  };
  var STEP_STATUS = {
    "step.started": "running",
    "step.waiting": "waiting",
    "step.retrying": "scheduled",
    "step.throttled": "scheduled",
    "step.completed": "succeeded",
    "step.failed": "failed",
    "approval.requested": "waiting"
  };
  var EVENTS_KEPT = 500;

  function setStatus(element, status) {
    element.textContent = status;
    var keep = element.classList.contains("af-step-status") ? "af-step-status " : "";
    element.className = keep + window.agentflow.statusClass(status);
  }

  function cell(text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) {
      td.className = className;
    }
    return td;
  }

  function addStepRow(data, status) {
    var body = document.querySelector("#af-timeline tbody");
    var empty = body.querySelector(".af-empty");
    if (empty) {
      empty.remove();
    }
    var row = document.createElement("tr");
    row.className = "af-step af-step--live";
    row.id = "step-" + data.position;
    row.dataset.position = String(data.position);
    row.dataset.testid = "step-row";
    row.appendChild(cell(String(data.position), "af-step-position"));
    row.appendChild(cell(String(data.kind || ""), "af-step-kind"));
    row.appendChild(cell(String(data.name || ""), "af-step-name"));
    var statusCell = document.createElement("td");
    var badge = document.createElement("span");
    badge.className = "af-step-status";
    badge.dataset.testid = "step-status";
    setStatus(badge, status);
    statusCell.appendChild(badge);
    row.appendChild(statusCell);
    ["af-num", "af-num", "af-num af-step-tokens", "af-num af-step-cost"].forEach(function (name) {
      row.appendChild(cell("–", name));
    });
    row.appendChild(cell("reload for details", "af-step-more af-note"));
    body.appendChild(row);
    return row;
  }

  function onStep(frame, live) {
    var data = frame.data || {};
    if (typeof data.position !== "number" || (data.index !== undefined && data.index !== null)) {
      return;
    }
    var status = (frame.event === "step.completed" && data.status) || STEP_STATUS[frame.event];
    if (!status) {
      return;
    }
    var row = document.querySelector('#af-timeline tr[data-position="' + data.position + '"]');
    if (!row && live.appendSteps) {
      row = addStepRow(data, status);
    }
    if (row) {
      setStatus(row.querySelector(".af-step-status"), status);
      showUsage(row, data);
    }
  }

  // A model call's step.completed carries its tokens and cost.
  function showUsage(row, data) {
    var tokens = row.querySelector(".af-step-tokens");
    if (tokens && typeof data.input_tokens === "number") {
      tokens.textContent = data.input_tokens + " / " + data.output_tokens;
    }
    var cost = row.querySelector(".af-step-cost");
    if (cost && data.cost && Number(data.cost) > 0) {
      cost.textContent = "$" + String(Number(data.cost));
    }
  }

  function onApproval(frame) {
    var data = frame.data || {};
    if (frame.event === "approval.requested") {
      var notice = document.getElementById("af-new-approval");
      if (notice) {
        notice.hidden = false;
      }
      return;
    }
    var panel = data.approval && document.getElementById("approval-" + data.approval);
    if (!panel) {
      return;
    }
    setStatus(panel.querySelector(".af-approval-status"), data.status || "decided");
    panel.classList.add("af-decided");
    panel.querySelectorAll("form.af-decide button").forEach(function (button) { button.disabled = true; });
    var output = panel.querySelector(".af-decide-result");
    if (output) {
      output.textContent = (data.status || "decided") + (data.by ? " by " + data.by : "") + (data.comment ? ": " + data.comment : "");
      output.dataset.state = "done";
    }
  }

  // A model call's token deltas (ephemeral, seq null): one growing line per position.
  function appendDelta(frame) {
    var data = frame.data || {};
    var id = "af-delta-" + data.position;
    var item = document.getElementById(id);
    if (!item) {
      item = document.createElement("li");
      item.id = id;
      item.className = "af-event af-streaming";
      var head = document.createElement("span");
      head.className = "af-event-head";
      head.textContent = "position " + data.position + " model streaming";
      var body = document.createElement("code");
      body.className = "af-event-data";
      item.appendChild(head);
      item.appendChild(document.createTextNode(" "));
      item.appendChild(body);
      document.getElementById("af-events").appendChild(item);
    }
    item.querySelector(".af-event-data").textContent += data.text || "";
  }

  function logEvent(frame) {
    var list = document.getElementById("af-events");
    var item = document.createElement("li");
    item.className = "af-event";
    item.dataset.seq = String(frame.seq);
    item.dataset.event = frame.event;
    var head = document.createElement("span");
    head.className = "af-event-head";
    head.textContent = "#" + frame.seq + " " + frame.event;
    var body = document.createElement("code");
    body.className = "af-event-data";
    body.textContent = JSON.stringify(frame.data);
    item.appendChild(head);
    item.appendChild(document.createTextNode(" "));
    item.appendChild(body);
    list.appendChild(item);
    while (list.children.length > EVENTS_KEPT) {
      list.removeChild(list.firstChild);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = window.agentflow.pageData("af-live");
    if (!live) {
      return;
    }
    var runStatus = document.getElementById("af-run-status");
    new window.agentflow.Socket(live.socket, {
      resume: true,
      after: live.after,
      onState: window.agentflow.showState,
      onEvent: function (frame) {
        if (frame.event === "llm.delta") {
          appendDelta(frame);
          return;
        }
        logEvent(frame);
        if (RUN_STATUS[frame.event]) {
          setStatus(runStatus, RUN_STATUS[frame.event]);
          document.getElementById("af-waits-stale").hidden = false;
        } else if (frame.event.indexOf("approval.") === 0) {
          onApproval(frame);
        }
        onStep(frame, live);
      }
    });
  });
}());
