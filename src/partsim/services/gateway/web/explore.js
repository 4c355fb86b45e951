// Step 2: explore one song. Pick a time (a segment) and a part, audition that part's separated stem, add it to
// the query set, or find similar stems of that part across the catalog.

import { api, media } from "./api.js";
import { state, on, addQuery, segmentAt } from "./state.js";
import { showSimilar } from "./similar.js";
import { $, h, fmtTime, trackName, trackByline, busy, playInto, clearError, showError } from "./ui.js";

let selectedPart = "";

export function initExplore() {
  on("track", (track) => open(track));
  on("parts", renderParts);
  on("open", ({ trackId, at, part, track }) => openById(trackId, at, part, track));
  $("#time").addEventListener("input", () => setTime(Number($("#time").value)));
  $("#time-num").addEventListener("change", () => setTime(Number($("#time-num").value)));
  $("#time-num").addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      setTime(Number($("#time-num").value));
    }
  });
  $("#audition").addEventListener("click", audition);
  $("#add-query").addEventListener("click", add);
  $("#similar").addEventListener("click", similar);
  $("#play-mix").addEventListener("click", playMix);
}

// Show a song; `at` and `part` preselect a time and a part (from a result or a similar stem).
export async function open(track, at = 0, part = "") {
  state.track = track;
  $("#explore-empty").hidden = true;
  $("#explore-body").hidden = false;
  $("#track-title").textContent = trackName(track);
  const meta = track.metadata || {};
  const tags = Object.entries(meta.tags || {}).map(([k, v]) => `${k}: ${v}`);
  $("#track-meta").textContent = [trackByline(track), fmtTime(track.durationSeconds), ...tags].filter(Boolean).join(" · ");
  for (const el of ["#audition-player", "#mix-player"]) {
    const audio = $(el);
    audio.pause();
    audio.hidden = true;
    audio.removeAttribute("src");
    delete audio.dataset.url;
  }
  clearError($("#explore-error"));
  $("#explore-note").hidden = true;
  const count = Math.max(1, Number(track.numSegments) || 1);
  const len = Number(track.segmentSeconds) || 10;
  const max = Math.max(0, Math.min(Number(track.durationSeconds) || count * len, count * len) - 0.5);
  for (const id of ["#time", "#time-num"]) {
    $(id).max = String(max);
    $(id).step = "0.5";
  }
  renderSegments(track);
  if (part) selectedPart = part;
  renderParts();
  setTime(at);
  $("#explore").scrollIntoView({ block: "nearest", behavior: "smooth" });
}

function renderSegments(track) {
  const count = Math.max(1, Number(track.numSegments) || 1);
  const len = Number(track.segmentSeconds) || 10;
  const strip = $("#segment-strip");
  strip.replaceChildren(
    ...Array.from({ length: count }, (_, i) =>
      h(
        "button",
        {
          type: "button",
          class: "segment",
          dataset: { index: String(i) },
          "aria-label": `Segment ${i + 1}: ${fmtTime(i * len)} to ${fmtTime((i + 1) * len)}`,
          onclick: () => setTime(i * len),
        },
        fmtTime(i * len),
      ),
    ),
  );
}

function renderParts() {
  if (!state.parts.includes(selectedPart)) selectedPart = state.parts[0];
  const picker = $("#part-picker");
  picker.replaceChildren(
    ...state.parts.map((part) =>
      h(
        "label",
        { class: `part-option part part-${part}` },
        h("input", {
          type: "radio",
          name: "part",
          value: part,
          checked: part === selectedPart,
          onchange: () => {
            selectedPart = part;
            updateLabels();
          },
        }),
        h("span", {}, part),
      ),
    ),
  );
  updateLabels();
}

function setTime(seconds) {
  if (!state.track) return;
  const max = Number($("#time").max) || 0;
  const t = Math.min(max, Math.max(0, Number.isFinite(seconds) ? seconds : 0));
  $("#time").value = String(t);
  $("#time-num").value = String(t);
  const seg = segmentAt(state.track, t);
  for (const btn of document.querySelectorAll("#segment-strip .segment")) {
    const on = Number(btn.dataset.index) === seg.index;
    btn.classList.toggle("current", on);
    btn.setAttribute("aria-pressed", on ? "true" : "false");
  }
  $("#time-label").textContent = `${fmtTime(t)} · segment ${fmtTime(seg.start)}–${fmtTime(seg.end)}`;
  updateLabels();
}

function current() {
  const seconds = Number($("#time").value) || 0;
  return { track: state.track, seconds, part: selectedPart, seg: segmentAt(state.track, seconds) };
}

function updateLabels() {
  if (!state.track) return;
  const { part, seg } = current();
  $("#audition").textContent = `▶ Audition ${part}`;
  $("#add-query").textContent = `+ Add ${part} ${fmtTime(seg.start)}–${fmtTime(seg.end)}`;
  $("#similar").textContent = `Similar ${part}`;
}

async function audition() {
  const { track, seconds, part } = current();
  const audio = $("#audition-player");
  $("#mix-player").pause();
  await busy($("#audition"), () => playInto(audio, media.stem(track.trackId, part, seconds)), $("#explore-error"));
  audio.setAttribute("aria-label", `${part} of ${trackName(track)} at ${fmtTime(seconds)}`);
}

async function playMix() {
  const { track, seg } = current();
  const audio = $("#mix-player");
  $("#audition-player").pause();
  await busy($("#play-mix"), () => playInto(audio, media.audio(track.trackId, seg.start, seg.end)), $("#explore-error"));
}

function add() {
  const { track, seconds, part, seg } = current();
  const added = addQuery({
    kind: "indexed",
    part,
    trackId: track.trackId,
    title: trackName(track),
    seconds,
    start: seg.start,
    end: seg.end,
  });
  const note = $("#explore-note");
  note.textContent = added
    ? `Added ${part} of “${trackName(track)}” (${fmtTime(seg.start)}–${fmtTime(seg.end)}) to the query set.`
    : `That ${part} segment is already in the query set.`;
  note.hidden = false;
}

function similar() {
  const { track, seconds, part } = current();
  showSimilar({ part, trackId: track.trackId, seconds, title: trackName(track) });
}

// Open a song by id (fetching it) at a time and part: from a result or a similar stem.
async function openById(trackId, at, part, known) {
  try {
    const track = known || (await api.getTrack(trackId)).track;
    await open(track, at, part);
  } catch (err) {
    showError($("#explore-error"), err);
  }
}
