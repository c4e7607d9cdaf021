// convstore serve: live updates by server-sent events, and a confirmation before a delete.
// Served from the server itself (the Content-Security-Policy allows no inline script). It inserts only
// HTML the server rendered (and escaped); it never builds markup from stored content.
(function () {
  "use strict";
  var body = document.body;

  function status(text) {
    var el = document.getElementById("live-status");
    if (el) el.textContent = text;
  }

  function fetchText(url) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.text();
    });
  }

  function updateBranch(before, now) {
    var list = document.getElementById("steps");
    if (!list || list.dataset.live !== "1") return;
    var branch = list.dataset.branch;
    if (before[branch] === now[branch]) return;
    var url = list.dataset.afterUrl + "&node=" + encodeURIComponent(list.dataset.last || "");
    fetchText(url).then(function (html) {
      list.insertAdjacentHTML("beforeend", html);
      var items = list.querySelectorAll(":scope > li.step");
      if (items.length) list.dataset.last = items[items.length - 1].dataset.node;
      status("updated " + new Date().toLocaleTimeString());
    }, function () { status("the branch changed: reload the page"); });
  }

  function updateTree() {
    var live = document.getElementById("live");
    if (!live) return;
    fetchText(live.dataset.url).then(function (html) {
      live.innerHTML = html;
      status("updated " + new Date().toLocaleTimeString());
    }, function () { status("could not update: reload the page"); });
  }

  var events = body.dataset.events;
  if (events && window.EventSource) {
    var heads = null;
    var source = new EventSource(events);
    source.addEventListener("open", function () { status("live"); });
    source.addEventListener("heads", function (event) {
      var now = JSON.parse(event.data);
      if (heads !== null) {
        if (body.dataset.mode === "branch") updateBranch(heads, now);
        else updateTree();
      }
      heads = now;
    });
    source.addEventListener("gone", function () {
      source.close();
      status("this conversation was deleted");
    });
    source.addEventListener("error", function () { status("reconnecting…"); });
  }

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
})();
