// The app's shared state and a tiny publish/subscribe on it.

import { DEFAULT_PARTS } from "./api.js";

export const state = {
  parts: [...DEFAULT_PARTS], // the model's parts (the catalog's stats name them)
  track: null, // the song explored in step 2 (a Track)
  queries: [], // the query set: {id, kind: "indexed"|"clip", part, trackId, title, seconds, start, end, fileName, encoded}
  weights: {}, // part -> weight (> 0); a part not named weighs 1
};

const listeners = new Map();

export function on(event, fn) {
  if (!listeners.has(event)) listeners.set(event, []);
  listeners.get(event).push(fn);
}

export function emit(event, detail) {
  for (const fn of listeners.get(event) || []) fn(detail);
}

let nextId = 1;

// Add one stem query; answers false when the same part of the same segment is already in the set.
export function addQuery(entry) {
  const same = state.queries.find(
    (q) =>
      q.kind === "indexed" &&
      entry.kind === "indexed" &&
      q.trackId === entry.trackId &&
      q.part === entry.part &&
      q.start === entry.start,
  );
  if (same) return false;
  state.queries.push({ ...entry, id: nextId++ });
  emit("queries");
  return true;
}

export function removeQuery(id) {
  state.queries = state.queries.filter((q) => q.id !== id);
  emit("queries");
}

export function setWeight(part, weight) {
  state.weights[part] = weight;
  emit("weights");
}

// The SearchMixRequest of the query set.
export function mixRequest(topK) {
  const used = new Set(state.queries.map((q) => q.part));
  const partWeights = {};
  for (const part of used) {
    const w = state.weights[part];
    if (w && w !== 1) partWeights[part] = w;
  }
  return {
    queries: state.queries.map((q) => ({ part: q.part, ...stemSource(q) })),
    topK,
    partWeights,
  };
}

// A StemQuery's source for one query-set entry.
export function stemSource(q) {
  return q.kind === "clip" ? { audio: { encoded: q.encoded } } : { indexed: { trackId: q.trackId, seconds: q.seconds } };
}

// The segment of `track` that contains `seconds`: {index, start, end}.
export function segmentAt(track, seconds) {
  const len = Number(track.segmentSeconds) || 10;
  const count = Math.max(1, Number(track.numSegments) || 1);
  const index = Math.min(count - 1, Math.max(0, Math.floor(Number(seconds) / len)));
  return { index, start: index * len, end: (index + 1) * len };
}
