// Step 4: the songs the query set finds (SearchMix): the total distance, a bar per part, the best segment
// with a player that starts there, "similar stems" of each part from that segment, and the warnings.

import { api, media } from "./api.js";
import { state, emit, mixRequest } from "./state.js";
import { showSimilar } from "./similar.js";
import { $, h, fmtTime, fmtDistance, trackName, trackByline, partClass, busy, playInto, showError, clearError } from "./ui.js";

let seq = 0;
let controller = null;

export async function search() {
  const mine = ++seq;
  if (controller) controller.abort();
  controller = new AbortController();
  const panel = $("#results");
  const status = $("#results-status");
  const error = $("#results-error");
  const topK = Math.min(1000, Math.max(1, Number($("#topk").value) || 20));
  clearError(error);
  panel.dataset.state = "loading";
  panel.setAttribute("aria-busy", "true");
  $("#search").setAttribute("aria-busy", "true");
  status.textContent = "Searching…";
  const started = performance.now();
  try {
    const res = await api.searchMix(mixRequest(topK), controller.signal);
    if (mine !== seq) return;
    const hits = res.hits || [];
    const ms = Math.round(performance.now() - started);
    render(hits);
    renderWarnings(res.warnings || []);
    const parts = [...new Set(state.queries.map((q) => q.part))].join(" + ");
    status.textContent = hits.length
      ? `${hits.length} songs by ${parts} · ${ms} ms${res.modelVersion ? ` · ${res.modelVersion}` : ""}`
      : "No songs found.";
    panel.dataset.state = "done";
    panel.dataset.searches = String(Number(panel.dataset.searches || 0) + 1); // answers shown so far
  } catch (err) {
    if (mine !== seq || (err && err.name === "AbortError")) return;
    status.textContent = "";
    showError(error, err);
    panel.dataset.state = "error";
  } finally {
    if (mine === seq) {
      panel.removeAttribute("aria-busy");
      $("#search").removeAttribute("aria-busy");
    }
  }
}

function renderWarnings(warnings) {
  $("#warnings").replaceChildren(...warnings.map((w) => h("li", { class: "warning" }, w.message || w.code)));
}

function render(hits) {
  const list = $("#hit-list");
  list.replaceChildren(...hits.map((hit, i) => card(hit, i)));
  $("#results-empty").hidden = hits.length > 0;
}

function card(hit, i) {
  const track = hit.track || {};
  const best = hit.bestSegment || {};
  const start = Number(best.startSeconds) || 0;
  const end = Number(best.endSeconds) || start + 10;
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const audio = h("audio", { controls: true, preload: "none", hidden: true, class: "hit-player" });
  const play = h("button", { type: "button", class: "play" }, `▶ Play from ${fmtTime(start)}`);
  play.addEventListener("click", () =>
    busy(
      play,
      async () => {
        await playInto(audio, media.audio(track.trackId, start, end));
        audio.setAttribute("aria-label", `${trackName(track)} from ${fmtTime(start)} to ${fmtTime(end)}`);
      },
      error,
    ),
  );
  const open = h("button", { type: "button", class: "ghost" }, "Explore song");
  open.addEventListener("click", () => emit("open", { trackId: track.trackId, at: start, track }));
  const partDistances = (hit.partDistances || []).slice().sort(
    (a, b) => state.parts.indexOf(a.part) - state.parts.indexOf(b.part),
  );
  return h(
    "li",
    { class: "hit", dataset: { trackId: track.trackId, rank: String(i + 1) } },
    h(
      "div",
      { class: "hit-head" },
      h("span", { class: "rank", "aria-label": `Rank ${i + 1}` }, String(i + 1)),
      h(
        "div",
        { class: "hit-title" },
        h("strong", {}, trackName(track)),
        h("span", { class: "muted" }, trackByline(track)),
      ),
      h(
        "div",
        { class: "hit-distance", title: "Distance to the query set (lower is closer)" },
        h("span", { class: "total" }, fmtDistance(hit.distance)),
        h("span", { class: "muted small" }, "distance"),
      ),
    ),
    h(
      "ul",
      { class: "part-bars", "aria-label": "Distance per part" },
      ...partDistances.map((pd) => bar(pd, track, start, end)),
    ),
    h(
      "div",
      { class: "hit-foot" },
      h("span", { class: "best" }, `Best match ${fmtTime(start)}–${fmtTime(end)}`),
      h("span", { class: "hit-actions" }, play, open),
    ),
    audio,
    error,
  );
}

// One part's distance as a bar: full when the part matches exactly (distance 0), empty at distance 1 or more.
function bar(pd, track, start, end) {
  const d = Number(pd.distance) || 0;
  const closeness = Math.max(0, Math.min(1, 1 - d));
  const similar = h(
    "button",
    { type: "button", class: "mini", "aria-label": `Similar ${pd.part} stems to this song's ${fmtTime(start)}–${fmtTime(end)}` },
    "Similar",
  );
  similar.addEventListener("click", () =>
    showSimilar({ part: pd.part, trackId: track.trackId, seconds: start + Math.min(1, (end - start) / 2), title: trackName(track) }),
  );
  return h(
    "li",
    { class: "pbar", dataset: { part: pd.part } },
    h("span", { class: `pname ${partClass(pd.part)}` }, pd.part),
    h(
      "span",
      { class: "meter", role: "img", "aria-label": `${pd.part} distance ${fmtDistance(d)}` },
      h("span", { class: `fill ${partClass(pd.part)}`, style: { width: `${(closeness * 100).toFixed(1)}%` } }),
    ),
    h("span", { class: "pval" }, fmtDistance(d)),
    similar,
  );
}
