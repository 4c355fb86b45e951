// Step 3: the query set. Stem queries from several songs (and uploaded clips), a weight per part, and the
// search: on Search (or Enter), and as the set changes while "Update as I build" is on.

import { fileToBase64 } from "./api.js";
import { state, on, emit, addQuery, removeQuery, setWeight } from "./state.js";
import { $, h, fmtTime, partChip, busy, debounce, showError, clearError } from "./ui.js";

const WEIGHTS = [0.25, 0.5, 1, 1.5, 2, 3, 4];

export function initQuerySet(search) {
  const live = debounce(() => {
    if ($("#live").checked && state.queries.length) search();
  }, 350);
  on("queries", () => {
    render();
    live();
  });
  on("weights", live);
  on("parts", renderClipParts);
  $("#query-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!state.queries.length) {
      showError($("#query-error"), "The query set is empty: add a part of a song (step 2) or upload a clip.");
      return;
    }
    clearError($("#query-error"));
    search();
  });
  // Ctrl+Enter (or Cmd+Enter) searches from anywhere on the page
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      $("#query-form").requestSubmit();
    }
  });
  $("#clip-add").addEventListener("click", addClip);
  $("#clear-queries").addEventListener("click", () => {
    state.queries = [];
    emit("queries");
  });
  renderClipParts();
  render();
}

function renderClipParts() {
  const select = $("#clip-part");
  const chosen = select.value;
  select.replaceChildren(...state.parts.map((p) => h("option", { value: p, selected: p === chosen }, p)));
}

function render() {
  const list = $("#query-list");
  list.replaceChildren(...state.queries.map(entry));
  $("#query-empty").hidden = state.queries.length > 0;
  $("#clear-queries").hidden = state.queries.length === 0;
  $("#query-count").textContent = state.queries.length ? String(state.queries.length) : "";
  renderWeights();
}

function entry(q) {
  const what =
    q.kind === "clip"
      ? [h("strong", {}, q.fileName), h("span", { class: "muted" }, `uploaded clip · ${q.size}`)]
      : [h("strong", {}, q.title), h("span", { class: "muted" }, `${fmtTime(q.start)}–${fmtTime(q.end)} (at ${fmtTime(q.seconds)})`)];
  const remove = h(
    "button",
    { type: "button", class: "icon", "aria-label": `Remove ${q.part} of ${q.title || q.fileName}`, title: "Remove" },
    "✕",
  );
  remove.addEventListener("click", () => {
    removeQuery(q.id);
    const next = $("#query-list button") || $("#search");
    next.focus();
  });
  const children = [partChip(q.part), h("span", { class: "query-text" }, ...what)];
  if (q.kind === "clip") {
    const audio = $("#clip-player");
    const play = h("button", { type: "button", class: "icon", "aria-label": `Play ${q.fileName}` }, "▶");
    play.addEventListener("click", () => {
      audio.hidden = false;
      audio.src = q.objectUrl;
      audio.play().catch(() => {});
    });
    children.push(play);
  } else {
    const open = h("button", { type: "button", class: "icon", "aria-label": `Open ${q.title}`, title: "Open" }, "↗");
    open.addEventListener("click", () => emit("open", { trackId: q.trackId, at: q.seconds, part: q.part }));
    children.push(open);
  }
  children.push(remove);
  return h("li", { class: "query", dataset: { part: q.part, kind: q.kind } }, ...children);
}

function renderWeights() {
  const used = state.parts.filter((p) => state.queries.some((q) => q.part === p));
  for (const q of state.queries) if (!used.includes(q.part)) used.push(q.part);
  const box = $("#weights");
  box.hidden = used.length === 0;
  $("#weight-list").replaceChildren(
    ...used.map((part) => {
      const id = `weight-${part}`;
      const value = state.weights[part] || 1;
      const select = h(
        "select",
        { id, name: id, dataset: { part } },
        ...WEIGHTS.map((w) => h("option", { value: String(w), selected: w === value }, `× ${w}`)),
      );
      select.addEventListener("change", () => setWeight(part, Number(select.value)));
      return h("div", { class: "weight" }, h("label", { for: id }, partChip(part)), select);
    }),
  );
}

async function addClip() {
  const input = $("#clip-file");
  const file = input.files && input.files[0];
  const error = $("#query-error");
  if (!file) {
    showError(error, "Choose an audio file (WAV, FLAC, OGG or MP3) first.");
    input.focus();
    return;
  }
  await busy(
    $("#clip-add"),
    async () => {
      const encoded = await fileToBase64(file);
      addQuery({
        kind: "clip",
        part: $("#clip-part").value,
        fileName: file.name,
        size: file.size >= 1e6 ? `${(file.size / 1e6).toFixed(1)} MB` : `${Math.ceil(file.size / 1e3)} kB`,
        encoded,
        objectUrl: URL.createObjectURL(file),
      });
      input.value = "";
    },
    error,
  );
}
