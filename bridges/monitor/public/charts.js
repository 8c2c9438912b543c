// Charts over time from /v1/stats (10 s buckets), drawn with uPlot (served
// by the monitor from the uplot package): throughput, latency percentiles,
// failures, queue depth and dead letters, for one capability or all.

import { $, getJson, showError, syncOptions } from "./util.js";

const REFRESH_MS = 10_000;

/** Each chart: its series (a field of a stats point) and the summary under its title. */
const CHARTS = [
  {
    id: "chart-throughput",
    bars: true,
    series: [{ key: "completed", label: "completed", color: "--c-ok" }],
    total: (d) => `${sum(d.completed)} completed`,
  },
  {
    id: "chart-latency",
    points: true,
    /** Axis labels in ms, or s from a second. */
    values: (_u, splits) => splits.map((v) => (v >= 1000 ? `${+(v / 1000).toFixed(1)} s` : `${v} ms`)),
    series: [
      { key: "p50", label: "p50 ms", color: "--c-1" },
      { key: "p95", label: "p95 ms", color: "--c-2" },
      { key: "p99", label: "p99 ms", color: "--c-bad" },
    ],
    total: (d) => {
      const p95 = d.p95.filter((x) => x !== null);
      return p95.length ? `p95 up to ${Math.round(Math.max(...p95))} ms` : "no task ended";
    },
  },
  {
    id: "chart-failures",
    bars: true,
    series: [
      { key: "failed", label: "failed or rejected", color: "--c-bad", align: -1 },
      { key: "canceled", label: "canceled", color: "--c-warn", align: 1 },
    ],
    total: (d) => `${sum(d.failed)} failed, ${sum(d.canceled)} canceled`,
  },
  {
    id: "chart-queue",
    series: [
      { key: "queued", label: "queued", color: "--c-1" },
      { key: "running", label: "running", color: "--c-ok" },
    ],
    total: (d) => `latest ${latest(d.queued)} queued, ${latest(d.running)} running`,
  },
  {
    id: "chart-dead-letters",
    series: [{ key: "deadLetters", label: "dead letters", color: "--c-bad" }],
    total: (d) => `latest ${latest(d.deadLetters)} stored`,
  },
];

const COUNTS = ["completed", "failed", "canceled", "queued", "running", "deadLetters"];
const LATENCIES = ["p50", "p95", "p99"];
const GAUGES = ["queued", "running", "deadLetters"];
const sum = (xs) => xs.reduce((a, b) => a + (b ?? 0), 0);
/** The last sampled value of a gauge. */
const latest = (xs) => xs.findLast((x) => x !== null) ?? 0;

let stats;
let uPlot;
const plots = new Map();

/** The capabilities the chart selector offers. */
export function offer(capabilities) {
  syncOptions($("chart-capability"), capabilities);
}

/**
 * Columns for the chosen capability, or all of them: counts summed per
 * bucket; latency, the slowest capability's per bucket.
 */
function columns() {
  const cap = $("chart-capability").value;
  const chosen = (stats?.capabilities ?? []).filter((c) => !cap || c.capability === cap);
  const buckets = new Map();
  for (const c of chosen) {
    for (const p of c.points) {
      const t = Date.parse(p.t) / 1000;
      let b = buckets.get(t);
      if (!b) buckets.set(t, (b = { ...Object.fromEntries(COUNTS.map((k) => [k, 0])), ...Object.fromEntries(LATENCIES.map((k) => [k, null])) }));
      for (const k of COUNTS) b[k] += p[k] ?? 0;
      for (const k of LATENCIES) if (p[k] !== null && p[k] !== undefined) b[k] = Math.max(b[k] ?? 0, p[k]);
    }
  }
  const ts = [...buckets.keys()].sort((a, b) => a - b);
  const out = { t: ts };
  for (const k of [...COUNTS, ...LATENCIES]) out[k] = ts.map((t) => buckets.get(t)[k]);
  // Gauges are sampled in the middle of each bucket: the bucket being filled has none before then.
  const last = ts.length - 1;
  if (last >= 0 && (ts[last] * 1000 + stats.bucketMs / 2) > Date.parse(stats.now)) for (const k of GAUGES) out[k][last] = null;
  return out;
}

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";

function options(def, width) {
  const axis = { stroke: css("--muted"), grid: { stroke: css("--grid"), width: 1 }, ticks: { stroke: css("--grid"), width: 1 } };
  return {
    width,
    height: 170,
    legend: { show: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max ?? 1) * 1.1] } },
    axes: [axis, { ...axis, size: 60, ...(def.values && { values: def.values }) }],
    series: [
      { label: "time" },
      ...def.series.map((s) => ({
        label: s.label,
        stroke: css(s.color),
        width: 2,
        ...(def.bars && uPlot.paths?.bars && { paths: uPlot.paths.bars({ size: [def.series.length > 1 ? 0.45 : 0.7, 24, 2], ...(s.align && { align: s.align }) }), fill: css(s.color) }),
        points: def.points ? { show: true, size: 5, fill: css(s.color) } : { show: false },
        spanGaps: false,
      })),
    ],
  };
}

/** Draws (or updates) every chart, when the charts are on screen. */
function draw() {
  if (!uPlot || !stats || $("view-charts").hidden) return;
  const data = columns();
  for (const def of CHARTS) {
    const fig = $(def.id);
    fig.querySelector(".chart-total").textContent = `· ${def.total(data)}`;
    fig.dataset.points = String(data.t.length);
    const cols = [data.t, ...def.series.map((s) => data[s.key])];
    const box = fig.querySelector(".plot");
    const width = Math.max(200, box.clientWidth);
    let plot = plots.get(def.id);
    if (!plot) {
      plot = new uPlot(options(def, width), cols, box);
      plots.set(def.id, plot);
    } else {
      plot.setData(cols);
      if (Math.abs(plot.width - width) > 2) plot.setSize({ width, height: 170 });
    }
  }
}

async function load() {
  stats = await getJson(`stats?minutes=${$("chart-window").value}`);
  $("charts-updated").textContent = `updated ${new Date(stats.now).toLocaleTimeString()}, ${stats.bucketMs / 1000} s buckets`;
  draw();
}

/** The charts tab is shown: draw at its size now. */
export function shown() {
  draw();
}

export function start() {
  import("./vendor/uPlot.esm.js")
    .then((m) => {
      uPlot = m.default;
      draw();
    })
    .catch((err) => showError(new Error(`charts: ${err.message}`)));
  load().catch(showError);
  setInterval(() => load().catch(showError), REFRESH_MS);
  $("chart-capability").addEventListener("change", draw);
  $("chart-window").addEventListener("change", () => load().catch(showError));
  // Wider or narrower: the charts follow; light or dark: drawn again in the theme's colours.
  new ResizeObserver(() => draw()).observe($("charts-grid"));
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    for (const plot of plots.values()) plot.destroy();
    plots.clear();
    draw();
  });
}
