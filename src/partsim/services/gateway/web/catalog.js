// Step 1: the catalog, a page of songs at a time, filtered on the page by title, artist or id; the catalog's
// stats in the header.

import { api, DEFAULT_PARTS } from "./api.js";
import { state, emit } from "./state.js";
import { $, h, fmtTime, trackName, trackByline, showError, clearError } from "./ui.js";

const PAGE_SIZE = 50;

const page = { tokens: [""], index: 0, tracks: [], next: "" };

export function initCatalog() {
  $("#filter").addEventListener("input", render);
  $("#filter").addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      const first = $("#track-list button");
      if (first) first.click();
    }
  });
  $("#prev").addEventListener("click", () => loadPage(page.index - 1));
  $("#next").addEventListener("click", () => loadPage(page.index + 1));
  loadStats();
  loadPage(0);
}

export async function loadStats() {
  const el = $("#stats");
  try {
    const res = await api.stats();
    const stats = res.stats || {};
    const byPart = stats.presentSegmentsByPart || {};
    const known = Object.keys(byPart);
    if (known.length) {
      state.parts = [...DEFAULT_PARTS.filter((p) => known.includes(p)), ...known.filter((p) => !DEFAULT_PARTS.includes(p))];
      emit("parts");
    }
    const tracks = Number(stats.tracks || 0);
    const segments = Number(stats.segments || 0);
    el.replaceChildren(
      h("span", { class: "stat" }, h("strong", {}, tracks.toLocaleString()), tracks === 1 ? " song" : " songs"),
      h("span", { class: "stat" }, h("strong", {}, segments.toLocaleString()), " segments"),
      res.modelVersion ? h("span", { class: "stat model" }, res.modelVersion) : null,
    );
    el.title = state.parts.map((p) => `${p}: ${Number(byPart[p] || 0).toLocaleString()} segments play it`).join("\n");
  } catch (err) {
    el.replaceChildren(h("span", { class: "stat warn" }, `Stats unavailable: ${err.message}`));
  }
}

export async function loadPage(index) {
  if (index < 0 || index >= page.tokens.length) return;
  const list = $("#track-list");
  const error = $("#songs-error");
  clearError(error);
  list.setAttribute("aria-busy", "true");
  try {
    const res = await api.listTracks(PAGE_SIZE, page.tokens[index]);
    page.index = index;
    page.tracks = res.tracks || [];
    page.next = res.nextPageToken || "";
    if (page.next && page.tokens.length === index + 1) page.tokens.push(page.next);
    render();
  } catch (err) {
    showError(error, err);
  } finally {
    list.removeAttribute("aria-busy");
  }
}

export function reloadCatalog() {
  page.tokens = [""];
  loadStats();
  return loadPage(0);
}

function matches(track, words) {
  const meta = track.metadata || {};
  const text = `${meta.title || ""} ${meta.artist || ""} ${track.trackId}`.toLowerCase();
  return words.every((w) => text.includes(w));
}

function render() {
  const words = $("#filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  const shown = page.tracks.filter((t) => matches(t, words));
  const list = $("#track-list");
  list.replaceChildren(
    ...shown.map((track) => {
      const selected = state.track && state.track.trackId === track.trackId;
      return h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: "track" + (selected ? " selected" : ""),
            "aria-pressed": selected ? "true" : "false",
            dataset: { trackId: track.trackId },
            onclick: () => selectTrack(track),
          },
          h("span", { class: "track-title" }, trackName(track)),
          h("span", { class: "track-sub" }, trackByline(track) || "\u00a0"),
          h("span", { class: "track-len" }, fmtTime(track.durationSeconds)),
        ),
      );
    }),
  );
  if (!page.tracks.length) list.append(h("li", { class: "empty" }, "No songs yet: add some under “Add music”."));
  else if (!shown.length) list.append(h("li", { class: "empty" }, "No song on this page matches."));
  $("#prev").disabled = page.index === 0;
  $("#next").disabled = !page.next;
  $("#page-label").textContent = page.tracks.length
    ? `${page.index * PAGE_SIZE + 1}–${page.index * PAGE_SIZE + page.tracks.length}`
    : "";
}

export function selectTrack(track) {
  state.track = track;
  render();
  emit("track", track);
}
