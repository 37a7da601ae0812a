/* agentflow console: run lists and the approvals queue follow the list socket.
 *
 * A run.status frame changes every status badge of that run on the page
 * (elements with data-run-status="<run id>"); an approval.requested frame adds the new
 * question to the end of the queue (oldest first), as text; approval.decided marks it.
 */
(function () {
  "use strict";

  function onStatus(data) {
    document.querySelectorAll('[data-run-status="' + String(data.run).replace(/[^0-9a-f-]/gi, "") + '"]').forEach(function (badge) {
      badge.textContent = data.status;
      badge.className = window.agentflow.statusClass(data.status);
    });
  }

  function onApproval(data, live) {
    var list = document.getElementById("af-queue-list");
    var template = document.getElementById("af-queue-new");
    if (!list || !template || document.querySelector('[data-approval="' + Number(data.approval) + '"]')) {
      return;
    }
    var empty = document.getElementById("af-queue-empty");
    if (empty) {
      empty.remove();
    }
    var item = template.content.firstElementChild.cloneNode(true);
    item.dataset.approval = String(data.approval);
    item.dataset.run = String(data.run);
    item.querySelector(".af-approval-title").textContent = data.title;
    var link = item.querySelector(".af-run-link");
    link.textContent = String(data.run);
    link.href = live.runUrl.replace(live.runPlaceholder, encodeURIComponent(String(data.run))) + "#approval-" + Number(data.approval);
    list.appendChild(item);
  }

  /* Someone decided: the queue item stays, marked, with its buttons off. */
  function onDecided(data) {
    var item = document.querySelector('.af-queue-item[data-approval="' + Number(data.approval) + '"]');
    if (!item || item.classList.contains("af-decided")) {
      return;
    }
    item.classList.add("af-decided");
    var panel = item.querySelector(".af-approval");
    if (panel) {
      panel.classList.add("af-decided");
    }
    var badge = item.querySelector(".af-approval-status");
    if (badge) {
      badge.textContent = data.status;
      badge.className = "af-approval-status " + window.agentflow.statusClass(data.status);
    }
    item.querySelectorAll("form.af-decide button").forEach(function (button) { button.disabled = true; });
    var output = item.querySelector(".af-decide-result");
    if (output && output.dataset.state !== "done") {
      output.textContent = "Decided elsewhere: " + data.status + ".";
      output.dataset.state = "done";
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = window.agentflow.pageData("af-live") || {socket: "/ws/agentflow/runs/"};
    new window.agentflow.Socket(live.socket, {
      resume: false,
      onState: window.agentflow.showState,
      onEvent: function (frame) {
        var data = frame.data || {};
        if (frame.event === "run.status") {
          onStatus(data);
        } else if (frame.event === "approval.requested" && live.runUrl) {
          onApproval(data, live);
        } else if (frame.event === "approval.decided") {
          onDecided(data);
        }
      }
    });
  });
}());
