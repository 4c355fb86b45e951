// "Add music": index one uploaded song (multipart to tracks:index), submit an ingest job of files on the server,
// and follow the jobs' progress (ListIngestJobs, or the jobs this browser submitted where the server does not
// list them; each unfinished one polled with GetIngestJob).

import { api } from "./api.js";
import { $, h, busy, showError, clearError } from "./ui.js";
import { reloadCatalog } from "./catalog.js";

const JOBS_KEY = "partsim.jobs";
const POLL_MS = 1500;
const jobs = new Map(); // job id -> IngestJob
let timer = 0;
let listed = true; // the server answers ListIngestJobs

function remembered() {
  try {
    return JSON.parse(localStorage.getItem(JOBS_KEY) || "[]");
  } catch {
    return [];
  }
}

function remember(jobId) {
  const ids = [jobId, ...remembered().filter((id) => id !== jobId)].slice(0, 20);
  try {
    localStorage.setItem(JOBS_KEY, JSON.stringify(ids));
  } catch {
    // storage refused: the job shows until the page closes
  }
}

export function initIngest() {
  $("#upload-form").addEventListener("submit", upload);
  $("#job-form").addEventListener("submit", submitJob);
  $("#upload-file").addEventListener("change", () => {
    const file = $("#upload-file").files[0];
    if (file && !$("#upload-id").value) $("#upload-id").value = file.name.replace(/\.[^.]+$/, "");
  });
  $("#jobs-refresh").addEventListener("click", refreshJobs);
}

// Called when the "Add music" view opens or closes.
export function ingestVisible(visible) {
  clearTimeout(timer);
  if (visible) refreshJobs();
}

async function upload(e) {
  e.preventDefault();
  const file = $("#upload-file").files[0];
  const out = $("#upload-result");
  out.hidden = true;
  const error = $("#upload-error");
  if (!file) {
    showError(error, "Choose an audio file.");
    return;
  }
  const form = new FormData();
  form.set("track_id", $("#upload-id").value.trim() || file.name.replace(/\.[^.]+$/, ""));
  form.set("title", $("#upload-title").value.trim());
  form.set("artist", $("#upload-artist").value.trim());
  const tags = $("#upload-tags").value.trim();
  if (tags) {
    try {
      JSON.parse(tags);
    } catch {
      showError(error, 'Tags must be a JSON object, e.g. {"genre": "funk"}.');
      return;
    }
    form.set("tags", tags);
  }
  form.set("audio", file, file.name);
  await busy(
    $("#upload-submit"),
    async () => {
      const res = await api.indexTrack(form);
      const track = res.track || {};
      out.textContent = `${res.replaced ? "Re-indexed" : "Indexed"} “${(track.metadata || {}).title || track.trackId}”: ${
        track.numSegments
      } segments.`;
      out.hidden = false;
      $("#upload-form").reset();
      reloadCatalog();
    },
    error,
  );
}

async function submitJob(e) {
  e.preventDefault();
  const error = $("#job-error");
  const lines = $("#job-paths").value.split("\n").map((l) => l.trim()).filter(Boolean);
  if (!lines.length) {
    showError(error, "Give one audio file path (on the server) per line.");
    return;
  }
  const items = trackIds(lines).map((trackId, i) => ({ trackId, uri: lines[i] }));
  await busy(
    $("#job-submit"),
    async () => {
      const res = await api.submitJob(items);
      remember(res.jobId);
      jobs.set(res.jobId, { jobId: res.jobId, state: "JOB_STATE_QUEUED", total: items.length });
      $("#job-paths").value = "";
      render();
      await refreshJobs();
    },
    error,
  );
}

// Each path's track id: its file name without the extension, or where several paths share that name (a
// corpus's song01/mix.flac, song02/mix.flac) the name of its folder.
function trackIds(paths) {
  const parts = paths.map((p) => p.replace(/^file:\/\//, "").split(/[\\/]/).filter(Boolean));
  const stems = parts.map((segs) => (segs[segs.length - 1] || "").replace(/\.[^.]+$/, ""));
  return stems.map((stem, i) => {
    const shared = stems.filter((s) => s === stem).length > 1;
    return shared && parts[i].length > 1 ? parts[i][parts[i].length - 2] : stem;
  });
}

async function refreshJobs() {
  clearTimeout(timer);
  const error = $("#jobs-error");
  clearError(error);
  try {
    if (listed) {
      try {
        const res = await api.listJobs(20);
        for (const job of res.jobs || []) jobs.set(job.jobId, job);
      } catch (err) {
        if (err.status !== 501 && err.status !== 404) throw err;
        listed = false; // this server does not list jobs yet: follow the ones this browser submitted
      }
    }
    if (!listed) for (const id of remembered()) if (!jobs.has(id)) jobs.set(id, { jobId: id });
    const unfinished = [...jobs.values()].filter((j) => j.state !== "JOB_STATE_DONE");
    await Promise.all(
      unfinished.map(async (j) => {
        try {
          jobs.set(j.jobId, (await api.getJob(j.jobId)).job);
        } catch (err) {
          if (err.status === 404) jobs.delete(j.jobId); // expired
          else throw err;
        }
      }),
    );
  } catch (err) {
    showError(error, err);
  }
  render();
  const running = [...jobs.values()].some((j) => j.state !== "JOB_STATE_DONE");
  if (running && !$("#view-ingest").hidden) timer = setTimeout(refreshJobs, POLL_MS);
  if (!running && [...jobs.values()].length) reloadCatalogOnce();
}

let lastDone = -1;
function reloadCatalogOnce() {
  const done = [...jobs.values()].reduce((n, j) => n + (j.succeeded || 0), 0);
  if (done !== lastDone) {
    if (lastDone >= 0) reloadCatalog();
    lastDone = done;
  }
}

const STATES = { JOB_STATE_QUEUED: "Queued", JOB_STATE_RUNNING: "Running", JOB_STATE_DONE: "Done" };

function render() {
  const list = $("#job-list");
  const all = [...jobs.values()].sort((a, b) => (b.createdAt || 0) - (a.createdAt || 0));
  list.replaceChildren(...all.map(job));
  $("#jobs-empty").hidden = all.length > 0;
}

function job(j) {
  const total = j.total || 0;
  const done = (j.succeeded || 0) + (j.failed || 0);
  const state = STATES[j.state] || "Unknown";
  const retry = h("button", { type: "button", class: "ghost", hidden: !j.failed }, "Retry failed");
  retry.addEventListener("click", () =>
    busy(
      retry,
      async () => {
        const res = await api.retryJob(j.jobId);
        jobs.set(j.jobId, res.job);
        await refreshJobs();
      },
      $("#jobs-error"),
    ),
  );
  const failures = (j.failures || []).map((f) => h("li", {}, h("strong", {}, f.trackId), ": ", f.error));
  const when = j.createdAt ? new Date(j.createdAt * 1000).toLocaleString() : "";
  return h(
    "li",
    { class: "job", dataset: { jobId: j.jobId, state: j.state || "" } },
    h(
      "div",
      { class: "job-head" },
      h("code", {}, j.jobId),
      h("span", { class: `badge state-${state.toLowerCase()}` }, state),
      h("span", { class: "muted small" }, when),
    ),
    h("progress", { max: String(Math.max(1, total)), value: String(done), "aria-label": `Job ${j.jobId} progress` }),
    h(
      "div",
      { class: "job-foot" },
      h("span", {}, `${j.succeeded || 0} indexed · ${j.failed || 0} failed · ${total} in all`),
      retry,
    ),
    failures.length ? h("details", {}, h("summary", {}, "Failures"), h("ul", {}, ...failures)) : null,
  );
}
