// perfops dashboard: draws the server-built plotly figures that htmx swaps in, turns clicks on a
// chart into drill-downs, keeps the filter bar's query string clean, and switches light / dark.
(function () {
  "use strict";

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function themed(layout) {
    var copy = JSON.parse(JSON.stringify(layout || {}));
    var text = css("--text"), grid = css("--grid"), surface = css("--surface");
    copy.font = Object.assign({}, copy.font, { color: text, family: css("--font") });
    Object.keys(copy).forEach(function (key) {
      if (/^[xy]axis\d*$/.test(key)) {
        copy[key] = Object.assign({}, copy[key], { gridcolor: grid, zerolinecolor: grid, linecolor: grid });
      }
    });
    ["xaxis", "yaxis"].forEach(function (key) {
      if (!copy[key]) copy[key] = { gridcolor: grid, zerolinecolor: grid };
    });
    copy.hoverlabel = { bgcolor: surface, bordercolor: grid, font: { color: text } };
    copy.autosize = true;
    return copy;
  }

  function openDrill(url) {
    var dialog = document.getElementById("drill-dialog");
    var target = document.getElementById("drill");
    if (!dialog || !target) { window.location.assign(url); return; }
    target.innerHTML = '<div class="loading">Loading…</div>';
    if (!dialog.open) dialog.showModal();
    htmx.ajax("GET", url, { target: "#drill", swap: "innerHTML" });
  }

  function draw(el) {
    var source = document.getElementById(el.getAttribute("data-figure"));
    if (!source || !window.Plotly || el.hasAttribute("data-rendered") || el._perfopsDrawing) return;
    el._perfopsDrawing = true;
    var figure = JSON.parse(source.textContent);
    el._perfopsFigure = figure;
    var config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
    window.Plotly.newPlot(el, figure.data, themed(figure.layout), config).then(function () {
      el.setAttribute("data-rendered", "true");
    });
    el.on("plotly_relayout", function (event) { zoomTo(el, event); });
    el.on("plotly_click", function (event) {
      var point = event.points && event.points[0];
      if (!point) return;
      var meta = point.data && point.data.meta;
      if (el.hasAttribute("data-drill") && meta && meta.drill && typeof point.customdata === "string") {
        // A time bucket: the trace's drill link over [bucket start, + its width (at least a minute)).
        var start = Date.parse(point.customdata);
        var end = new Date(start + Math.max(meta.width_s, 60) * 1000).toISOString();
        openDrill(meta.drill + "&start=" + encodeURIComponent(new Date(start).toISOString()) + "&end=" + encodeURIComponent(end));
      } else if (el.hasAttribute("data-navigate") && typeof point.customdata === "string" && point.customdata.charAt(0) === "/") {
        window.location.assign(point.customdata);
      }
    });
  }

  // Zooming a time chart (drag across it) narrows the whole page to that range.
  function zoomTo(el, event) {
    var from = event["xaxis.range[0]"], to = event["xaxis.range[1]"];
    if (!from || !to || !el.hasAttribute("data-zoom")) return;
    var iso = function (value) { return new Date(String(value).replace(" ", "T") + "Z").toISOString(); };
    var params = new URLSearchParams(window.location.search);
    params.delete("range");
    params.set("start", iso(from));
    params.set("end", iso(to));
    window.location.assign(window.location.pathname + "?" + params.toString());
  }

  htmx.onLoad(function (root) {
    var scope = root.querySelectorAll ? root : document;
    if (root.matches && root.matches("[data-figure]")) draw(root);
    scope.querySelectorAll("[data-figure]").forEach(draw);
  });

  // Charts about to be replaced (a refresh, a filter change, a sort) let go of their data and listeners.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (!target || !target.querySelectorAll || !window.Plotly) return;
    target.querySelectorAll("[data-rendered]").forEach(function (el) { window.Plotly.purge(el); });
  });

  // A panel is busy until its content arrives (also when that happens before htmx reports the page loaded).
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.classList && target.classList.contains("panel")) target.removeAttribute("aria-busy");
  });

  // The filter bar: a custom range shows its inputs; only non-empty filters go in the URL.
  document.addEventListener("change", function (event) {
    var select = event.target;
    if (!select || select.id !== "f-range") return;
    var custom = select.value === "custom";
    var box = select.form.querySelector(".custom-range");
    box.hidden = !custom;
    box.querySelectorAll("input").forEach(function (input) { input.disabled = !custom; });
  }, true);

  document.addEventListener("change", function (event) {
    var select = event.target;
    if (!select || select.name !== "department" || !select.form || select.form.id !== "filters") return;
    var team = select.form.querySelector("select[name=team]");
    if (team) team.value = "";
  }, true);

  document.addEventListener("htmx:configRequest", function (event) {
    if (!event.detail.elt || event.detail.elt.id !== "filters") return;
    var params = event.detail.parameters;
    if (params.range === "custom" && !params.start) { event.preventDefault(); return; }
    if (params.range === "custom") delete params.range;
    ["range", "start", "end", "environment", "department", "team", "tier", "status", "version", "intent"].forEach(function (key) {
      if (params[key] === "" || params[key] === undefined) delete params[key];
    });
    if (params.range === "24h") delete params.range;
    if (params.environment === "production") delete params.environment;
  });

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target && target.hasAttribute && target.hasAttribute("data-close")) {
      var dialog = target.closest("dialog");
      if (dialog) dialog.close();
    }
    if (target && target.id === "theme-toggle") {
      var root = document.documentElement;
      var dark = root.getAttribute("data-theme") === "dark" ||
        (root.getAttribute("data-theme") === "auto" && window.matchMedia("(prefers-color-scheme: dark)").matches);
      var next = dark ? "light" : "dark";
      root.setAttribute("data-theme", next);
      try { window.localStorage.setItem("perfops-theme", next); } catch (e) { /* not saved */ }
      document.querySelectorAll("[data-rendered]").forEach(function (el) {
        window.Plotly.relayout(el, themed(el._perfopsFigure.layout));
      });
    }
  });
})();
