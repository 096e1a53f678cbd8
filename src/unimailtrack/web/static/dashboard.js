// The unimailtrack dashboard's only script: live badges from /api/changes, "Load more" in
// place, and filters that apply when chosen. Every page works without it.
(function () {
  "use strict";

  // The same tables as web/_dashboard.py: what a badge says, and its colour.
  var LABELS = { accepted: "sent", processed: "sent", deferred: "delayed", complained: "spam reported" };
  var TONES = {
    delivered: "green", opened: "green", clicked: "green", deferred: "amber",
    bounced: "red", dropped: "red", rejected: "red", failed: "red", complained: "red"
  };
  var root = document.body.getAttribute("data-root") || "";

  function paint(badge, status, reason) {
    badge.className = "badge badge-" + (TONES[status] || "grey");
    badge.setAttribute("data-status", status);
    badge.textContent = LABELS[status] || status;
    if (reason) {
      badge.title = reason;
      var spoken = document.createElement("span");
      spoken.className = "sr-only";
      spoken.textContent = ": " + reason;
      badge.appendChild(spoken);
    } else {
      badge.removeAttribute("title");
    }
  }

  function live() {
    var state = document.getElementById("live-state");
    if (!window.EventSource || !document.querySelector("[data-badge-for]")) {
      if (state) { state.hidden = true; }
      return;
    }
    // The page's own part of the stream (one send, one bulk send), or every change.
    var only = document.body.getAttribute("data-changes");
    var source = new EventSource(root + "/api/changes" + (only ? "?" + only : ""));
    source.addEventListener("open", function () {
      document.body.setAttribute("data-live", "on");
    });
    source.addEventListener("error", function () {
      document.body.setAttribute("data-live", "off");
    });
    source.addEventListener("state", function (message) {
      var change = JSON.parse(message.data);
      var selector = '[data-badge-for="' + CSS.escape(change.tracking_id) + '"]';
      document.querySelectorAll(selector).forEach(function (badge) {
        paint(badge, change.status, change.reason);
      });
      var reason = document.getElementById("badge-reason");
      if (reason && document.querySelector("h1 " + selector)) {
        reason.textContent = change.reason || "";
      }
    });
  }

  function loadMore(link) {
    var url = new URL(link.href);
    url.searchParams.set("part", "rows");
    link.setAttribute("aria-busy", "true");
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (answer) {
        if (!answer.ok) { throw new Error(answer.status); }
        return answer.text();
      })
      .then(function (html) {
        // Our own server-rendered, escaped rows; DOMParser runs no script.
        var part = new DOMParser().parseFromString(html, "text/html");
        var target = document.getElementById(link.getAttribute("data-target"));
        part.querySelectorAll("tbody > tr").forEach(function (row) {
          target.appendChild(document.importNode(row, true));
        });
        var shown = document.querySelector('[data-shown-for="' + target.id + '"]');
        if (shown) { shown.textContent = String(target.rows.length); }
        var next = part.querySelector("a[data-load-more]");
        if (next) {
          link.setAttribute("href", next.getAttribute("href"));
          link.removeAttribute("aria-busy");
        } else {
          link.remove();
        }
      })
      .catch(function () { window.location.assign(link.href); });
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-load-more]");
    if (link) {
      event.preventDefault();
      loadMore(link);
    }
  });
  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-autosubmit]")) {
      event.target.form.submit();
    }
  });
  live();
})();
