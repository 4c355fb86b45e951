// MixQuery (thesis chapter 6) on partsim's HTTP API: 1 choose a song, 2 audition a part at a time and add it,
// 3 build a query set from several songs (and clips) with a weight per part, 4 search and listen from the best
// segment. No framework, no build step: ES modules served as written.

import { getToken, setToken } from "./api.js";
import { initCatalog, reloadCatalog } from "./catalog.js";
import { initExplore } from "./explore.js";
import { initIngest, ingestVisible } from "./ingest.js";
import { initQuerySet } from "./queryset.js";
import { search } from "./results.js";
import { initSimilar } from "./similar.js";
import { $ } from "./ui.js";

function initToken() {
  const form = $("#token-form");
  const input = $("#token");
  const status = $("#token-status");
  const show = () => {
    status.textContent = getToken() ? "Token set" : "No token";
    $("#token-summary").classList.toggle("has-token", Boolean(getToken()));
  };
  input.value = getToken();
  show();
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    show();
    reloadCatalog();
  });
  $("#token-clear").addEventListener("click", () => {
    input.value = "";
    setToken("");
    show();
    reloadCatalog();
  });
}

// Two views: search (#search or no hash) and "add music" (#ingest).
function route() {
  const ingest = location.hash === "#ingest";
  $("#view-search").hidden = ingest;
  $("#view-ingest").hidden = !ingest;
  for (const [id, on] of [
    ["#nav-search", !ingest],
    ["#nav-ingest", ingest],
  ]) {
    const link = $(id);
    if (on) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  ingestVisible(ingest);
}

// One player at a time: starting one pauses the others.
function onePlayer() {
  document.addEventListener(
    "play",
    (e) => {
      for (const audio of document.querySelectorAll("audio")) if (audio !== e.target) audio.pause();
    },
    true,
  );
}

initToken();
initCatalog();
initExplore();
initSimilar();
initQuerySet(search);
initIngest();
onePlayer();
window.addEventListener("hashchange", route);
route();
document.body.dataset.ready = "true";
