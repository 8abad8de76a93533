// The console's progressive enhancement. Every page works without it; with it, secrets and
// snippets copy with one click, destructive forms ask first, and the onboarding page turns
// green the moment the store's first event arrives (server-sent events).
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  document.addEventListener("click", function (e) {
    var button = e.target.closest("button[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent).then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 2000);
    });
  });

  document.addEventListener("submit", function (e) {
    var message = e.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) e.preventDefault();
  });

  // A link to Stripe's pages, made by the server on request, is followed at once.
  var follow = document.querySelector("a[data-follow]");
  if (follow) window.location.assign(follow.href);

  // A page about work in progress (an erasure) reloads itself until it is done, for a while:
  // `auto=N` counts the reloads and tells the server they are not the member's doing, so a
  // tab left open does not keep the session alive.
  var MAX_RELOADS = 100;
  document.querySelectorAll("[data-reload-every]").forEach(function (el) {
    var seconds = parseInt(el.getAttribute("data-reload-every"), 10);
    var url = new URL(window.location.href);
    var done = parseInt(url.searchParams.get("auto") || "0", 10) || 0;
    if (!(seconds > 0)) return;
    if (done >= MAX_RELOADS) {
      el.textContent += " (Stopped refreshing: reload the page to see the latest.)";
      url.searchParams.delete("auto");
      window.history.replaceState(null, "", url.toString());
      return;
    }
    url.searchParams.set("auto", String(done + 1));
    setTimeout(function () { window.location.replace(url.toString()); }, seconds * 1000);
  });

  document.querySelectorAll("[data-watch]").forEach(function (status) {
    if (!window.EventSource) return;
    var source = new EventSource(status.getAttribute("data-watch"));
    source.addEventListener("received", function (e) {
      source.close();
      status.setAttribute("data-state", "received");
      status.classList.remove("waiting");
      status.classList.add("ok");
      status.textContent = "Your first event has arrived (" + e.data + " so far). Nudge is receiving your shop's events.";
    });
    source.addEventListener("signed_out", function () {
      source.close();
      window.location.assign("/console/login");
    });
  });
})();
