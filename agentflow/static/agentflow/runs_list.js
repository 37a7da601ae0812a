/* agentflow console: list pages (runs, the approvals queue, schedules) follow the list socket.
 *
 * The socket resumes after the event key the page was rendered at (its "af-live" data),
 * so what was committed between the rendering and the connect is replayed. A frame that
 * matters to the page (data-af-refresh-on on its live data: "status", "approvals", or both)
 * asks its live panels to refresh from the server (agentflow.Live, coalesced), and so does
 * every successful (re)connect. A status frame also changes that run's status badges
 * at once (elements with data-run-status="<run id>"). Frame names and the finished
 * statuses come from the server (agentflow.names()).
 */
(function () {
  "use strict";

  function onStatus(data) {
    document.querySelectorAll('[data-run-status="' + String(data.run).replace(/[^0-9a-f-]/gi, "") + '"]').forEach(function (badge) {
      badge.textContent = data.status;
      badge.className = window.agentflow.statusClass(data.status);
    });
  }

  /* Whether a frame can change what the page shows. */
  function matters(frame, refreshOn, names) {
    var data = frame.data || {};
    if (frame.event === names.status) {
      return refreshOn.indexOf("status") !== -1 || (refreshOn.indexOf("approvals") !== -1 && names.terminal.indexOf(data.status) !== -1);
    }
    return names.approvals.indexOf(frame.event) !== -1 && refreshOn.indexOf("approvals") !== -1;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = window.agentflow.pageData("af-live") || {socket: "/ws/agentflow/runs/"};
    var refreshOn = live.refreshOn || ["status", "approvals"];
    var names = window.agentflow.names();
    var panels = new window.agentflow.Live({onGone: window.agentflow.approvalGone});
    window.agentflow.live = panels;
    new window.agentflow.Socket(live.socket, {
      resume: typeof live.after === "number",
      unordered: true,
      after: live.after,
      onState: window.agentflow.showState,
      onOpen: function () { panels.refresh(true); },
      onEvent: function (frame) {
        if (frame.event === names.status) {
          onStatus(frame.data || {});
        }
        if (matters(frame, refreshOn, names)) {
          panels.refresh(names.approvals.indexOf(frame.event) !== -1);
        }
      }
    });
  });

  // A swapped panel holds a fresh connection badge: show the socket's state on it again.
  document.addEventListener("agentflow:swapped", function () {
    var state = document.documentElement.dataset.afSocket;
    if (state) {
      window.agentflow.showState(state);
    }
  });
}());
