// Draws each <figure class="chart"> from the JSON in its <script> with
// uPlot. The page works without this file: every chart has a table twin.
"use strict";

function drawReplicas(fig) {
  const points = JSON.parse(fig.querySelector("script").textContent) || [];
  const min = Number(fig.dataset.min), max = Number(fig.dataset.max);
  const xs = points.map(p => Date.parse(p.time) / 1000);
  const ys = points.map(p => p.replicas);
  const opts = {
    width: Math.min(fig.clientWidth || 800, 1000), height: 220,
    scales: { y: { range: [0, Math.max(max, ...ys) + 1] } },
    series: [
      {},
      { label: "replicas", stroke: "#0969da", width: 2, paths: uPlot.paths.stepped({ align: 1 }), points: { show: true } },
      { label: "min", stroke: "#8c959f", dash: [4, 4], points: { show: false } },
      { label: "max", stroke: "#cf222e", dash: [4, 4], points: { show: false } },
    ],
  };
  const data = [xs, ys, xs.map(() => min), xs.map(() => max)];
  new uPlot(opts, data, fig);
  // Tests and screen readers can tell what was drawn.
  fig.dataset.points = String(xs.length);
}

function drawCharts(root) {
  if (typeof uPlot === "undefined") return;
  root.querySelectorAll('figure.chart[data-chart="replicas"]:not([data-points])').forEach(drawReplicas);
}

document.addEventListener("DOMContentLoaded", () => drawCharts(document));
document.addEventListener("htmx:afterSwap", e => drawCharts(e.target));
