// Alpha's dashboard: keeps the page's #live part current. The server pushes
// "change" (a status or an alert changed) and "tick" (logs, charts) events;
// on either the page fetches its live part again (?fragment=1) and swaps it
// in. Charts are drawn from the JSON the server put beside their canvases.
(function () {
  "use strict";
  var charts = [];

  function draw() {
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    var el = document.getElementById("series");
    if (!el || typeof Chart === "undefined") return;
    var data = JSON.parse(el.textContent || "[]");
    data.forEach(function (s, i) {
      var canvas = document.getElementById("chart-" + i);
      if (!canvas) return;
      var points = s.x.map(function (x, j) { return { x: x, y: s.y[j] }; });
      charts.push(new Chart(canvas, {
        type: "line",
        data: { datasets: [{ label: s.name, data: points, pointRadius: points.length < 30 ? 2 : 0, borderWidth: 1.5, borderColor: "#2563eb" }] },
        options: {
          animation: false, parsing: false, maintainAspectRatio: false,
          scales: { x: { type: "linear", min: -60, max: 0, title: { display: true, text: "minutes ago" } },
                    y: { title: { display: !!s.unit, text: s.unit || "" } } },
          plugins: { legend: { display: false }, title: { display: true, text: s.name } }
        }
      }));
    });
  }

  function main() {
    var form = document.getElementById("filter");
    if (form) {
      Array.prototype.forEach.call(form.querySelectorAll("select"), function (sel) {
        sel.addEventListener("change", function () { form.submit(); });
      });
    }
    draw();
    var live = document.getElementById("live");
    var state = document.getElementById("live-state");
    if (!live || !window.EventSource) return;
    var pending = null;
    function refresh() {
      if (pending) return;
      pending = setTimeout(function () {
        var u = new URL(window.location.href);
        u.searchParams.set("fragment", "1");
        fetch(u, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
          if (r.status === 401) { window.location.reload(); return null; }
          return r.ok ? r.text() : null;
        }).then(function (html) {
          pending = null;
          if (html === null) return;
          live.innerHTML = html;
          draw();
          document.body.setAttribute("data-updated", String(Date.now()));
        }, function () { pending = null; });
      }, 200);
    }
    var es = new EventSource("/events");
    es.addEventListener("open", function () { if (state) state.textContent = "live"; });
    es.addEventListener("error", function () { if (state) state.textContent = "reconnecting…"; });
    es.addEventListener("change", refresh);
    es.addEventListener("tick", refresh);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
  else main();
})();
