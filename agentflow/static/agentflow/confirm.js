/* Ask before a destructive action: a button or form with data-confirm="question".
 *
 * The question opens in a native <dialog>; "confirm" submits the form again with a
 * hidden confirm=yes field, so the server (which asks on its own page when that field is
 * missing) acts at once. Listening on the document in the capture phase runs this before
 * any other submit handler (decide.js posts decisions with fetch), and covers forms that
 * a live update put on the page after it loaded. No inline script: the CSP forbids it.
 */
(function () {
  "use strict";

  var confirmed = new WeakSet();
  var dialog = null;

  function build() {
    dialog = document.createElement("dialog");
    dialog.className = "af-confirm";
    dialog.setAttribute("data-testid", "confirm-dialog");
    var text = document.createElement("p");
    text.className = "af-confirm-text";
    var form = document.createElement("form");
    form.method = "dialog";
    form.className = "af-buttons";
    var no = document.createElement("button");
    no.value = "no";
    no.className = "button";
    no.textContent = "Go back";
    no.setAttribute("data-testid", "confirm-no");
    var yes = document.createElement("button");
    yes.value = "yes";
    yes.className = "button af-danger";
    yes.setAttribute("data-testid", "confirm-yes");
    form.append(no, yes);
    dialog.append(text, form);
    document.body.append(dialog);
    return dialog;
  }

  function ask(question, label, then) {
    var box = dialog || build();
    box.querySelector(".af-confirm-text").textContent = question;
    box.querySelector("[data-testid=confirm-yes]").textContent = label || "Confirm";
    box.returnValue = "";
    box.addEventListener("close", function done() {
      box.removeEventListener("close", done);
      if (box.returnValue === "yes") {
        then();
      }
    });
    box.showModal();
    box.querySelector("[data-testid=confirm-no]").focus();
  }

  /* The form as it is on the page now: a live refresh may have replaced the one that was
     clicked while the question was open (the same action URL finds its successor). */
  function current(form, button) {
    if (form.isConnected) {
      return {form: form, button: button};
    }
    var action = form.getAttribute("action");
    var again = Array.prototype.find.call(document.forms, function (one) {
      return one.getAttribute("action") === action;
    });
    if (!again || !button) {
      return {form: again || null, button: null};
    }
    var twin = Array.prototype.find.call(again.querySelectorAll("button"), function (one) {
      return one.name === button.name && one.value === button.value;
    });
    return {form: again, button: twin || null};
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    var source = button && button.hasAttribute("data-confirm") ? button : form;
    if (!source.hasAttribute || !source.hasAttribute("data-confirm")) {
      return;
    }
    if (confirmed.has(form)) {
      confirmed.delete(form);
      return; // asked and answered: let the submission (or decide.js) go on
    }
    event.preventDefault();
    event.stopImmediatePropagation();
    ask(source.getAttribute("data-confirm"), source.getAttribute("data-confirm-label"), function () {
      var now = current(form, button);
      if (!now.form) {
        return; // the action is no longer offered (the run finished meanwhile)
      }
      if (!now.form.querySelector("input[name=confirm]")) {
        var field = document.createElement("input");
        field.type = "hidden";
        field.name = "confirm";
        field.value = "yes";
        now.form.append(field);
      }
      confirmed.add(now.form);
      now.form.requestSubmit(now.button || undefined);
    });
  }, true);
}());
