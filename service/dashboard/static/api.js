// The JSON API, called with the signed-in API key. Paths are relative to the page, so the dashboard also
// works behind a path prefix.

const KEY = "backprop.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY);
}

export function authHeaders(key = getKey()) {
  return { Authorization: `Bearer ${key}` };
}

export class ApiError extends Error {
  constructor(status, problem) {
    const detail = problem && typeof problem === "object" ? problem.detail || problem.title : problem;
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export async function api(path, { method = "GET", body, key, signal } = {}) {
  const headers = { ...authHeaders(key), Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const enc = encodeURIComponent;

// The list shows progress and an ETA from the last few epochs' times: it needs no more of each history.
export const listJobs = (limit = 50) => api(`v1/jobs?limit=${limit}&history_tail=5`);
export const getJob = (id) => api(`v1/jobs/${enc(id)}`);
export const cancelJob = (id) => api(`v1/jobs/${enc(id)}/cancel`, { method: "POST" });
export const listModels = (limit = 200) => api(`v1/models?limit=${limit}`);
export const getModel = (id) => api(`v1/models/${enc(id)}`);
export const setServingVersion = (id, version) =>
  api(`v1/models/${enc(id)}`, { method: "PATCH", body: { serving_version: version } });
export const listVersions = (id) => api(`v1/models/${enc(id)}/versions?limit=100`);
export const listDatasets = (limit = 200) => api(`v1/datasets?limit=${limit}`);
export const getDataset = (id) => api(`v1/datasets/${enc(id)}`);
// ``target``: {dataset_id} (every row of a dataset) or {rows: "validation" | "training"} (the version's own job's)
export const evaluate = (id, target, version) =>
  api(`v1/models/${enc(id)}/evaluate`, { method: "POST", body: version ? { ...target, version } : target });
export const predict = (id, inputs, version) =>
  api(`v1/models/${enc(id)}/predict`, { method: "POST", body: version ? { inputs, version } : { inputs } });
export const explain = (id, inputs, version) =>
  api(`v1/models/${enc(id)}/explain`, { method: "POST", body: version ? { inputs, version } : { inputs } });
export const eventsUrl = (id) => `v1/jobs/${enc(id)}/events`;
export const listSweeps = (limit = 50) => api(`v1/sweeps?limit=${limit}`);
export const getSweep = (id) => api(`v1/sweeps/${enc(id)}`);
export const cancelSweep = (id) => api(`v1/sweeps/${enc(id)}/cancel`, { method: "POST" });
export const refitSweep = (id) => api(`v1/sweeps/${enc(id)}/refit`, { method: "POST" });
