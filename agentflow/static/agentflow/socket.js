/* agentflow console: a websocket that reconnects with exponential backoff.
 *
 * Frames are {"seq", "event", "data"}; a batch frame carries several in data.events.
 * Frame names and run statuses come from the server, never from a copy here: pages that
 * load these scripts render them as the "af-names" JSON blob (agentflow.names()).
 * With `resume: true` the socket asks for `?after=<last seq>` when it (re)connects and
 * drops any frame at or below the last seq it handed on, so nothing is missed or repeated.
 * With `unordered: true` as well (the list socket, whose seqs are event keys that may
 * commit out of order), it resumes after the highest seq seen and drops only the frames
 * it already handed on (same seq, event and subject).
 * `onOpen` is called on every successful (re)connect.
 */
(function () {
  "use strict";

  function socketUrl(path, after) {
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    var url = scheme + "//" + window.location.host + path;
    return after === null ? url : url + "?after=" + encodeURIComponent(String(after));
  }

  function AgentflowSocket(path, options) {
    this.path = path;
    this.resume = Boolean(options.resume);
    this.unordered = Boolean(options.unordered);
    this.last = this.resume ? Number(options.after || 0) : null;
    this.seen = new Set();
    this.seenOrder = [];
    this.onEvent = options.onEvent;
    this.onState = options.onState || function () {};
    this.onOpen = options.onOpen || function () {};
    this.failures = 0;
    this.batch = names().batch;
    this.closed = false;
    this.connect();
  }

  AgentflowSocket.prototype.connect = function () {
    var self = this;
    var ws = new WebSocket(socketUrl(this.path, this.last));
    this.ws = ws;
    this.onState("connecting");
    ws.onopen = function () {
      self.failures = 0;
      self.onState("live");
      self.onOpen();
    };
    ws.onmessage = function (message) {
      var frame;
      try {
        frame = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      self.dispatch(frame);
    };
    ws.onclose = function () {
      if (self.closed) {
        return;
      }
      self.failures += 1;
      var delay = Math.min(30000, 500 * Math.pow(2, self.failures - 1));
      delay = delay / 2 + Math.random() * delay / 2;
      self.onState("reconnecting");
      window.setTimeout(function () { self.connect(); }, delay);
    };
  };

  AgentflowSocket.prototype.dispatch = function (frame) {
    if (frame && frame.event === this.batch && frame.data && Array.isArray(frame.data.events)) {
      for (var i = 0; i < frame.data.events.length; i += 1) {
        this.handle(frame.data.events[i]);
      }
      return;
    }
    this.handle(frame);
  };

  AgentflowSocket.prototype.handle = function (frame) {
    if (!frame || typeof frame.event !== "string") {
      return;
    }
    if (this.resume && typeof frame.seq === "number") {
      if (this.unordered) {
        if (!this.remember(frame)) {
          return;
        }
        this.last = Math.max(this.last, frame.seq);
      } else if (frame.seq <= this.last) {
        return;
      } else {
        this.last = frame.seq;
      }
    }
    this.onEvent(frame);
  };

  var SEEN_KEPT = 5000;

  /* Whether this frame is new to the socket (and remember it, forgetting the oldest). */
  AgentflowSocket.prototype.remember = function (frame) {
    var data = frame.data || {};
    var key = frame.seq + "|" + frame.event + "|" + String(data.approval || data.run || "");
    if (this.seen.has(key)) {
      return false;
    }
    this.seen.add(key);
    this.seenOrder.push(key);
    if (this.seenOrder.length > SEEN_KEPT) {
      this.seen.delete(this.seenOrder.shift());
    }
    return true;
  };

  AgentflowSocket.prototype.close = function () {
    this.closed = true;
    this.ws.close();
  };

  /* Read the page's JSON data block (never executed: type="application/json"). */
  function pageData(id) {
    var element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  var NAMES = null;

  /* The server's frame names and statuses (agentflow._console.live.names), read once. */
  function names() {
    if (NAMES === null) {
      NAMES = pageData("af-names");
      if (NAMES === null) {
        throw new Error("agentflow: this page has no af-names data; include agentflow/console/live_names.html");
      }
    }
    return NAMES;
  }

  /* Show the connection state as <html data-af-socket="..."> and, where the page has
   * one, in the element with id "af-connection", as text. */
  function showState(state) {
    document.documentElement.dataset.afSocket = state;
    var element = document.getElementById("af-connection");
    if (!element) {
      return;
    }
    element.dataset.state = state;
    element.textContent = {connecting: "connecting…", live: "live", reconnecting: "reconnecting…"}[state] || state;
  }

  function statusClass(status) {
    return "af-status af-status--" + String(status || "none").toLowerCase().replace(/[^a-z_-]/g, "");
  }

  window.agentflow = window.agentflow || {};
  window.agentflow.Socket = AgentflowSocket;
  window.agentflow.pageData = pageData;
  window.agentflow.names = names;
  window.agentflow.showState = showState;
  window.agentflow.statusClass = statusClass;
}());
