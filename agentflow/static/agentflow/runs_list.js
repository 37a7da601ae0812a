/* agentflow console: run lists and the approvals queue follow the list socket.
 *
 * A run.status frame changes every status badge of that run on the page
 * (elements with data-run-status="<run id>"); an approval.requested frame adds the new
 * question to the end of the queue (oldest first), as text.
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
        }
      }
    });
  });
}());
