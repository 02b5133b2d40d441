// comfywatch status page: refreshes <main> in place every 15 s while the page is visible.
// The page works without this script (<noscript> refreshes it). It asks only the page's own URL, same origin
// only, and never lets an error reach the console: a failed refresh marks the page stale instead.
(function () {
  "use strict";

  var PERIOD_MS = 15000;
  var TIMEOUT_MS = 10000;
  var timer = null;
  var inFlight = false;
  var lastAttempt = 0;
  var staleSince = null;
  var lastApplied = Date.now();

  if (!window.fetch || !window.DOMParser || !document.querySelector) {
    return;
  }

  function live() {
    return document.getElementById("live");
  }

  function clock(date) {
    return date.toISOString().slice(11, 19) + " UTC";
  }

  function markStale() {
    var element = live();
    if (staleSince === null) {
      staleSince = new Date();
    }
    if (element) {
      element.className = "live stale";
      element.textContent = "Stale since " + clock(staleSince) + ": the last update failed; retrying every " +
        PERIOD_MS / 1000 + " s.";
    }
  }

  function markFresh() {
    var element = live();
    staleSince = null;
    if (element && element.textContent !== "") {
      element.className = "live";
      element.textContent = "";
    }
  }

  // Moves the children of `from` into `to`, replacing what `to` held, in one step (no empty frame between).
  function replaceContents(to, from) {
    var fragment = document.createDocumentFragment();
    while (from.firstChild) {
      fragment.appendChild(document.adoptNode(from.firstChild));
    }
    while (to.firstChild) {
      to.removeChild(to.firstChild);
    }
    to.appendChild(fragment);
  }

  // The reader is using what would be replaced: a link in <main> has the keyboard focus (not a mouse click's,
  // which stays after a click that opened a tab), or text in it is selected. Replacing it would throw either
  // away, so the refresh waits, for MAX_PAUSES periods at most and saying so: figures are never old unawares.
  var MAX_PAUSES = 4;
  var pauses = 0;

  function keyboardFocus(element) {
    try {
      return element.matches(":focus-visible");
    } catch (unsupported) {
      return false;
    }
  }

  function busy(main) {
    var focused = document.activeElement;
    if (focused && focused !== document.body && main.contains(focused) && keyboardFocus(focused)) {
      return true;
    }
    var selection = window.getSelection ? window.getSelection() : null;
    return !!(selection && !selection.isCollapsed && selection.containsNode &&
              selection.containsNode(main, true));
  }

  function markPaused() {
    var element = live();
    if (element) {
      element.className = "live paused";
      element.textContent = "Refresh paused while you select text or use the keyboard on the page; figures " +
        "as of " + clock(new Date(lastApplied)) + ".";
    }
  }

  // Wide tables scroll sideways in their own box (phones): each box keeps its position, matched by order.
  function sideways(main) {
    var boxes = main.querySelectorAll(".table-wrap");
    var positions = [];
    for (var i = 0; i < boxes.length; i++) {
      positions.push(boxes[i].scrollLeft);
    }
    return positions;
  }

  function restoreSideways(main, positions) {
    var boxes = main.querySelectorAll(".table-wrap");
    for (var i = 0; i < boxes.length && i < positions.length; i++) {
      boxes[i].scrollLeft = positions[i];
    }
  }

  function apply(text) {
    var fresh = new DOMParser().parseFromString(text, "text/html");
    var freshMain = fresh.querySelector("main");
    var main = document.querySelector("main");
    if (!freshMain || !main) {
      throw new Error("no <main> in the page");
    }
    if (pauses < MAX_PAUSES && busy(main)) {
      pauses += 1;
      markPaused();
      return false;
    }
    pauses = 0;
    var x = window.scrollX;
    var y = window.scrollY;
    var positions = sideways(main);
    replaceContents(main, freshMain);
    restoreSideways(main, positions);
    var freshFooter = fresh.querySelector("footer");
    var footer = document.querySelector("footer");
    if (freshFooter && footer) {
      replaceContents(footer, freshFooter);
    }
    if (fresh.title) {
      document.title = fresh.title;
    }
    window.scrollTo(x, y);
    lastApplied = Date.now();
    return true;
  }

  function refresh() {
    if (inFlight || document.visibilityState !== "visible") {
      return;
    }
    inFlight = true;
    lastAttempt = Date.now();
    var controller = window.AbortController ? new AbortController() : null;
    var abort = controller ? window.setTimeout(function () { controller.abort(); }, TIMEOUT_MS) : null;
    var options = { cache: "no-store", credentials: "same-origin", mode: "same-origin" };
    if (controller) {
      options.signal = controller.signal;
    }
    var request;
    try {
      request = window.fetch(window.location.href, options);
    } catch (error) {
      request = Promise.reject(error);
    }
    request
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (text) {
        if (apply(text)) {
          markFresh();
        }
      })
      .catch(function () {
        try {
          markStale();
        } catch (ignored) {
          // Nothing left to tell the reader with; stay quiet.
        }
      })
      .then(function () {
        if (abort !== null) {
          window.clearTimeout(abort);
        }
        inFlight = false;
        schedule();
      });
  }

  function schedule() {
    if (timer !== null) {
      window.clearTimeout(timer);
      timer = null;
    }
    if (document.visibilityState === "visible") {
      var wait = Math.max(0, PERIOD_MS - (Date.now() - lastAttempt));
      timer = window.setTimeout(refresh, wait);
    }
  }

  // Hidden: no timer at all. Shown again: refresh at once if the last attempt is a period old.
  document.addEventListener("visibilitychange", schedule);
  lastAttempt = Date.now();
  schedule();
})();
