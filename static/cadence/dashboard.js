// Draws each <canvas data-chart="ID"> from the JSON in <script id="ID"> (labels, runs, failed, tokens).
(function () {
  "use strict";
  function draw(canvas) {
    var source = document.getElementById(canvas.dataset.chart);
    if (!source || typeof Chart === "undefined") return;
    var data = JSON.parse(source.textContent);
    var style = getComputedStyle(document.documentElement);
    var primary = style.getPropertyValue("--primary").trim() || "#4338ca";
    var bad = style.getPropertyValue("--cadence-bad").trim() || "#b91c1c";
    var quiet = style.getPropertyValue("--body-quiet-color").trim() || "#666";
    new Chart(canvas, {
      data: {
        labels: data.labels.map(function (d) { return d.slice(5); }),
        datasets: [
          { type: "bar", label: "Runs", data: data.runs, backgroundColor: primary, yAxisID: "runs", stack: "r" },
          { type: "bar", label: "Failed", data: data.failed, backgroundColor: bad, yAxisID: "runs", stack: "f" },
          { type: "line", label: "Tokens", data: data.tokens, borderColor: quiet, backgroundColor: quiet, yAxisID: "tokens", tension: 0.3 }
        ]
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          runs: { position: "left", beginAtZero: true, ticks: { precision: 0 } },
          tokens: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false } }
        }
      }
    });
    canvas.dataset.drawn = "1";
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("canvas[data-chart]").forEach(draw);
  });
})();
