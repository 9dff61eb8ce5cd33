// The overview's chart: requests per second and spend per minute, from data-series.
(function () {
  var el = document.getElementById("chart");
  if (!el || typeof uPlot === "undefined") return;
  var data = JSON.parse(el.getAttribute("data-series") || "[[],[],[]]");
  if (!data[0].length) { el.textContent = "Collecting: the first points appear after a few seconds."; return; }
  new uPlot({
    width: Math.max(320, el.clientWidth - 8), height: 240,
    series: [{}, {label: "requests/s", stroke: "#0b5cad"},
             {label: "USD/min", stroke: "#a4161a", scale: "usd"}],
    axes: [{}, {label: "requests/s"}, {side: 1, scale: "usd", label: "USD/min"}]
  }, data, el);
})();
