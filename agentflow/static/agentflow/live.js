/* agentflow console: live panels, refreshed from the server's own rendering.
 *
 * A page marks its panels with data-af-live (each with a stable id). refresh() asks for
 * the page's own URL again (same query string, X-Agentflow-Live: 1), parses the answer
 * with DOMParser (inert: no script runs) and swaps each panel whose HTML changed.
 *
 * Coalesced: one fetch in flight and one queued at most. The first request after a quiet
 * spell fetches at once; requests that keep coming while fetches run wait for the next
 * slot, and the slots spread out (up to MAX_GAP) while the flood lasts. An urgent request
 * (what a person must act on) is served within URGENT_GAP of the last fetch's start.
 *
 * What the person is doing survives a swap:
 * - an element with data-af-keep and an id is kept as it is (a decide form being filled
 *   in); one the server no longer renders stays where it was and is marked gone, with
 *   what the server says about it (an element with data-af-gone-info="<its id>");
 * - <details> keep their open state, edited fields their values, the focused field its
 *   focus and selection, and the page its scroll position;
 * - nothing is swapped while a modal <dialog> is open (a confirmation for a form on the
 *   page): the refresh waits for it to close.
 * What changes without events (a fan-out's children) is polled: while the page holds an
 * element with data-af-poll="<ms>", it refreshes that often.
 *
 * After a swap, "agentflow:swapped" is dispatched on the new panel (it bubbles), so other
 * scripts can bind to what it holds. <html data-af-refresh> says how the last refresh went
 * ("fresh", or "failed" when the page could not be fetched, as when logged out).
 */
(function () {
  "use strict";

  var FIRST_GAP = 150; // ms between fetch starts while requests keep coming
  var MAX_GAP = 2000; // ... at most, however long a flood lasts
  var FLOOD = 3; // requests in a row (none QUIET ms apart) before the gap doubles
  var QUIET = 1000; // ms without a request after which the gap is FIRST_GAP again
  var URGENT_GAP = 100; // ms between fetch starts for an urgent request, flood or not

  function now() {
    return window.performance.now();
  }

  /* The live panels of a document; a panel inside another goes with the outer one. */
  function panels(root) {
    return Array.prototype.filter.call(root.querySelectorAll("[data-af-live][id]"), function (panel) {
      return !(panel.parentElement && panel.parentElement.closest("[data-af-live][id]"));
    });
  }

  function byId(root, id) {
    return root.querySelector("#" + window.CSS.escape(id));
  }

  /* Where a <details> sits: its own id, or its nearest ancestor's id and its rank there. */
  function detailsKey(details) {
    if (details.id) {
      return details.id;
    }
    var owner = details.parentElement && details.parentElement.closest("[id]");
    if (!owner) {
      return null;
    }
    var all = owner.querySelectorAll("details");
    return owner.id + "/" + Array.prototype.indexOf.call(all, details);
  }

  function edited(field) {
    if (field.type === "checkbox" || field.type === "radio") {
      return field.checked !== field.defaultChecked;
    }
    if (field.tagName === "SELECT") {
      return Array.prototype.some.call(field.options, function (option) {
        return option.selected !== option.defaultSelected;
      });
    }
    return field.value !== field.defaultValue;
  }

  function carryFields(oldPanel, newPanel) {
    oldPanel.querySelectorAll("input[id], textarea[id], select[id]").forEach(function (field) {
      if (field.closest("[data-af-keep]") || !edited(field)) {
        return;
      }
      var twin = byId(newPanel, field.id);
      if (!twin || twin.tagName !== field.tagName) {
        return;
      }
      if (field.type === "checkbox" || field.type === "radio") {
        twin.checked = field.checked;
      } else if (field.tagName === "SELECT") {
        twin.value = field.value;
      } else {
        twin.value = field.value;
      }
    });
  }

  function carryDetails(oldPanel, newPanel) {
    var open = {};
    var all = oldPanel.tagName === "DETAILS" ? [oldPanel] : [];
    all = all.concat(Array.prototype.slice.call(oldPanel.querySelectorAll("details")));
    all.forEach(function (details) {
      if (!details.closest("[data-af-keep]")) {
        var key = detailsKey(details);
        if (key) {
          open[key] = details.open;
        }
      }
    });
    var fresh = newPanel.tagName === "DETAILS" ? [newPanel] : [];
    fresh = fresh.concat(Array.prototype.slice.call(newPanel.querySelectorAll("details")));
    fresh.forEach(function (details) {
      var key = detailsKey(details);
      if (key && Object.prototype.hasOwnProperty.call(open, key)) {
        details.open = open[key];
      }
    });
  }

  /* Kept elements replace their fresh copies; those the server dropped go back in place. */
  function carryKept(oldPanel, newPanel, gone) {
    var kept = Array.prototype.slice.call(oldPanel.querySelectorAll("[data-af-keep][id]"));
    // Where each one sat (its earlier siblings' ids), read before any of them moves.
    var earlier = kept.map(function (element) {
      var ids = [];
      for (var before = element.previousElementSibling; before; before = before.previousElementSibling) {
        if (before.id) {
          ids.push(before.id);
        }
      }
      return ids;
    });
    kept.forEach(function (element, i) {
      var fresh = byId(newPanel, element.id);
      if (fresh) {
        fresh.replaceWith(element);
        return;
      }
      var parent = element.parentElement;
      var home = parent && parent.id ? (newPanel.id === parent.id ? newPanel : byId(newPanel, parent.id)) : null;
      if (!home) {
        return; // nowhere to put it: it goes with its panel
      }
      var anchor = null;
      earlier[i].some(function (id) {
        anchor = byId(home, id);
        return anchor !== null && anchor.parentElement === home;
      });
      if (anchor && anchor.parentElement === home) {
        anchor.after(element);
      } else {
        home.prepend(element);
      }
      gone.push(element);
    });
  }

  /* The element highest on screen that is still visible: the scroll anchor. */
  function anchorOf() {
    var best = null;
    panels(document).forEach(function (panel) {
      var box = panel.getBoundingClientRect();
      if (!best && box.bottom > 0) {
        best = {id: panel.id, top: box.top};
      }
    });
    return best;
  }

  function Live(options) {
    this.url = options.url || null;
    this.onGone = options.onGone || function () {};
    this.onSwapped = options.onSwapped || function () {};
    this.gap = FIRST_GAP;
    this.coalesced = 0;
    this.inflight = false;
    this.pending = false;
    this.timer = null;
    this.lastStart = -Infinity;
    this.lastEnd = -Infinity;
    this.lastRequest = -Infinity;
    this.urgent = false;
    this.timerDue = 0;
    this.pollTimer = null;
    this.fetches = 0;
    this.swaps = 0;
    this.served = {};
    var self = this;
    panels(document).forEach(function (panel) {
      self.served[panel.id] = panel.outerHTML;
    });
    this.poll();
  }

  /* While the page holds a data-af-poll element, refresh every that many ms. */
  Live.prototype.poll = function () {
    var marker = document.querySelector("[data-af-poll]");
    var every = marker ? Number(marker.getAttribute("data-af-poll")) : 0;
    if (this.pollTimer !== null || !(every > 0)) {
      return;
    }
    var self = this;
    this.pollTimer = window.setTimeout(function () {
      self.pollTimer = null;
      self.refresh();
    }, Math.max(every, FIRST_GAP));
  };

  /* Ask for a refresh: at once after a quiet spell, else coalesced into the next one.
   * An urgent one (a person is asked something, the run's status changed) waits at most
   * URGENT_GAP after the last fetch started, even while a flood has spread them out. */
  Live.prototype.refresh = function (urgent) {
    var at = now();
    if (at - this.lastRequest > QUIET) {
      this.gap = FIRST_GAP;
      this.coalesced = 0;
    } else {
      this.coalesced += 1;
      if (this.coalesced > FLOOD) {
        this.gap = Math.min(MAX_GAP, this.gap * 2);
        this.coalesced = 0;
      }
    }
    this.lastRequest = at;
    this.pending = true;
    this.urgent = this.urgent || Boolean(urgent);
    this.pump();
  };

  Live.prototype.pump = function () {
    if (this.inflight || !this.pending) {
      return;
    }
    var due = this.lastStart + (this.urgent ? URGENT_GAP : this.gap);
    var self = this;
    if (this.timer !== null) {
      if (due >= this.timerDue) {
        return; // the timer already set comes first
      }
      window.clearTimeout(this.timer);
      this.timer = null;
    }
    if (due > now()) {
      this.timerDue = due;
      this.timer = window.setTimeout(function () {
        self.timer = null;
        self.pump();
      }, due - now());
      return;
    }
    // A question in a modal dialog (confirm.js) answers for a form on the page: swapping that
    // form now would leave the answer nowhere. Refresh once the dialog closes.
    var dialog = document.querySelector("dialog[open]");
    if (dialog) {
      if (!dialog.dataset.afLiveWaits) {
        dialog.dataset.afLiveWaits = "1";
        dialog.addEventListener("close", function resume() {
          dialog.removeEventListener("close", resume);
          delete dialog.dataset.afLiveWaits;
          window.setTimeout(function () { self.pump(); }, 0);
        });
      }
      return;
    }
    this.urgent = false;
    this.pending = false;
    this.inflight = true;
    this.lastStart = now();
    this.fetches += 1;
    this.load().catch(function (error) {
      document.documentElement.dataset.afRefresh = "failed";
      window.console.warn("agentflow: a live refresh failed:", error);
    }).then(function () {
      self.inflight = false;
      self.lastEnd = now();
      self.pump();
      self.poll();
    });
  };

  Live.prototype.load = function () {
    var self = this;
    var url = this.url || window.location.href.split("#")[0];
    return window.fetch(url, {
      credentials: "same-origin",
      cache: "no-store",
      redirect: "follow",
      headers: {"X-Agentflow-Live": "1", "Accept": "text/html"}
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      var url = new URL(response.url || window.location.href);
      if (!response.ok || type.indexOf("text/html") !== 0 || url.pathname !== window.location.pathname) {
        // Logged out (sent to the login page), gone or failing: keep what is shown.
        document.documentElement.dataset.afRefresh = "failed";
        return;
      }
      return response.text().then(function (html) {
        self.apply(new window.DOMParser().parseFromString(html, "text/html"));
        document.documentElement.dataset.afRefresh = "fresh";
      });
    });
  };

  Live.prototype.apply = function (fresh) {
    var self = this;
    var anchor = anchorOf();
    var focused = document.activeElement;
    var selection = null;
    if (focused && typeof focused.selectionStart === "number") {
      selection = [focused.selectionStart, focused.selectionEnd];
    }
    var swapped = [];
    var gone = [];
    panels(document).forEach(function (panel) {
      var incoming = byId(fresh, panel.id);
      if (!incoming || !incoming.hasAttribute("data-af-live")) {
        return;
      }
      var html = incoming.outerHTML;
      if (self.served[panel.id] === html) {
        return;
      }
      self.served[panel.id] = html;
      var replacement = document.importNode(incoming, true);
      carryDetails(panel, replacement);
      carryFields(panel, replacement);
      carryKept(panel, replacement, gone);
      panel.replaceWith(replacement);
      swapped.push(replacement);
    });
    if (!swapped.length) {
      return;
    }
    this.swaps += 1;
    gone.forEach(function (element) {
      self.onGone(element, fresh);
    });
    if (focused && focused !== document.activeElement) {
      var target = document.contains(focused) ? focused : (focused.id && document.getElementById(focused.id));
      if (target && target.focus) {
        target.focus({preventScroll: true});
        if (selection && typeof target.setSelectionRange === "function") {
          try {
            target.setSelectionRange(selection[0], selection[1]);
          } catch (error) {
            // a field type without a selection (number): the focus is enough
          }
        }
      }
    }
    if (anchor) {
      var moved = document.getElementById(anchor.id);
      if (moved) {
        var delta = moved.getBoundingClientRect().top - anchor.top;
        if (Math.abs(delta) >= 1) {
          window.scrollBy(0, delta);
        }
      }
    }
    swapped.forEach(function (panel) {
      panel.dispatchEvent(new window.CustomEvent("agentflow:swapped", {bubbles: true}));
      self.onSwapped(panel);
    });
  };

  /* What the server says about a kept element it no longer renders, as text, or null. */
  function goneInfo(fresh, id) {
    var info = fresh.querySelector('[data-af-gone-info="' + String(id).replace(/[^A-Za-z0-9_-]/g, "") + '"]');
    return info ? {text: info.textContent.trim(), status: info.dataset.status || ""} : null;
  }

  /* Mark an approval that is no longer pending: who decided and how, its buttons off. */
  function approvalGone(element, fresh) {
    if (element.classList.contains("af-decided") && element.dataset.afGoneInfo) {
      return;
    }
    var info = goneInfo(fresh, element.id);
    var status = info && info.status ? info.status : "decided";
    element.classList.add("af-decided");
    element.querySelectorAll(".af-approval").forEach(function (panel) {
      panel.classList.add("af-decided");
    });
    element.querySelectorAll(".af-approval-status").forEach(function (badge) {
      badge.textContent = status;
      badge.className = "af-approval-status " + window.agentflow.statusClass(status);
    });
    element.querySelectorAll("form.af-decide button, form.af-decide input, form.af-decide textarea, form.af-decide select").forEach(function (control) {
      control.disabled = true;
    });
    var text = info ? info.text : "No longer pending: it was decided, or its run ended.";
    var output = element.querySelector(".af-decide-result");
    if (output) {
      output.textContent = text;
      output.dataset.state = "done";
    } else {
      var note = document.createElement("p");
      note.className = "af-note af-gone-note";
      note.textContent = text;
      element.appendChild(note);
    }
    element.dataset.afGoneInfo = info ? "1" : "";
  }

  window.agentflow = window.agentflow || {};
  window.agentflow.Live = Live;
  window.agentflow.approvalGone = approvalGone;
}());
