// A line chart in plain SVG (no library): robust accuracy vs ε, one line per model, the 95 %
// interval as a vertical whisker at each point, each point's numbers in its tooltip (<title>).
import { s } from "./dom.js";

const COLORS = ["#0b4f9c", "#b3261e", "#1b5e20", "#6a1b9a", "#8a5a00", "#00695c"];
const DASHES = [null, "7 4", "2 3", "10 3 2 3", "4 4", "1 2"];
const W = 520, H = 300, LEFT = 52, RIGHT = 16, TOP = 30, BOTTOM = 56;

/** series: [{name, points: [{x, y, lo, hi, tip}]}]; y in [0, 1]. */
export function lineChart({ title, xLabel, yLabel, series }) {
  const xs = series.flatMap((line) => line.points.map((p) => p.x));
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  const legendRows = Math.ceil(series.length / 2);
  const height = H + 18 * legendRows;
  const px = (x) => LEFT + ((x - x0) / (x1 - x0)) * (W - LEFT - RIGHT);
  const py = (y) => TOP + (1 - y) * (H - TOP - BOTTOM);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": title },
    s("title", {}, title),
    s("text", { x: LEFT, y: 18, "font-weight": "600" }, title));
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(s("line", { class: "grid", x1: LEFT, x2: W - RIGHT, y1: py(tick), y2: py(tick) }),
      s("text", { x: LEFT - 6, y: py(tick) + 4, "text-anchor": "end" }, `${tick * 100}%`));
  }
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    svg.append(s("line", { class: "axis", x1: px(x), x2: px(x), y1: py(0), y2: py(0) + 5 }),
      s("text", { x: px(x), y: py(0) + 18, "text-anchor": "middle" }, String(x)));
  }
  svg.append(
    s("line", { class: "axis", x1: LEFT, x2: W - RIGHT, y1: py(0), y2: py(0) }),
    s("line", { class: "axis", x1: LEFT, x2: LEFT, y1: py(1), y2: py(0) }),
    s("text", { x: (LEFT + W - RIGHT) / 2, y: py(0) + 36, "text-anchor": "middle" }, xLabel),
    s("text", { x: 14, y: (py(0) + py(1)) / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${(py(0) + py(1)) / 2})` }, yLabel));
  series.forEach((line, i) => {
    const color = COLORS[i % COLORS.length];
    const points = [...line.points].sort((a, b) => a.x - b.x);
    const group = s("g", { class: "series", "data-series": line.name });
    group.append(s("polyline", {
      points: points.map((p) => `${px(p.x)},${py(p.y)}`).join(" "),
      fill: "none", stroke: color, "stroke-width": 2.5, "stroke-dasharray": DASHES[i % DASHES.length],
    }));
    for (const p of points) {
      if (p.lo != null && p.hi != null) {
        group.append(s("line", { x1: px(p.x), x2: px(p.x), y1: py(p.lo), y2: py(p.hi), stroke: color, "stroke-width": 1.2, opacity: 0.7 }));
      }
      group.append(s("circle", { cx: px(p.x), cy: py(p.y), r: 4.5, fill: color, class: "point" }, s("title", {}, p.tip)));
    }
    const lx = LEFT + (i % 2) * ((W - LEFT) / 2);
    const ly = H + 18 * Math.floor(i / 2) - 8;
    group.append(
      s("line", { x1: lx, x2: lx + 28, y1: ly - 4, y2: ly - 4, stroke: color, "stroke-width": 2.5, "stroke-dasharray": DASHES[i % DASHES.length] }),
      s("text", { x: lx + 34, y: ly }, line.name));
    svg.append(group);
  });
  return svg;
}
