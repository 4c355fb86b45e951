// The gateway's HTTP/JSON API (routes from gateway.proto's google.api.http annotations; bodies in
// protobuf's JSON mapping: lowerCamelCase fields, int64 as strings, bytes as base64). Every request
// carries the stored token as `Authorization: Bearer`; a failure becomes an ApiError whose message is
// the server's own (google.rpc.Status.message).

const TOKEN_KEY = "partsim.token";

// The model's parts in the thesis's order, used until the catalog names its own.
export const DEFAULT_PARTS = ["drums", "bass", "piano", "guitar", "others"];

export class ApiError extends Error {
  constructor(message, status = 0, code = 0) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage refused (private mode): the token lasts for this page only
  }
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

// An API path relative to the page (so the app works behind a path prefix too), with query parameters.
export function apiUrl(path, params = {}) {
  const url = new URL(path, document.baseURI);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  return url.toString();
}

async function failure(res) {
  let message = `${res.status} ${res.statusText || "error"}`;
  let code = 0;
  try {
    const body = await res.json();
    if (body && typeof body.message === "string" && body.message) message = body.message;
    if (body && body.code) code = body.code;
  } catch {
    // not JSON: keep the HTTP status line
  }
  if (res.status === 401 || res.status === 403) {
    message += getToken() ? " (check the API token)" : " (this server wants an API token: set one above)";
  }
  return new ApiError(message, res.status, code);
}

async function send(url, init) {
  try {
    return await fetch(url, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(`The server cannot be reached (${err && err.message ? err.message : err})`);
  }
}

export async function request(method, path, { params, json, form, signal } = {}) {
  const init = { method, signal, headers: authHeaders(json !== undefined ? { "Content-Type": "application/json" } : {}) };
  if (json !== undefined) init.body = JSON.stringify(json);
  if (form !== undefined) init.body = form;
  const res = await send(apiUrl(path, params), init);
  if (!res.ok) throw await failure(res);
  const text = await res.text();
  return text ? JSON.parse(text) : {};
}

const enc = encodeURIComponent;

export const api = {
  listTracks: (pageSize, pageToken) => request("GET", "v1/tracks", { params: { pageSize, pageToken } }),
  getTrack: (trackId) => request("GET", `v1/tracks/${enc(trackId)}`),
  stats: () => request("GET", "v1/catalog/stats"),
  searchMix: (body, signal) => request("POST", "v1/search:mix", { json: body, signal }),
  searchStems: (body, signal) => request("POST", "v1/search:stems", { json: body, signal }),
  indexTrack: (form) => request("POST", "v1/tracks:index", { form }),
  submitJob: (items) => request("POST", "v1/ingestJobs", { json: { items } }),
  getJob: (jobId) => request("GET", `v1/ingestJobs/${enc(jobId)}`),
  listJobs: (pageSize) => request("GET", "v1/ingestJobs", { params: { pageSize } }),
  retryJob: (jobId) => request("POST", `v1/ingestJobs/${enc(jobId)}:retry`, { json: {} }),
};

// The media routes' addresses: one separated stem of the segment containing `seconds`, and a clip of the
// indexed audio.
export const media = {
  stem: (trackId, part, seconds) => apiUrl(`v1/tracks/${enc(trackId)}/stems/${enc(part)}.wav`, { seconds }),
  audio: (trackId, start, end) => apiUrl(`v1/tracks/${enc(trackId)}/audio.wav`, { start, end }),
};

const blobs = new Map(); // media URL -> object URL, so a second play costs nothing

// Fetch a media URL with the token (an <audio src> could not send it) and answer an object URL for it.
export async function fetchAudio(url) {
  if (blobs.has(url)) return blobs.get(url);
  const res = await send(url, { headers: authHeaders() });
  if (!res.ok) throw await failure(res);
  const type = res.headers.get("Content-Type") || "";
  if (!type.startsWith("audio/")) throw new ApiError(`The server answered ${type || "no content type"}, not audio`);
  const objectUrl = URL.createObjectURL(await res.blob());
  if (blobs.size > 64) {
    const [oldest, old] = blobs.entries().next().value;
    blobs.delete(oldest);
    URL.revokeObjectURL(old);
  }
  blobs.set(url, objectUrl);
  return objectUrl;
}

// A File as base64 (Audio.encoded).
export function fileToBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(new ApiError(`Cannot read ${file.name}: ${reader.error}`));
    reader.readAsDataURL(file);
  });
}
