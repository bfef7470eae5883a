/* Console behaviour on top of htmx (shipped by django-unfold: unfold/js/htmx/htmx.js).
   - 422 answers (a form with field errors) are swapped in like 200s, so errors show at the fields.
   - A lazy part whose request fails (HTTP error, network, timeout) shows an error state with a Retry
     button instead of spinning forever.
   - The drawer closes with its close button or Escape, and the `open` query parameter leaves the URL, so
     reload and back show what the operator saw. */
(function () {
  "use strict";

  function configure() {
    if (!window.htmx) return;
    htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "422", swap: true },
      { code: "[45]..", swap: false, error: true },
    ];
    htmx.config.historyCacheSize = 20;
  }

  function errorBox(message, retryable) {
    var box = document.createElement("div");
    box.className = "c-error";
    box.setAttribute("role", "alert");
    box.setAttribute("data-console-error", "");
    var text = document.createElement("span");
    text.className = "c-grow";
    text.textContent = message;
    box.appendChild(text);
    if (retryable) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "c-btn";
      button.textContent = "Retry";
      button.setAttribute("data-console-retry", "");
      box.appendChild(button);
    }
    return box;
  }

  function describe(evt) {
    var xhr = evt.detail && evt.detail.xhr;
    if (evt.type === "htmx:timeout") return "The request timed out.";
    if (!xhr || !xhr.status) return "The server could not be reached.";
    if (xhr.status === 403) return "Not allowed: your role cannot do this.";
    var header = xhr.getResponseHeader && xhr.getResponseHeader("X-Console-Error");
    return header || "The server answered " + xhr.status + ".";
  }

  function onError(evt) {
    var elt = evt.detail && evt.detail.elt;
    if (!elt) return;
    var lazy = elt.closest("[data-console-lazy]");
    var message = describe(evt);
    if (lazy) {
      // Retry what failed (a tab switch inside the part asks another URL than the part's first load).
      var path = evt.detail.pathInfo && evt.detail.pathInfo.requestPath;
      if (path) lazy.dataset.retryUrl = path;
      lazy.replaceChildren(errorBox(message, true));
      return;
    }
    // An action or a form: tell the operator next to it, keep what is on screen.
    var holder = elt.closest("[data-console-action-errors]") || document.getElementById("console-toast");
    if (holder) holder.replaceChildren(errorBox(message, false));
  }

  function closeDrawer() {
    var drawer = document.getElementById("console-drawer");
    if (!drawer || !drawer.childElementCount) return;
    drawer.replaceChildren();
    var url = new URL(window.location.href);
    if (url.searchParams.has("open")) {
      url.searchParams.delete("open");
      history.pushState({}, "", url.pathname + (url.search || ""));
    }
  }

  // Charts (Chart.js shipped by Unfold): a canvas carries its whole config in data-console-chart; drawn when
  // the page loads, when htmx swaps a part in, and when back restores a page from htmx's history cache.
  function drawCharts(root) {
    if (!window.Chart) return;
    (root || document).querySelectorAll("canvas[data-console-chart]").forEach(function (canvas) {
      if (canvas.dataset.drawn) return;
      var existing = Chart.getChart(canvas);
      if (existing) existing.destroy();
      canvas.dataset.drawn = "1";
      new Chart(canvas, JSON.parse(canvas.getAttribute("data-console-chart")));
    });
  }

  document.addEventListener("DOMContentLoaded", function () { drawCharts(document); });
  document.addEventListener("htmx:afterSettle", function (evt) { drawCharts(evt.detail.elt); });
  document.addEventListener("htmx:historyRestore", function () {
    document.querySelectorAll("canvas[data-console-chart]").forEach(function (c) { delete c.dataset.drawn; });
    drawCharts(document);
  });

  // Limits matrix: a cell whose value differs from what is stored is marked, and the form counts them.
  document.addEventListener("input", function (evt) {
    var cell = evt.target.closest && evt.target.closest("[data-console-matrix] input.c-cell");
    if (!cell) return;
    cell.closest("td").classList.toggle("c-changed", cell.value.trim() !== (cell.dataset.original || ""));
    var form = cell.closest("form");
    var count = form.querySelectorAll("td.c-changed").length;
    var label = form.querySelector("[data-changed-count]");
    if (label) label.textContent = count + " changed";
  });

  document.addEventListener("DOMContentLoaded", configure);
  document.addEventListener("htmx:responseError", onError);
  document.addEventListener("htmx:sendError", onError);
  document.addEventListener("htmx:timeout", onError);

  document.addEventListener("click", function (evt) {
    var retry = evt.target.closest("[data-console-retry]");
    if (retry) {
      var lazy = retry.closest("[data-console-lazy]");
      if (lazy) {
        lazy.innerHTML = '<div class="c-loading">Loading…</div>';
        if (lazy.dataset.retryUrl) htmx.ajax("GET", lazy.dataset.retryUrl, { source: lazy, target: lazy, swap: "innerHTML" });
        else htmx.trigger(lazy, "console:retry");
      }
      return;
    }
    if (evt.target.closest("[data-console-drawer-close]")) {
      evt.preventDefault();
      closeDrawer();
      return;
    }
  }, true);

  // A click anywhere on a clickable row opens its drawer (through the row's own link, so the URL keeps
  // `open=`), except on the row's links, buttons and action menu.
  document.addEventListener("click", function (evt) {
    var row = evt.target.closest("tr[data-console-row]");
    if (!row || evt.target.closest("a, button, summary, details, input, select, label")) return;
    var link = row.querySelector("a[data-console-open]");
    if (link) link.click();
  });

  // The gallery's sample rows and cards are not saved anywhere: their links (and htmx, off there through
  // hx-disable) would lead to pages of objects that do not exist, so a click inside them does nothing.
  document.addEventListener("click", function (evt) {
    if (evt.target.closest("[data-gallery-samples] a")) evt.preventDefault();
  }, true);

  document.addEventListener("keydown", function (evt) {
    if (evt.key === "Escape") closeDrawer();
  });

  // Close any open row menu once one of its actions ran.
  document.addEventListener("htmx:afterRequest", function (evt) {
    var menu = evt.detail.elt && evt.detail.elt.closest && evt.detail.elt.closest("details.c-menu");
    if (menu) menu.removeAttribute("open");
  });
})();
