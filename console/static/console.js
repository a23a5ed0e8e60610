// Draws each <figure class="chart"> from the JSON in its <script> with
// uPlot. The page works without this file: every chart has a table twin.
"use strict";

function width(fig) { return Math.min(fig.clientWidth || 800, 1000); }

// replicas: the replica count over time as steps, between min and max.
function drawReplicas(fig, points) {
  const min = Number(fig.dataset.min), max = Number(fig.dataset.max);
  const xs = points.map(p => Date.parse(p.time) / 1000);
  const ys = points.map(p => p.replicas);
  new uPlot({
    width: width(fig), height: 220,
    scales: { y: { range: [0, Math.max(max, ...ys) + 1] } },
    series: [
      {},
      { label: "replicas", stroke: "#0969da", width: 2, paths: uPlot.paths.stepped({ align: 1 }), points: { show: true } },
      { label: "min", stroke: "#8c959f", dash: [4, 4], points: { show: false } },
      { label: "max", stroke: "#cf222e", dash: [4, 4], points: { show: false } },
    ],
  }, [xs, ys, xs.map(() => min), xs.map(() => max)], fig);
  return xs.length;
}

// latency: request counts per latency bucket, as bars.
function drawLatency(fig, buckets) {
  const xs = buckets.map((_, i) => i);
  const labels = buckets.map(b => b.to_ms ? b.from_ms + "–" + b.to_ms : b.from_ms + "+");
  new uPlot({
    width: Math.min(width(fig), 480), height: 200,
    scales: { x: { time: false, range: [-0.5, buckets.length - 0.5] } },
    axes: [{ values: (u, ticks) => ticks.map(t => labels[t] ?? ""), splits: () => xs, label: "ms" }, {}],
    series: [{}, { label: "requests", fill: "#0969da55", stroke: "#0969da", paths: uPlot.paths.bars({ size: [0.8] }), points: { show: false } }],
  }, [xs, buckets.map(b => b.count)], fig);
  return xs.length;
}

// rate: requests per second over time.
function drawRate(fig, rates) {
  const xs = rates.map(r => Date.parse(r.time) / 1000);
  new uPlot({
    width: Math.min(width(fig), 480), height: 200,
    series: [{}, { label: "requests/s", stroke: "#1a7f37", width: 2, points: { show: true } }],
  }, [xs, rates.map(r => r.count)], fig);
  return xs.length;
}

// metric: one threshold's aggregates over time against the threshold.
function drawMetric(fig, points) {
  const threshold = Number(fig.dataset.threshold);
  const xs = points.map(p => Date.parse(p.time) / 1000);
  new uPlot({
    width: Math.min(width(fig), 480), height: 180,
    series: [{},
      { label: fig.dataset.label, stroke: "#0969da", width: 2, points: { show: true } },
      { label: "threshold", stroke: "#cf222e", dash: [4, 4], points: { show: false } }],
  }, [xs, points.map(p => p.value), xs.map(() => threshold)], fig);
  return xs.length;
}

const draw = { replicas: drawReplicas, latency: drawLatency, rate: drawRate, metric: drawMetric };

function drawCharts(root) {
  if (typeof uPlot === "undefined") return;
  root.querySelectorAll("figure.chart[data-chart]:not([data-points])").forEach(fig => {
    const data = JSON.parse(fig.querySelector("script").textContent) || [];
    // Tests and screen readers can tell what was drawn.
    fig.dataset.points = String(draw[fig.dataset.chart](fig, data));
  });
}

document.addEventListener("DOMContentLoaded", () => drawCharts(document));
document.addEventListener("htmx:afterSwap", e => drawCharts(e.target));
