// Training curves on uPlot (vendor/uPlot.iife.min.js, the global ``uPlot``). One LineChart per box; update()
// takes the job's whole history and redraws, so a growing history makes a growing curve.

const PALETTE = ["#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777",
  "#4b5563", "#65a30d"];

export function color(i) {
  return PALETTE[i % PALETTE.length];
}

function fmt(v) {
  if (v == null || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2).replace(/\.?0+e/, "e");
  return v.toPrecision(4).replace(/\.?0+$/, "");
}

// ``series``: [{label, color, dash?, get(row) -> number|null}]; ``log``: log-scale y (values <= 0 dropped).
export class LineChart {
  constructor(el, { log = false, yLabel = "" } = {}) {
    this.el = el;
    this.log = log;
    this.yLabel = yLabel;
    this.plot = null;
    this.key = "";
    this.epochs = 0;
    this.resize = new ResizeObserver(() => {
      if (this.plot) this.plot.setSize(this.size());
    });
    this.resize.observe(el);
  }

  size() {
    return { width: Math.max(this.el.clientWidth, 200), height: 230 };
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.key = "";
    this.el.replaceChildren();
  }

  empty(message) {
    this.destroy();
    const p = document.createElement("div");
    p.className = "empty";
    p.textContent = message;
    this.el.append(p);
    this.el.dataset.points = "0";
    this.el.dataset.series = "0";
  }

  // rows: the history (sorted by epoch); epochs: the planned number (the x axis spans it while a job runs).
  update(rows, series, epochs = 0, emptyMessage = "No epochs yet.") {
    if (!rows.length || !series.length) {
      this.empty(emptyMessage);
      return;
    }
    const xs = rows.map((r) => r.epoch);
    const ys = series.map((s) =>
      rows.map((r) => {
        const v = s.get(r);
        if (v == null || !Number.isFinite(v)) return null;
        if (this.log && v <= 0) return null;
        return v;
      }),
    );
    const key = JSON.stringify(series.map((s) => s.label));
    this.epochs = epochs;
    if (!this.plot || key !== this.key) {
      this.destroy();
      this.key = key;
      this.plot = new uPlot(this.options(series), [xs, ...ys], this.el);
    } else {
      this.plot.setData([xs, ...ys]);
    }
    this.el.dataset.points = String(xs.length);
    this.el.dataset.series = String(series.length);
  }

  options(series) {
    const chart = this;
    return {
      ...this.size(),
      cursor: { drag: { x: true, y: false }, points: { size: 7 } },
      legend: { live: true },
      scales: {
        x: {
          time: false,
          range: (u, min, max) => [Math.min(min, 1), Math.max(max, chart.epochs || max, min + 1)],
        },
        y: this.log ? { distr: 3 } : { auto: true },
      },
      axes: [
        { label: "epoch", stroke: "#6b7489", grid: { stroke: "#eef0f5" }, ticks: { stroke: "#e3e7ef" },
          values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? String(v) : "")) },
        { label: this.yLabel, stroke: "#6b7489", grid: { stroke: "#eef0f5" }, ticks: { stroke: "#e3e7ef" },
          size: 60, values: (u, splits) => splits.map((v) => (v == null ? "" : fmt(v))) },
      ],
      series: [
        { label: "epoch", value: (u, v) => (v == null ? "–" : String(v)) },
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          dash: s.dash,
          spanGaps: true,
          points: { size: 5, fill: s.color },
          value: (u, v) => fmt(v),
        })),
      ],
    };
  }

  pointCount() {
    return this.plot ? this.plot.data[0].length : 0;
  }
}
