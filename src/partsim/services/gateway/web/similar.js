// Step 2-2: "similar stems": the segments across the catalog whose part sounds most like one stem (SearchStems).
// Each can be auditioned, added to the query set, or opened in step 2.

import { api, media } from "./api.js";
import { addQuery, emit } from "./state.js";
import { $, h, fmtTime, fmtDistance, trackName, partChip, busy, playInto, showError, clearError } from "./ui.js";

const TOP_K = 20;
const SHOWN = 8; // the rest behind "Show all"
let seq = 0;

export function initSimilar() {
  const close = () => {
    $("#similar-player").pause();
    $("#similar-panel").hidden = true;
  };
  $("#similar-close").addEventListener("click", close);
  // Escape inside the panel closes it
  $("#similar-panel").addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      close();
      $("#similar").focus();
    }
  });
}

// query: {part, trackId, seconds, title}
export async function showSimilar(query) {
  const panel = $("#similar-panel");
  const list = $("#similar-list");
  const error = $("#similar-error");
  const mine = ++seq;
  panel.hidden = false;
  clearError(error);
  $("#similar-title").replaceChildren(
    "Stems like the ",
    partChip(query.part),
    ` of “${query.title}” at ${fmtTime(query.seconds)}`,
  );
  list.replaceChildren(h("li", { class: "empty" }, "Searching…"));
  $("#similar-warnings").replaceChildren();
  for (const more of panel.querySelectorAll(".similar-more")) more.remove();
  panel.dataset.state = "loading";
  panel.scrollIntoView({ block: "nearest", behavior: "smooth" });
  try {
    const res = await api.searchStems({
      query: { part: query.part, indexed: { trackId: query.trackId, seconds: query.seconds } },
      topK: TOP_K,
    });
    if (mine !== seq) return;
    const hits = res.hits || [];
    list.replaceChildren(...hits.slice(0, SHOWN).map((hit, i) => item(hit, i, query.part)));
    if (!hits.length) list.append(h("li", { class: "empty" }, "No similar stems found."));
    if (hits.length > SHOWN) {
      const more = h("button", { type: "button", class: "ghost similar-more" }, `Show all ${hits.length}`);
      more.addEventListener("click", () => {
        list.append(...hits.slice(SHOWN).map((hit, i) => item(hit, SHOWN + i, query.part)));
        more.remove();
        list.children[SHOWN].querySelector("button").focus();
      });
      list.after(more);
    }
    $("#similar-warnings").replaceChildren(...(res.warnings || []).map((w) => h("li", {}, w.message)));
    panel.dataset.state = "done";
  } catch (err) {
    if (mine !== seq) return;
    list.replaceChildren();
    showError(error, err);
    panel.dataset.state = "error";
  }
}

function item(hit, i, part) {
  const track = hit.track || {};
  const seg = hit.segment || {};
  const start = Number(seg.startSeconds) || 0;
  const end = Number(seg.endSeconds) || start;
  const at = start + Math.min(1, (end - start) / 2);
  const play = h("button", { type: "button", class: "icon", "aria-label": `Play ${part} of ${trackName(track)}` }, "▶");
  play.addEventListener("click", () =>
    busy(play, () => playInto($("#similar-player"), media.stem(track.trackId, part, at)), $("#similar-error")),
  );
  const add = h("button", { type: "button", class: "ghost" }, "+ Add");
  add.addEventListener("click", () => {
    const added = addQuery({ kind: "indexed", part, trackId: track.trackId, title: trackName(track), seconds: at, start, end });
    add.textContent = added ? "Added ✓" : "In the set";
    add.disabled = true;
  });
  const open = h("button", { type: "button", class: "ghost" }, "Open");
  open.addEventListener("click", () => emit("open", { trackId: track.trackId, at, part, track }));
  return h(
    "li",
    { class: "similar-item" },
    h("span", { class: "rank" }, String(i + 1)),
    h(
      "span",
      { class: "similar-text" },
      h("strong", {}, trackName(track)),
      h("span", { class: "muted" }, `${fmtTime(start)}–${fmtTime(end)} · distance ${fmtDistance(hit.distance)}`),
    ),
    h("span", { class: "similar-actions" }, play, add, open),
  );
}
