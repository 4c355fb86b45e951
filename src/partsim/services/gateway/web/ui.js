// Small DOM helpers shared by the app's modules.

import { fetchAudio } from "./api.js";

// h("button", {class: "x", onclick: fn, "aria-label": "..."}, "text", child, ...)
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

// 75.5 -> "1:15"
export function fmtTime(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export function fmtDistance(d) {
  return (Number(d) || 0).toFixed(3);
}

// The CSS class that colours a part (unknown parts get the neutral colour).
export function partClass(part) {
  return `part part-${String(part).replace(/[^a-z0-9_-]/gi, "")}`;
}

export function partChip(part) {
  return h("span", { class: `chip ${partClass(part)}` }, part);
}

export function trackName(track) {
  const meta = (track && track.metadata) || {};
  return meta.title || (track && track.trackId) || "";
}

export function trackByline(track) {
  const meta = (track && track.metadata) || {};
  // the id too where a title hides it (a track without a title already shows its id as the title)
  return [meta.artist, meta.title && track.trackId !== meta.title ? track.trackId : ""].filter(Boolean).join(" · ");
}

export function showError(el, err) {
  el.textContent = err && err.message ? err.message : String(err);
  el.hidden = false;
}

export function clearError(el) {
  el.textContent = "";
  el.hidden = true;
}

// Run `work` with the button disabled and marked busy; errors go to `errorEl` (when given).
export async function busy(button, work, errorEl) {
  if (errorEl) clearError(errorEl);
  if (button) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
  }
  try {
    return await work();
  } catch (err) {
    if (errorEl) showError(errorEl, err);
    else throw err;
    return undefined;
  } finally {
    if (button) {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }
}

// Load a media URL (with the token) into an <audio> element and start it. The element keeps the server's
// address in data-url; its src is the fetched audio.
export async function playInto(audio, url) {
  const objectUrl = await fetchAudio(url);
  audio.dataset.url = url;
  audio.hidden = false;
  if (audio.src !== objectUrl) audio.src = objectUrl;
  audio.currentTime = 0;
  try {
    await audio.play();
  } catch {
    // autoplay refused: the controls are there to press
  }
}

export function debounce(fn, ms) {
  let timer = 0;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
