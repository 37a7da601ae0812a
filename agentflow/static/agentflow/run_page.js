/* agentflow console: a run's pages (the run page, a fan-out's children) follow its events.
 *
 * Every committed event asks the page's live panels to refresh from the server
 * (agentflow.Live: coalesced, so a flood of events costs a few fetches; a question, a
 * decision or a status change is urgent), and so does every successful (re)connect, so
 * nothing committed before the socket listened is missed. Run
 * events also change the status badge at once. Every event is listed, as text, under
 * "Live events"; a model call's token deltas grow one line per position there.
 */
(function () {
  "use strict";

  var EVENTS_KEPT = 500;

  function setStatus(element, status) {
    element.textContent = status;
    element.className = window.agentflow.statusClass(status);
  }

  // A model call's token deltas (ephemeral, seq null): one growing line per position.
  function appendDelta(frame) {
    var list = document.getElementById("af-events");
    var data = frame.data || {};
    var id = "af-delta-" + data.position;
    var item = document.getElementById(id);
    if (!list) {
      return;
    }
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
      list.appendChild(item);
    }
    item.querySelector(".af-event-data").textContent += data.text || "";
  }

  function logEvent(frame) {
    var list = document.getElementById("af-events");
    if (!list) {
      return;
    }
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

  /* What a person acts on (a question, a decision, the run's status) cannot wait out a flood. */
  function urgent(frame, names) {
    if (frame.event === names.batch) {
      return false;
    }
    return names.approvals.indexOf(frame.event) !== -1 || Object.prototype.hasOwnProperty.call(names.statusAfter, frame.event);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = window.agentflow.pageData("af-live");
    if (!live) {
      return;
    }
    var names = window.agentflow.names();
    var panels = new window.agentflow.Live({onGone: window.agentflow.approvalGone});
    window.agentflow.live = panels;
    new window.agentflow.Socket(live.socket, {
      resume: true,
      after: live.after,
      onState: window.agentflow.showState,
      onOpen: function () { panels.refresh(true); },
      onEvent: function (frame) {
        if (frame.event === names.delta) {
          appendDelta(frame);
          return;
        }
        logEvent(frame);
        var badge = document.getElementById("af-run-status");
        if (Object.prototype.hasOwnProperty.call(names.statusAfter, frame.event) && badge) {
          setStatus(badge, names.statusAfter[frame.event]);
        }
        panels.refresh(urgent(frame, names));
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
