// The Backprop dashboard: sign in with an API key, watch jobs train, inspect models, try predictions, follow
// hyperparameter sweeps.
import * as api from "./api.js";
import { LineChart, color } from "./charts.js";
import { readEventStream, StreamError } from "./sse.js";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 2000;
const RESERVED = new Set(["epoch", "loss", "val_loss", "learning_rate", "grad_norms", "weight_changes", "activations",
  "seconds"]);

const state = {
  jobs: [],
  models: new Map(),
  datasets: new Map(),
  sweeps: [],
  selected: null, // {kind: "job" | "model" | "sweep", id}
  listTimer: null,
  watcher: null,
  job: null, // the job in view, its history kept sorted by epoch
  sweep: null, // the sweep in view, as last read
};

// Exposed for the browser tests and for poking around in the console.
window.__dashboard = { state, charts: {}, ready: false };

// ---------------------------------------------------------------- helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c != null) el.append(c instanceof Node ? c : String(c));
  return el;
}

const short = (id) => (id ? id.slice(0, 8) : "–");

const VIEWS = ["placeholder", "job-view", "model-view", "dataset-view", "sweep-view"];

// One card of the detail pane at a time.
function showView(id) {
  for (const v of VIEWS) $(v).hidden = v !== id;
}

function num(v, digits = 4) {
  if (v == null || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2).replace(/\.?0+e/, "e");
  return Number(v.toPrecision(digits)).toString();
}

function duration(s) {
  if (s == null || !Number.isFinite(s)) return "–";
  if (s < 1) return "< 1 s";
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function perEpochText(s) {
  if (s < 1e-3) return `${num(s * 1e6, 3)} µs`;
  if (s < 1) return `${num(s * 1e3, 3)} ms`;
  return `${num(s, 3)} s`;
}

function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

// Seconds per epoch (mean of the last five epochs) and the time left at that pace.
export function eta(job) {
  const history = job.history || [];
  const epochs = job.progress?.epochs || job.config?.epochs || 0;
  const done = job.progress?.epoch ?? history.length;
  const recent = history.slice(-5).map((r) => r.seconds).filter((v) => Number.isFinite(v));
  const perEpoch = recent.length ? recent.reduce((a, b) => a + b, 0) / recent.length : null;
  const remaining = Math.max(epochs - done, 0);
  return { perEpoch, remaining: perEpoch == null ? null : perEpoch * remaining, done, epochs };
}

function etaText(job) {
  if (job.status === "queued") return "queued";
  if (TERMINAL.has(job.status)) {
    if (job.started_at && job.finished_at) {
      return `took ${duration((new Date(job.finished_at) - new Date(job.started_at)) / 1000)}`;
    }
    return "–";
  }
  const e = eta(job);
  return e.remaining == null ? "…" : duration(e.remaining);
}

function fraction(job) {
  if (job.status === "succeeded") return 1;
  return job.progress?.fraction ?? 0;
}

function modelName(id) {
  const m = state.models.get(id);
  return m ? m.name : short(id);
}

function datasetName(id) {
  const d = state.datasets.get(id);
  return d ? d.name : short(id);
}

function sweepName(id) {
  const s = state.sweeps.find((x) => x.id === id);
  return s ? s.name : short(id);
}

// ---------------------------------------------------------------- sign in / out

async function signIn(key) {
  // Any authenticated read tells a good key from a bad one.
  await api.api("v1/jobs?limit=1", { key });
  api.setKey(key);
}

function showSignIn(message = "") {
  stopEverything();
  $("app").hidden = true;
  $("nav").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("api-key").value = "";
  $("api-key").focus();
}

async function showApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("nav").hidden = false;
  const key = api.getKey() || "";
  $("whoami").textContent = `key ${key.slice(0, 7)}…`;
  await refreshLists();
  await route();
  window.__dashboard.ready = true;
}

function stopEverything() {
  clearTimeout(state.listTimer);
  state.listTimer = null;
  if (state.watcher) state.watcher.stop();
  state.watcher = null;
  window.__dashboard.ready = false;
}

function handleError(err) {
  if (err instanceof api.ApiError && err.status === 401) {
    api.clearKey();
    showSignIn("The API key was rejected (revoked or wrong). Sign in again.");
    return true;
  }
  console.error(err);
  return false;
}

// ---------------------------------------------------------------- lists (polled)

async function refreshLists() {
  clearTimeout(state.listTimer);
  try {
    const [jobs, models, datasets, sweeps] = await Promise.all(
      [api.listJobs(), api.listModels(), api.listDatasets(), api.listSweeps()]);
    state.jobs = jobs.items;
    state.models = new Map(models.items.map((m) => [m.id, m]));
    state.datasets = new Map(datasets.items.map((d) => [d.id, d]));
    state.sweeps = sweeps.items;
    $("jobs-total").textContent = `${jobs.total}`;
    $("models-total").textContent = `${models.total}`;
    $("sweeps-total").textContent = `${sweeps.total}`;
    $("datasets-total").textContent = `${datasets.total}`;
    renderJobs();
    renderModels();
    renderDatasets();
    renderSweeps();
  } catch (err) {
    if (handleError(err)) return;
  }
  if (!api.getKey()) return;
  const active = state.jobs.some((j) => !TERMINAL.has(j.status));
  state.listTimer = setTimeout(refreshLists, active ? 3000 : 15000);
}

function jobRow(job) {
  const selected = state.selected?.kind === "job" && state.selected.id === job.id;
  const bar = h("div", { class: `bar ${job.status}` });
  bar.style.width = `${Math.round(fraction(job) * 100)}%`;
  return h(
    "tr",
    { class: selected ? "selected" : null, dataset: { jobId: job.id, status: job.status },
      onclick: () => go(`job/${job.id}`) },
    h("td", {}, h("span", { class: "mono" }, short(job.id)), h("span", { class: "sub" }, modelName(job.model_id))),
    h("td", {}, h("span", { class: `badge ${job.status}` }, job.status)),
    h("td", { title: `epoch ${job.progress.epoch} of ${job.progress.epochs}` },
      h("div", { class: "progress" }, bar),
      h("span", { class: "sub" }, `${job.progress.epoch}/${job.progress.epochs}`)),
    h("td", { class: "eta" }, etaText(job)),
  );
}

function renderJobs() {
  const body = $("jobs-table").tBodies[0];
  body.replaceChildren(...state.jobs.map(jobRow));
  $("jobs-empty").hidden = state.jobs.length > 0;
  $("jobs-table").hidden = state.jobs.length === 0;
}

function renderModels() {
  const list = $("models-list");
  const models = [...state.models.values()];
  list.replaceChildren(
    ...models.map((m) =>
      h("li", { class: state.selected?.kind === "model" && state.selected.id === m.id ? "selected" : null,
        dataset: { modelId: m.id }, onclick: () => go(`model/${m.id}`) },
      h("span", {}, m.name),
      h("span", { class: "muted" }, m.latest_version ? `v${m.latest_version}` : "untrained")),
    ),
  );
  $("models-empty").hidden = models.length > 0;
}

function renderDatasets() {
  const datasets = [...state.datasets.values()];
  $("datasets-list").replaceChildren(
    ...datasets.map((d) =>
      h("li", { class: state.selected?.kind === "dataset" && state.selected.id === d.id ? "selected" : null,
        dataset: { datasetId: d.id }, onclick: () => go(`dataset/${d.id}`) },
      h("span", {}, d.name),
      h("span", { class: "muted" }, `${d.n_samples.toLocaleString()} × ${d.n_features}`)),
    ),
  );
  $("datasets-empty").hidden = datasets.length > 0;
}

// Trials that have ended, of all: a sweep is done when they are equal.
function trialsText(sweep) {
  return `${sweep.trials.filter((t) => TERMINAL.has(t.status)).length}/${sweep.trials.length}`;
}

// The best trial's objective; in a cross-validation sweep, the best grid point's mean over its folds.
function bestObjective(sweep) {
  const cv = sweep.cross_validation;
  if (cv) return cv.best ? `${num(cv.best.objective_mean)} ± ${num(cv.best.objective_std)}` : "–";
  return sweep.best ? num(sweep.best.objective) : "–";
}

function sweepRow(sweep) {
  const selected = state.selected?.kind === "sweep" && state.selected.id === sweep.id;
  return h(
    "tr",
    { class: selected ? "selected" : null, dataset: { sweepId: sweep.id, status: sweep.status },
      onclick: () => go(`sweep/${sweep.id}`) },
    h("td", {}, sweep.name, h("span", { class: "sub" }, modelName(sweep.model_id))),
    h("td", {}, h("span", { class: `badge ${sweep.status}` }, sweep.status)),
    h("td", { class: "trials", title: "trials ended / trials" }, trialsText(sweep)),
    h("td", { class: "objective", title: sweep.objective }, bestObjective(sweep)),
  );
}

function renderSweeps() {
  $("sweeps-table").tBodies[0].replaceChildren(...state.sweeps.map(sweepRow));
  $("sweeps-empty").hidden = state.sweeps.length > 0;
  $("sweeps-table").hidden = state.sweeps.length === 0;
}

// ---------------------------------------------------------------- routing

function go(hash) {
  if (location.hash === `#${hash}`) route();
  else location.hash = hash;
}

async function route() {
  if (!api.getKey()) return;
  const [kind, id] = location.hash.replace(/^#/, "").split("/");
  if (state.watcher) state.watcher.stop();
  state.watcher = null;
  if (kind === "job" && id) {
    state.selected = { kind, id };
    await showJob(id);
  } else if (kind === "model" && id) {
    state.selected = { kind, id };
    await showModel(id);
  } else if (kind === "sweep" && id) {
    state.selected = { kind, id };
    await showSweep(id);
  } else if (kind === "dataset" && id) {
    state.selected = { kind, id };
    await showDataset(id);
  } else if (state.jobs.length) {
    state.selected = { kind: "job", id: state.jobs[0].id };
    await showJob(state.jobs[0].id);
  } else {
    state.selected = null;
    showView("placeholder");
  }
  renderJobs();
  renderModels();
  renderDatasets();
  renderSweeps();
}

// ---------------------------------------------------------------- one job

function charts() {
  const c = window.__dashboard.charts;
  if (!c.loss) {
    c.loss = new LineChart($("chart-loss"), { yLabel: "loss" });
    c.metrics = new LineChart($("chart-metrics"));
    c.grads = new LineChart($("chart-grads"), { log: true, yLabel: "‖∇W‖" });
    c.lr = new LineChart($("chart-lr"));
    c.acts = new LineChart($("chart-acts"), { yLabel: "share" });
    c.changes = new LineChart($("chart-changes"), { log: true, yLabel: "‖Δw‖ / ‖w‖" });
  }
  return c;
}

function metricNames(history) {
  const names = new Set();
  for (const row of history) {
    for (const [k, v] of Object.entries(row)) {
      if (RESERVED.has(k) || k.startsWith("val_") || typeof v !== "number") continue;
      names.add(k);
    }
  }
  return [...names];
}

// the layer names of a per-layer field of the history rows (grad_norms, activations), in first-seen order
function layerNames(history, field = "grad_norms") {
  const names = [];
  for (const row of history) for (const k of Object.keys(row[field] || {})) if (!names.includes(k)) names.push(k);
  return names;
}

// one line per layer of a {layer: value} field of the history rows (grad_norms, weight_changes)
function layerSeries(rows, field) {
  return layerNames(rows, field).map((name, i) => ({
    label: name, color: color(i), get: (r) => (r[field] ? r[field][name] : null),
  }));
}

function drawCharts(job) {
  const c = charts();
  const rows = job.history;
  const epochs = job.progress?.epochs || job.config?.epochs || 0;
  const hasVal = rows.some((r) => Number.isFinite(r.val_loss));
  const loss = [{ label: "loss", color: color(0), get: (r) => r.loss }];
  if (hasVal) loss.push({ label: "val_loss", color: color(1), dash: [6, 4], get: (r) => r.val_loss });
  c.loss.update(rows, loss, epochs);

  const metrics = [];
  metricNames(rows).forEach((name, i) => {
    metrics.push({ label: name, color: color(2 + 2 * i), get: (r) => r[name] });
    if (rows.some((r) => Number.isFinite(r[`val_${name}`]))) {
      metrics.push({ label: `val_${name}`, color: color(3 + 2 * i), dash: [6, 4], get: (r) => r[`val_${name}`] });
    }
  });
  c.metrics.update(rows, metrics, epochs, rows.length ? "No metrics requested for this job." : "No epochs yet.");

  c.grads.update(rows, layerSeries(rows, "grad_norms"), epochs);
  c.lr.update(rows, [{ label: "learning_rate", color: color(3), get: (r) => r.learning_rate }], epochs);

  // a job with diagnostics: each layer's relative weight change, each hidden layer's inactive share (solid) and
  // dead units (dashed)
  const changes = layerSeries(rows, "weight_changes");
  $("chart-changes-box").hidden = changes.length === 0;
  if (changes.length) c.changes.update(rows, changes, epochs);
  const watched = layerNames(rows, "activations");
  $("chart-acts-box").hidden = watched.length === 0;
  const acts = [];
  watched.forEach((name, i) => {
    const of = (key) => (r) => (r.activations && r.activations[name] ? r.activations[name][key] : null);
    acts.push({ label: `${name} inactive`, color: color(i), get: of("inactive") });
    acts.push({ label: `${name} dead units`, color: color(i), dash: [6, 4], get: of("dead_units") });
  });
  if (watched.length) c.acts.update(rows, acts, epochs);
}

function stat(k, v) {
  return h("div", { class: "stat" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v));
}

// "0.2 (stratified rows)" or "fold 2 of 5 (stratified rows)": the split or the fold held out, and how its rows
// were chosen when not Keras's last ones
function splitText(cfg) {
  const rows = cfg.validation_rows && cfg.validation_rows !== "last" ? ` (${cfg.validation_rows} rows)` : "";
  const fold = cfg.validation_fold;
  if (fold) return `fold ${fold.fold} of ${fold.folds}${rows}`;
  return cfg.validation_split ? `${cfg.validation_split}${rows}` : (cfg.validation_split ?? "–");
}

// A learning rate is a number, or a schedule object: show the schedule's type and where it starts.
function rateText(rate) {
  if (rate === null || typeof rate !== "object") return String(rate);
  const start = rate.initial_learning_rate ?? (rate.values ? rate.values[0] : undefined);
  return start === undefined ? rate.type : `${rate.type} from ${start}`;
}

function renderJob(job) {
  showView("job-view");
  $("job-view").dataset.jobId = job.id;
  $("job-view").dataset.status = job.status;
  $("job-title").textContent = short(job.id);
  $("job-title").title = job.id;
  $("job-subtitle").replaceChildren(
    h("a", { onclick: () => go(`model/${job.model_id}`) }, modelName(job.model_id)),
    " on ",
    job.dataset_id ? datasetName(job.dataset_id) : "a deleted dataset",
  );
  const badge = $("job-status");
  badge.className = `badge ${job.status}`;
  badge.textContent = job.status;
  $("job-cancel").hidden = TERMINAL.has(job.status) || job.cancel_requested;

  const bar = $("job-progress-bar");
  bar.className = `bar ${job.status}`;
  bar.style.width = `${Math.round(fraction(job) * 100)}%`;
  const e = eta(job);
  const parts = [`epoch ${job.progress.epoch} / ${job.progress.epochs}`];
  if (e.perEpoch != null) parts.push(`${perEpochText(e.perEpoch)}/epoch`);
  if (job.status === "running" && e.remaining != null) parts.push(`ETA ${duration(e.remaining)}`);
  else if (TERMINAL.has(job.status) || job.status === "queued") parts.push(etaText(job));
  $("job-progress-text").textContent = parts.join(" · ");

  const err = $("job-error");
  err.hidden = !job.error;
  err.textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";

  const cfg = job.config || {};
  const opt = cfg.optimizer || {};
  const meta = [
    ["Loss", cfg.loss],
    ["Optimizer", opt.type ? `${opt.type} (lr ${rateText(opt.learning_rate)})` : "–"],
    ["Batch size", cfg.batch_size],
    ["Validation split", splitText(cfg)],
    ["Seed", cfg.seed ?? "–"],
    ["Attempts", job.attempts],
    ["Started", when(job.started_at)],
    ["Finished", when(job.finished_at)],
    ["Result version", job.result_version ? `v${job.result_version}` : "–"],
  ];
  if (job.sweep_id) meta.push(["Sweep", h("a", { class: "sweep", onclick: () => go(`sweep/${job.sweep_id}`) },
    sweepName(job.sweep_id))]);
  $("job-meta").replaceChildren(
    ...meta.map(([k, v]) => h("div", {}, h("dt", {}, k),
      h("dd", { title: v instanceof Node ? v.textContent : String(v ?? "") }, v ?? "–"))),
  );

  const last = job.history[job.history.length - 1];
  const stats = [];
  if (last) {
    for (const [k, v] of Object.entries(last)) {
      if (typeof v !== "number" || k === "epoch" || k === "seconds" || k === "learning_rate") continue;
      stats.push(stat(k, num(v)));
    }
  }
  $("job-last").replaceChildren(...stats);
  drawCharts(job);
}

function mergeRow(job, row) {
  const epoch = Number(row.epoch);
  if (!Number.isFinite(epoch)) return;
  const history = job.history.filter((r) => r.epoch < epoch);
  history.push(row);
  job.history = history;
  const epochs = job.progress?.epochs || job.config?.epochs || 0;
  job.progress = { epoch, epochs, fraction: epochs ? Math.min(epoch / epochs, 1) : 0 };
  if (job.status === "queued") job.status = "running";
}

function syncListRow(job) {
  const i = state.jobs.findIndex((j) => j.id === job.id);
  if (i < 0) return;
  state.jobs[i] = { ...state.jobs[i], ...job };
  renderJobs();
}

// What a view shows, fetched; on a failure the placeholder says what could not be shown (null: show nothing).
async function fetchForView(what, id, fetch) {
  try {
    return await fetch();
  } catch (err) {
    if (handleError(err)) return null;
    showView("placeholder");
    $("placeholder").textContent = `${what} ${id}: ${err.message}`;
    return null;
  }
}

async function showJob(id) {
  const job = await fetchForView("Job", id, () => api.getJob(id));
  if (!job) return;
  job.history = [...(job.history || [])].sort((a, b) => a.epoch - b.epoch);
  state.job = job;
  renderJob(job);
  if (!TERMINAL.has(job.status)) {
    state.watcher = new JobWatcher(job);
    state.watcher.start();
  } else {
    setLive("");
  }
}

function setLive(mode) {
  const el = $("job-live");
  el.hidden = !mode;
  el.className = `live ${mode}`;
  el.textContent = mode === "stream" ? "live" : mode === "polling" ? "polling" : "";
  $("job-view").dataset.live = mode;
}

// Follows one job until it ends: the event stream when the service has one (read with fetch() so that the
// Authorization header goes along), else GET /v1/jobs/{id} every two seconds.
class JobWatcher {
  constructor(job) {
    this.job = job;
    this.abort = new AbortController();
    this.stopped = false;
    this.lastEventId = "";
    this.timer = null;
  }

  stop() {
    this.stopped = true;
    this.abort.abort();
    clearTimeout(this.timer);
  }

  current() {
    return !this.stopped && state.job === this.job;
  }

  async start() {
    let failures = 0;
    while (this.current()) {
      try {
        this.lastEventId = await readEventStream(api.eventsUrl(this.job.id), {
          headers: api.authHeaders(),
          lastEventId: this.lastEventId,
          signal: this.abort.signal,
          onOpen: () => setLive("stream"),
          onEvent: (ev) => this.onEvent(ev),
        });
        failures = 0;
      } catch (err) {
        if (!this.current()) return;
        if (err instanceof StreamError && err.status === 401) {
          handleError(new api.ApiError(401, null));
          return;
        }
        if (err instanceof StreamError || ++failures >= 3) {
          // 404 (no events route, or no such job), or a stream that keeps breaking: poll instead.
          return this.poll();
        }
      }
      if (!this.current()) return;
      // The stream ended (after the final status) or broke: settle the state from the job itself.
      if (await this.refresh()) return;
      await new Promise((resolve) => (this.timer = setTimeout(resolve, 1000)));
    }
  }

  onEvent(ev) {
    if (!this.current()) return;
    let data = ev.data;
    try {
      data = JSON.parse(ev.data);
    } catch {
      /* plain text */
    }
    if (ev.type === "progress" && data && typeof data === "object") {
      mergeRow(this.job, data);
    } else if (ev.type === "status") {
      // {"id", "status", "attempts", "progress", "error", "result_version"} (or a bare status string)
      const status = typeof data === "string" ? data : data?.status;
      if (status) this.job.status = status;
      if (data && typeof data === "object") {
        if ("error" in data) this.job.error = data.error;
        if (data.progress && Number.isFinite(data.progress.epoch)) this.job.progress = data.progress;
        if (Number.isFinite(data.attempts)) this.job.attempts = data.attempts;
        if (data.result_version != null) this.job.result_version = data.result_version;
      }
      if (TERMINAL.has(status)) this.refresh();
    } else {
      return;
    }
    this.scheduleRender();
  }

  // Events of one network chunk (a whole history replayed on connect) make one redraw.
  scheduleRender() {
    if (this.renderPending) return;
    this.renderPending = true;
    setTimeout(() => {
      this.renderPending = false;
      if (!this.current()) return;
      renderJob(this.job);
      syncListRow(this.job);
    }, 0);
  }

  // Re-reads the job; true when it has ended (and the views are settled).
  async refresh() {
    let job;
    try {
      job = await api.getJob(this.job.id);
    } catch (err) {
      handleError(err);
      return false;
    }
    if (!this.current()) return true;
    job.history = [...(job.history || [])].sort((a, b) => a.epoch - b.epoch);
    // Keep rows the stream delivered that the database read may not show yet.
    for (const row of this.job.history) if (!job.history.some((r) => r.epoch === row.epoch)) mergeRow(job, row);
    if (TERMINAL.has(this.job.status) && !TERMINAL.has(job.status)) job.status = this.job.status;
    Object.assign(this.job, job);
    renderJob(this.job);
    syncListRow(this.job);
    if (TERMINAL.has(job.status)) {
      this.stop();
      setLive("");
      refreshLists();
      return true;
    }
    return false;
  }

  async poll() {
    setLive("polling");
    while (this.current()) {
      if (await this.refresh()) return;
      await new Promise((resolve) => (this.timer = setTimeout(resolve, POLL_MS)));
    }
  }
}

async function onCancel() {
  const job = state.job;
  if (!job) return;
  $("job-cancel").disabled = true;
  try {
    const updated = await api.cancelJob(job.id);
    job.cancel_requested = true;
    if (TERMINAL.has(updated.status)) job.status = updated.status;
    renderJob(job);
    refreshLists();
  } catch (err) {
    if (!handleError(err)) alert(`Cancel failed: ${err.message}`);
  } finally {
    $("job-cancel").disabled = false;
  }
}

// ---------------------------------------------------------------- one model

function shape(s) {
  return `(${["None", ...s.map((d) => (d == null ? "None" : d))].join(", ")})`;
}

function metricText(metrics) {
  return Object.entries(metrics || {})
    .filter(([k, v]) => typeof v === "number" && k !== "learning_rate")
    .map(([k, v]) => `${k} ${num(v)}`)
    .join(" · ");
}

async function showModel(id) {
  const both = await fetchForView("Model", id, () => Promise.all([api.getModel(id), api.listVersions(id)]));
  if (!both) return;
  const [model, versions] = both;
  state.job = null;
  showView("model-view");
  $("model-view").dataset.modelId = model.id;
  $("model-title").textContent = model.name;
  $("model-subtitle").textContent = `${model.id} · created ${when(model.created_at)}`;
  // the version a request naming none gets: the pinned one, else the latest
  const served = model.serving_version ?? model.latest_version;
  const pinned = model.serving_version != null;
  $("serving-error").textContent = "";
  $("model-version").className = `badge ${model.latest_version ? "succeeded" : ""}`;
  $("model-version").textContent = !model.latest_version ? "untrained"
    : `latest v${model.latest_version}${pinned ? ` · serving v${served}` : ""}`;

  const s = model.summary;
  $("model-summary").tBodies[0].replaceChildren(
    h("tr", { class: "input" }, h("td", {}, "input"), h("td", {}, "InputLayer"), h("td", { class: "mono" },
      shape(model.input_shape)), h("td", { class: "num" }, "0"), h("td", { class: "num" }, "0")),
    ...s.layers.map((l) =>
      h("tr", {}, h("td", {}, l.name), h("td", {}, l.type), h("td", { class: "mono" }, shape(l.output_shape)),
        h("td", { class: "num" }, l.params.toLocaleString()),
        h("td", { class: "num" }, l.trainable_params.toLocaleString())),
    ),
  );
  $("model-summary").tFoot.replaceChildren(
    h("tr", {}, h("td", { colspan: 3 },
      `Total ${s.total_params.toLocaleString()} params · non-trainable ${s.non_trainable_params.toLocaleString()}`),
    h("td", { class: "num" }, s.total_params.toLocaleString()),
    h("td", { class: "num" }, s.trainable_params.toLocaleString())),
  );

  $("model-versions").tBodies[0].replaceChildren(
    ...versions.items.map((v) =>
      h("tr", { dataset: { version: v.version } }, h("td", {}, `v${v.version}`),
        h("td", {}, v.job_id ? h("a", { class: "mono", onclick: () => go(`job/${v.job_id}`) }, short(v.job_id)) : "–"),
        h("td", {}, metricText(v.metrics)), h("td", {}, when(v.created_at)),
        h("td", { class: "serving" }, ...servingCell(model, v.version, served, pinned))),
    ),
  );
  $("versions-empty").hidden = versions.items.length > 0;
  $("model-versions").hidden = versions.items.length === 0;

  const select = $("predict-version");
  select.replaceChildren(
    ...versions.items.map((v) =>
      h("option", { value: v.version }, `v${v.version}${v.version === served ? " (serving)" : ""}`)),
  );
  if (served) select.value = served;   // try what the API serves by default
  $("predict-button").disabled = versions.items.length === 0;
  const features = featureNames(versions.items[0]);
  $("predict-hint").textContent = features ? `features: ${features.join(", ")}` : "";
  const width = model.input_shape.reduce((a, b) => a * b, 1);
  const example = model.input_shape.length === 1 && width <= 32 ? JSON.stringify([Array(width).fill(0)]) : "";
  const input = $("predict-input");
  if (input.dataset.modelId !== model.id) {
    input.value = example;
    input.dataset.modelId = model.id;
    $("predict-result").hidden = true;
    $("predict-error").textContent = "";
    for (const id of ["evaluate-metrics", "evaluate-classes", "evaluate-confusion"]) $(id).hidden = true;
    $("evaluate-error").textContent = "";
  }
  const datasets = [...state.datasets.values()];
  const chosen = $("evaluate-dataset").value;
  $("evaluate-dataset").replaceChildren(
    // the rows the version's own job validated or trained on, split as its fit split them
    h("option", { value: "rows:validation" }, "its job's validation rows"),
    h("option", { value: "rows:training" }, "its job's training rows"),
    ...datasets.map((d) =>
      h("option", { value: d.id }, `${d.name} (${d.n_samples.toLocaleString()} rows, ${short(d.id)})`)),
  );
  if ([...$("evaluate-dataset").options].some((o) => o.value === chosen)) $("evaluate-dataset").value = chosen;
  $("evaluate-button").disabled = versions.items.length === 0;
}

// The serving column of one version's row: what it is, and the button that changes it.
function servingCell(model, version, served, pinned) {
  const pin = (to) => async () => {
    try {
      await api.setServingVersion(model.id, to);
      await showModel(model.id);
    } catch (err) {
      if (!handleError(err)) $("serving-error").textContent = err.message;
    }
  };
  if (version !== served) return [h("button", { type: "button", class: "small", onclick: pin(version) }, "Serve")];
  if (!pinned) return [h("span", { class: "badge succeeded" }, "serving (latest)")];
  return [h("span", { class: "badge succeeded" }, "serving (pinned)"), " ",
    h("button", { type: "button", class: "small", onclick: pin(null) }, "Unpin")];
}

function featureNames(version) {
  if (!version?.job_id) return null;
  const job = state.jobs.find((j) => j.id === version.job_id);
  const ds = job && state.datasets.get(job.dataset_id);
  return ds ? ds.feature_names : null;
}

// the prediction form's rows (one row alone may be given bare), or null after saying why not
function formRows() {
  $("predict-error").textContent = "";
  let inputs;
  try {
    inputs = JSON.parse($("predict-input").value);
  } catch (err) {
    $("predict-error").textContent = `Not JSON: ${err.message}`;
    return null;
  }
  if (!Array.isArray(inputs)) inputs = [inputs];
  if (inputs.length && !Array.isArray(inputs[0]) && typeof inputs[0] !== "object") inputs = [inputs];
  return inputs;
}

// Predict or Explain: send the form's rows to ``call``, show the answer with ``render`` in ``resultId``
async function runOnRows(call, render, resultId) {
  const id = $("model-view").dataset.modelId;
  const inputs = formRows();
  if (inputs === null) return;
  const version = Number($("predict-version").value) || undefined;
  const buttons = [$("predict-button"), $("explain-button")];
  for (const b of buttons) b.disabled = true;
  try {
    render(inputs, await call(id, inputs, version));
  } catch (err) {
    if (handleError(err)) return;
    const errors = err.problem?.errors?.map((e) => e.msg).filter((m) => m && m !== err.message) || [];
    $("predict-error").textContent = [err.message, ...errors].join("; ");
    $(resultId).hidden = true;
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

function onPredict(event) {
  event.preventDefault();
  return runOnRows(api.predict, renderPrediction, "predict-result");
}

function onExplain() {
  return runOnRows(api.explain, renderExplanation, "explain-result");
}

function renderExplanation(inputs, out) {
  const table = $("explain-result");
  const head = ["#", "target", "output", "baseline", ...out.feature_names];
  table.tHead.replaceChildren(h("tr", {}, ...head.map((c, i) => h("th", { class: i > 1 ? "num" : null }, c))));
  table.tBodies[0].replaceChildren(
    ...out.attributions.map((row, i) => h("tr", {}, h("td", {}, i + 1), h("td", {}, String(out.targets[i])),
      h("td", { class: "num" }, num(out.outputs[i], 4)), h("td", { class: "num" }, num(out.baseline_outputs[i], 4)),
      ...row.map((v) => h("td", { class: `num attribution ${v >= 0 ? "up" : "down"}` }, num(v, 4))))),
  );
  const base = out.baseline.map((v) => num(v, 4)).join(", ");
  $("explain-caption").textContent = "Integrated gradients: each feature's share of output − baseline output, "
    + `from the baseline row [${base}] over ${out.steps} steps`;
  table.dataset.version = out.version;
  table.hidden = false;
}

function renderPrediction(inputs, out) {
  const table = $("predict-result");
  const classes = out.classes || [];
  const probs = out.probabilities;
  const head = ["#", "input", "prediction"];
  if (probs) {
    const width = probs[0]?.length || 0;
    for (let i = 0; i < width; i++) head.push(`P(${classes[i] ?? i})`);
  }
  table.tHead.replaceChildren(h("tr", {}, ...head.map((c, i) => h("th", { class: i > 2 ? "num" : null }, c))));
  table.tBodies[0].replaceChildren(
    ...out.predictions.map((p, i) => {
      const row = probs ? probs[i] : [];
      const best = row.length ? row.indexOf(Math.max(...row)) : -1;
      return h("tr", {}, h("td", {}, i + 1), h("td", { class: "mono" }, JSON.stringify(inputs[i])),
        h("td", { class: "prediction" }, Array.isArray(p) ? JSON.stringify(p) : typeof p === "number" ? num(p, 6) : p),
        ...row.map((v, j) => h("td", { class: `num${j === best && out.task === "classification" ? " best" : ""}` },
          v.toFixed(4))));
    }),
  );
  table.dataset.version = out.version;
  table.hidden = false;
}

async function onEvaluate(event) {
  event.preventDefault();
  const id = $("model-view").dataset.modelId;
  const version = Number($("predict-version").value) || undefined;
  $("evaluate-error").textContent = "";
  $("evaluate-button").disabled = true;
  try {
    const choice = $("evaluate-dataset").value;
    const target = choice.startsWith("rows:") ? { rows: choice.slice(5) } : { dataset_id: choice };
    renderEvaluation(await api.evaluate(id, target, version));
  } catch (err) {
    if (handleError(err)) return;
    $("evaluate-error").textContent = err.message;
    for (const t of ["evaluate-metrics", "evaluate-classes", "evaluate-confusion"]) $(t).hidden = true;
  } finally {
    $("evaluate-button").disabled = false;
  }
}

function renderEvaluation(out) {
  const metrics = $("evaluate-metrics");
  metrics.tBodies[0].replaceChildren(
    h("tr", {}, h("td", {}, "rows"), h("td", { class: "num" }, out.n_samples.toLocaleString())),
    ...Object.entries(out.metrics).map(([name, value]) =>
      h("tr", { dataset: { metric: name } }, h("td", {}, name === "loss" ? `loss (${out.loss})` : name),
        h("td", { class: "num" }, value === null ? "–" : num(value, 4)))),
  );
  metrics.dataset.version = out.version;
  metrics.hidden = false;
  const confusion = out.confusion;
  $("evaluate-classes").hidden = $("evaluate-confusion").hidden = !confusion;
  if (!confusion) return;
  $("evaluate-classes").tBodies[0].replaceChildren(
    ...confusion.per_class.map((c) => h("tr", {}, h("td", {}, String(c.label)),
      ...[c.precision, c.recall, c.f1].map((v) => h("td", { class: "num" }, v.toFixed(3))),
      h("td", { class: "num" }, c.support))),
  );
  const table = $("evaluate-confusion");
  if (!confusion.matrix) {   // multilabel: per label [[tn, fp], [fn, tp]]
    table.hidden = true;
    return;
  }
  const labels = confusion.classes.map(String);
  table.tHead.replaceChildren(h("tr", {}, h("th", {}, "true \\ predicted"),
    ...labels.map((l) => h("th", { class: "num" }, l))));
  table.tBodies[0].replaceChildren(
    ...confusion.matrix.map((row, i) => h("tr", {}, h("th", {}, labels[i]),
      ...row.map((n, j) => h("td", { class: `num${i === j ? " best" : ""}` }, n)))),
  );
}

// ---------------------------------------------------------------- one sweep

// A grid value as written in the request: numbers and names bare, objects (a schedule, say) as JSON.
const valueText = (v) => (v !== null && typeof v === "object" ? JSON.stringify(v) : String(v));

// ---------------------------------------------------------------- one dataset

// Its shape and task, and its profile (computed at upload): each class's count and rows, each feature's statistics.
async function showDataset(id) {
  const ds = await fetchForView("Dataset", id, () => api.getDataset(id));
  if (!ds) return;
  state.job = null;
  showView("dataset-view");
  $("dataset-view").dataset.datasetId = ds.id;
  $("dataset-title").textContent = ds.name;
  $("dataset-subtitle").textContent = `${ds.id} · uploaded ${when(ds.created_at)}`;
  $("dataset-task").textContent = ds.task;
  const meta = [["Rows", ds.n_samples.toLocaleString()], ["Features", ds.n_features.toLocaleString()],
    ["Input shape", JSON.stringify(ds.input_shape)], ["Targets", ds.target_names.join(", ")]];
  $("dataset-meta").replaceChildren(...meta.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", { title: v }, v))));
  const profile = ds.profile;
  $("dataset-no-profile").hidden = profile != null;
  const targets = profile?.targets || [];
  const byClass = ds.task === "classification";
  $("dataset-targets-title").textContent = byClass ? "Classes" : ds.task === "multilabel" ? "Labels" : "Targets";
  const stats = (f) => [num(f.min), num(f.max), num(f.mean), num(f.std)].map((v) => h("td", { class: "num" }, v));
  $("dataset-targets").tHead.replaceChildren(ds.task === "regression"
    ? h("tr", {}, h("th", {}, "Target"), ...["Min", "Max", "Mean", "Std"].map((c) => h("th", { class: "num" }, c)))
    : h("tr", {}, h("th", {}, "Label"), h("th", { class: "num" }, "Rows"), h("th", { class: "num" }, "Share"),
      ...(byClass ? [h("th", { class: "num" }, "First row"), h("th", { class: "num" }, "Last row")] : [])));
  $("dataset-targets").tBodies[0].replaceChildren(...targets.map((t) => ds.task === "regression"
    ? h("tr", {}, h("td", {}, t.name), ...stats(t))
    : h("tr", { dataset: { label: String(t.label) } }, h("td", {}, String(t.label)),
      h("td", { class: "num count" }, t.count.toLocaleString()),
      h("td", { class: "num" }, `${(100 * t.count / ds.n_samples).toFixed(1)}%`),
      ...(byClass ? [h("td", { class: "num" }, t.first_row ?? "–"), h("td", { class: "num" }, t.last_row ?? "–")]
        : []))));
  const features = profile?.features;
  $("dataset-wide").hidden = !profile || features != null;
  $("dataset-features").tBodies[0].replaceChildren(
    ...(features || []).map((f) => h("tr", {}, h("td", { class: "mono" }, f.name), ...stats(f))));
}

async function showSweep(id) {
  const sweep = await fetchForView("Sweep", id, () => api.getSweep(id));
  if (!sweep) return;
  applySweep(sweep);
}

// Shows the sweep and, while a trial is queued or running, reads it again in POLL_MS; route() stops that (it
// stops state.watcher) when the view changes, and a read that lands after the change is dropped.
function applySweep(sweep) {
  if (state.selected?.kind !== "sweep" || state.selected.id !== sweep.id) return;
  if (state.watcher) state.watcher.stop();
  state.watcher = null;
  state.job = null;
  const was = state.sweep?.id === sweep.id ? state.sweep.status : null;
  state.sweep = sweep;
  renderSweep(sweep);
  const i = state.sweeps.findIndex((s) => s.id === sweep.id);
  if (i >= 0) state.sweeps[i] = sweep;
  renderSweeps();
  const running = sweep.status === "running";
  $("sweep-live").hidden = !running;
  $("sweep-view").dataset.live = running ? "polling" : "";
  if (was === "running" && !running) refreshLists();   // its trials' rows in the jobs list have ended too
  if (!running) return;
  const poll = { stop: () => clearTimeout(poll.timer) };
  poll.timer = setTimeout(() => state.watcher === poll && showSweep(sweep.id), POLL_MS);
  state.watcher = poll;
}

function renderSweep(sweep) {
  showView("sweep-view");
  const view = $("sweep-view");
  if (view.dataset.sweepId !== sweep.id) $("sweep-error").textContent = "";
  view.dataset.sweepId = sweep.id;
  view.dataset.status = sweep.status;
  $("sweep-title").textContent = sweep.name;
  $("sweep-subtitle").replaceChildren(
    h("a", { onclick: () => go(`model/${sweep.model_id}`) }, modelName(sweep.model_id)),
    " on ",
    sweep.dataset_id ? datasetName(sweep.dataset_id) : "a deleted dataset",
    ` · ${when(sweep.created_at)}`,
  );
  const badge = $("sweep-status");
  badge.className = `badge ${sweep.status}`;
  badge.textContent = sweep.status;
  $("sweep-cancel").hidden = sweep.status !== "running";
  $("sweep-serve").hidden = sweep.best?.result_version == null;
  $("sweep-serve").title = sweep.best ? `serve v${sweep.best.result_version} to requests that name no version` : "";
  $("sweep-refit").hidden = !sweep.cross_validation?.best;

  const meta = [
    ["Objective", `${sweep.objective} (${sweep.mode === "max" ? "higher" : "lower"} is better)`],
    ["Trials ended", trialsText(sweep)],
    ["Best", sweep.best ? `${num(sweep.best.objective)} (v${sweep.best.result_version})` : "–"],
  ];
  const cv = sweep.cross_validation;
  if (cv) {
    // each grid point's folds ranked by their mean; its versions each saw (k-1)/k of the rows, so none is served
    const point = cv.best ? Object.entries(cv.best.params).map(([k, v]) => `${k}=${valueText(v)}`).join(", ") : "";
    meta[2] = ["Best", cv.best ? `${bestObjective(sweep)} over ${cv.folds} folds (${point})` : "–"];
  }
  const bestJobs = new Set(cv?.best ? cv.best.job_ids : sweep.best ? [sweep.best.job_id] : []);
  $("sweep-meta").replaceChildren(
    ...meta.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", { title: v }, v))));
  const keys = Object.keys(sweep.grid);
  $("sweep-grid").replaceChildren(
    ...keys.map((k) => {
      const values = sweep.grid[k].map(valueText).join(", ");
      return h("div", {}, h("dt", { class: "mono" }, k), h("dd", { title: values }, values));
    }));

  const table = $("sweep-trials");
  table.tHead.replaceChildren(h("tr", {}, h("th", {}, "#"), ...keys.map((k) => h("th", { class: "mono" }, k)),
    h("th", {}, "Status"), h("th", { class: "num" }, "Epochs"), h("th", { class: "num" }, sweep.objective),
    h("th", {}, "Job"), h("th", {}, "Version")));
  table.tBodies[0].replaceChildren(
    ...sweep.trials.map((t, i) => {
      const best = bestJobs.has(t.job_id);
      return h("tr", { class: best ? "best" : null, dataset: { jobId: t.job_id, status: t.status } },
        h("td", {}, i + 1),
        ...keys.map((k) => h("td", { class: "param" }, valueText(t.params[k]))),
        h("td", {}, h("span", { class: `badge ${t.status}` }, t.status)),
        h("td", { class: "num epochs" }, t.epochs_done),
        h("td", { class: `num objective${best ? " best" : ""}`, title: best ? (cv ? "a fold of the best point"
          : "the best trial") : null,
          dataset: t.objective == null ? {} : { value: t.objective } }, num(t.objective)),
        h("td", {}, h("a", { class: "mono job", onclick: () => go(`job/${t.job_id}`) }, short(t.job_id))),
        h("td", { class: "version" }, t.result_version == null ? "–"
          : h("a", { onclick: () => go(`model/${sweep.model_id}`) }, `v${t.result_version}`)));
    }));
}

// One of the sweep view's buttons: disabled while ``action`` runs, a failure shown as "<verb> failed: …".
async function sweepAction(buttonId, verb, action) {
  $(buttonId).disabled = true;
  $("sweep-error").textContent = "";
  try {
    await action();
  } catch (err) {
    if (!handleError(err)) $("sweep-error").textContent = `${verb} failed: ${err.message}`;
  } finally {
    $(buttonId).disabled = false;
  }
}

async function onSweepCancel() {
  if (!state.sweep) return;
  await sweepAction("sweep-cancel", "Cancel", async () => {
    const sweep = await api.cancelSweep(state.sweep.id);
    applySweep(sweep);
    // Queued trials ended at once; applySweep refreshed the lists if that ended the sweep, else do it here.
    if (sweep.status === "running") refreshLists();
  });
}

// Pins the best trial's version as the one the model serves to requests that name none, then shows the model.
// It pins the best shown, not a newer one a trial that ended since the last poll would make.
async function onServeBest() {
  const sweep = state.sweep;
  if (!sweep?.best) return;
  await sweepAction("sweep-serve", "Serve", async () => {
    await api.setServingVersion(sweep.model_id, sweep.best.result_version);
    go(`model/${sweep.model_id}`);
  });
}

// A cross-validation sweep's best point trained on every row: a new job, shown once queued.
async function onRefitBest() {
  const sweep = state.sweep;
  if (!sweep?.cross_validation?.best) return;
  await sweepAction("sweep-refit", "Refit", async () => {
    const job = await api.refitSweep(sweep.id);
    go(`job/${job.id}`);
  });
}

// ---------------------------------------------------------------- start

function init() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    $("signin-button").disabled = true;
    $("signin-error").textContent = "";
    try {
      await signIn(key);
      await showApp();
    } catch (err) {
      $("signin-error").textContent =
        err instanceof api.ApiError && err.status === 401 ? "That key is not valid (or was revoked)." : err.message;
    } finally {
      $("signin-button").disabled = false;
    }
  });
  $("sign-out").addEventListener("click", () => {
    api.clearKey();
    showSignIn();
  });
  $("job-cancel").addEventListener("click", onCancel);
  $("sweep-cancel").addEventListener("click", onSweepCancel);
  $("sweep-serve").addEventListener("click", onServeBest);
  $("sweep-refit").addEventListener("click", onRefitBest);
  $("predict-form").addEventListener("submit", onPredict);
  $("explain-button").addEventListener("click", onExplain);
  $("evaluate-form").addEventListener("submit", onEvaluate);
  window.addEventListener("hashchange", () => route());
  if (api.getKey()) showApp();
  else showSignIn();
}

init();
