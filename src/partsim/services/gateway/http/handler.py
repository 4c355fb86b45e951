"""One HTTP request: route it, read its body within the limits, call the RPC through the bridge, answer JSON
(or a file, the OpenAPI document, a web app file); every failure as google.rpc.Status JSON."""

from __future__ import annotations

import json
import logging
import math
import mimetypes
import re
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

import grpc

from partsim.errors import InvalidArgument, NotFound, PartsimError, ResourceExhausted

from . import media, uploads
from .routes import Route, find
from .transcode import JSON_TYPE, bad_request, build_request, error_status, retry_after, status_json, to_json

if TYPE_CHECKING:
    from .server import HttpApi, HttpServer

log = logging.getLogger("partsim.gateway.http")

READ_TIMEOUT = 60.0  # seconds a client may leave a socket silent while sending a request
CALL_TIMEOUT = 600.0  # seconds: the deadline of each call through the bridge, and the most a client may ask
DEADLINE_HEADER = "X-Server-Timeout"  # the client's deadline in seconds (as Google's HTTP APIs take it)
SECONDS = re.compile(r"\d+(\.\d*)?|\.\d+")  # a decimal number of seconds: no sign, exponent, inf or nan
OPENAPI_PATH = "/v1/openapi.json"
TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}


class Handler(BaseHTTPRequestHandler):
    """Answers one connection's requests (keep-alive): :meth:`dispatch` for every method."""

    protocol_version = "HTTP/1.1"
    server_version = "partsim"

    def version_string(self) -> str:
        return self.server_version

    timeout = READ_TIMEOUT
    server: HttpServer

    # every method goes through one dispatcher (405 with Allow where the path exists)
    def do_GET(self) -> None:
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def dispatch(self) -> None:
        api = self.server.api
        started = time.perf_counter()
        self.route_label = "unmatched"
        self.code = 500
        try:
            self.answer(api)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
            return
        except Exception as exc:
            if not isinstance(exc, PartsimError | grpc.RpcError):
                log.exception("HTTP %s %s failed", self.command, self.path)
            self.send_status(exc)
        api.metrics.requests.labels(self.route_label, str(self.code)).inc()
        api.metrics.seconds.labels(self.route_label).observe(time.perf_counter() - started)

    # ------------------------------------------------------------------------------------ routing
    def answer(self, api: HttpApi) -> None:
        url = urlsplit(self.path)
        path, query = url.path, url.query
        method = "GET" if self.command == "HEAD" else self.command
        if path == OPENAPI_PATH or path == "/" or path.startswith("/static/") or self.web_file(path):
            self.route_label = "openapi" if path == OPENAPI_PATH else "web"
            if method != "GET":
                self.discard_body()
                raise MethodNotAllowed(["GET", "HEAD"])
            self.discard_body()
            if path == OPENAPI_PATH:
                return self.send_bytes(200, self.server.api.openapi(), JSON_TYPE, cache="no-cache")
            return self.send_static(path)
        match, allowed = find(api.routes, method, path)
        if match is None:
            self.discard_body()
            if allowed:
                raise MethodNotAllowed(allowed)
            raise NotFound(f"no route {self.command} {path}: see {OPENAPI_PATH}", reason="NO_SUCH_ROUTE")
        route = match.route
        self.route_label = route.label
        body = self.read_body(route)
        if route.method is None:
            return self.send_media(api, route, match.variables, query)
        if route.name == "IndexTrack":
            request: object = uploads.index_request(self.headers.get("Content-Type", ""), body, query)
        else:
            request = build_request(route, match.variables, query, body)
        answer = api.bridge.call(route.name, request, self.call_metadata(query), self.call_timeout())
        if isinstance(answer, list):
            return self.send_json(200, [to_json(m) for m in answer])
        return self.send_json(200, to_json(answer))

    def call_timeout(self) -> float:
        """The call's deadline in seconds: the client's ``X-Server-Timeout`` (capped at ``CALL_TIMEOUT``), else
        ``CALL_TIMEOUT``; 400 naming the header when it is not a number of seconds above 0."""
        values = self.headers.get_all(DEADLINE_HEADER) or []
        if not values:
            return CALL_TIMEOUT
        text = values[0].strip()
        seconds = float(text) if len(values) == 1 and SECONDS.fullmatch(text) else math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            given = ", ".join(repr(v) for v in values)
            raise bad_request(
                f"header {DEADLINE_HEADER}: expected one number of seconds above 0 (at most {CALL_TIMEOUT:g} are "
                f"honoured), got {given}",
                "INVALID_HEADER",
                DEADLINE_HEADER,
            )
        return min(seconds, CALL_TIMEOUT)

    def call_metadata(self, query: str, media_route: bool = False) -> list[tuple[str, str]]:
        md = [("x-forwarded-for", self.client_address[0])]
        auth = self.headers.get_all("Authorization") or []
        md += [("authorization", value) for value in auth]
        if media_route and not auth:
            tokens = [v for k, v in parse_qsl(query) if k == "access_token"]
            md += [("authorization", f"Bearer {t}") for t in tokens]
        return md

    # ------------------------------------------------------------------------------------ bodies
    def discard_body(self) -> None:
        """Read and drop a body the route does not take (small ones only; a large one closes the connection)."""
        n = self.content_length()
        if n is None:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
            return
        if n > 65536:
            self.close_connection = True
        elif n:
            self.rfile.read(n)

    def content_length(self) -> int | None:
        text = self.headers.get("Content-Length")
        if text is None:
            return None
        if not text.strip().isdigit():
            self.close_connection = True
            raise bad_request(f"Content-Length {text!r} is not a number", "INVALID_REQUEST")
        return int(text)

    def read_body(self, route: Route) -> bytes:
        n = self.content_length()
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if n is None and not chunked:
            return b""
        if n is not None and n > self.server.api.max_body:
            self.close_connection = True
            if n <= 2 * self.server.api.max_body:  # read it, so that the client hears the 413 (not a reset)
                left = n
                while left > 0 and (got := len(self.rfile.read(min(left, 1 << 20)))):
                    left -= got
            raise self.too_large(n)
        body = self.read_chunked() if chunked else self.rfile.read(n or 0)
        if n is not None and len(body) < n:
            self.close_connection = True
            raise bad_request(f"the body ended after {len(body)} of {n} bytes", "INVALID_REQUEST")
        if not body:
            return b""
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if not route.body:
            raise bad_request(
                f"{route.label} takes no request body (its fields go in the path and query)", "UNEXPECTED_BODY"
            )
        if route.name == "IndexTrack":
            if not uploads.is_upload_type(kind):
                raise UnsupportedType(
                    kind, "multipart/form-data, audio/*, application/octet-stream or application/json"
                )
        elif kind != JSON_TYPE:
            raise UnsupportedType(kind, JSON_TYPE)
        return body

    def read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip() or b"x", 16)
            except ValueError:
                self.close_connection = True
                raise bad_request("malformed chunked transfer encoding", "INVALID_REQUEST") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > self.server.api.max_body:
                self.close_connection = True
                raise self.too_large(total)
            parts.append(self.rfile.read(size))
            self.rfile.readline(16)

    def too_large(self, n: int) -> ResourceExhausted:
        api = self.server.api
        return TooLarge(
            f"the request body ({n} bytes) is larger than this gateway takes: {api.max_body} bytes (audio uploads up "
            f"to {api.max_upload_bytes} bytes, PARTSIM_GATEWAY_MAX_UPLOAD_MB; base64 in JSON counts 4/3)",
            reason="REQUEST_TOO_LARGE",
        )

    # ------------------------------------------------------------------------------------ answers
    def send_json(self, code: int, value, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(
            code, json.dumps(value, ensure_ascii=False).encode(), JSON_TYPE, headers=headers, cache="no-store"
        )

    def send_bytes(
        self, code: int, data: bytes, content_type: str, headers: dict[str, str] | None = None, cache: str = ""
    ) -> None:
        self.code = code
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        if cache:
            self.send_header("Cache-Control", cache)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_status(self, exc: BaseException) -> None:
        status = error_status(exc)
        code, body = status_json(status)
        headers = {}
        if isinstance(exc, MethodNotAllowed):
            code, headers["Allow"] = 405, ", ".join(exc.allowed)
        elif isinstance(exc, UnsupportedType):
            code = 415
        elif isinstance(exc, TooLarge):
            code = 413
        elif code == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="partsim"'
        delay = retry_after(status)
        if delay is not None:
            headers["Retry-After"] = str(max(1, round(delay)))
        self.send_json(code, body, headers)

    def send_media(self, api: HttpApi, route: Route, variables: dict[str, str], query: str) -> None:
        timeout = self.call_timeout()

        def call(method: str, request):
            return api.bridge.call(method, request, self.call_metadata(query, media_route=True), timeout)

        name = route.extra.get("file") or variables["file"]
        if route.name == "media:stem":
            data, ctype, filename = media.stem_file(call, variables["track_id"], name, query)
        else:
            data, ctype, filename = media.audio_file(call, api.audio, variables["track_id"], name, query)
        self.send_ranged(
            data, ctype, {"Content-Disposition": f'inline; filename="{filename}"'}, cache="private, max-age=60"
        )

    def send_ranged(self, data: bytes, ctype: str, headers: dict[str, str], cache: str) -> None:
        """``data``, or the one byte range the Range header asks for (206; 416 when it lies outside)."""
        headers = {**headers, "Accept-Ranges": "bytes"}
        asked = self.headers.get("Range", "")
        if asked.startswith("bytes=") and "," not in asked:
            first, _, last = asked[6:].strip().partition("-")
            try:
                if first:
                    a, b = int(first), int(last) if last else len(data) - 1
                else:
                    a, b = max(len(data) - int(last), 0), len(data) - 1
            except ValueError:
                a, b = -1, -1
            if not 0 <= a < len(data) or b < a:
                return self.send_bytes(416, b"", ctype, {**headers, "Content-Range": f"bytes */{len(data)}"}, cache)
            b = min(b, len(data) - 1)
            headers["Content-Range"] = f"bytes {a}-{b}/{len(data)}"
            return self.send_bytes(206, data[a : b + 1], ctype, headers, cache)
        self.send_bytes(200, data, ctype, headers, cache)

    # ------------------------------------------------------------------------------------ the web app
    def web_file(self, path: str) -> bool:
        """Whether ``path`` names a file at the top of the web app's folder (``/app.js``)."""
        web = self.server.api.web_dir
        name = unquote(path[1:])
        return bool(web) and "/" not in name and name not in ("", "v1") and (web / name).is_file()  # type: ignore[operator]

    def send_static(self, path: str) -> None:
        web = self.server.api.web_dir
        rel = (
            "index.html"
            if path == "/"
            else unquote(path[len("/static/") :] if path.startswith("/static/") else path[1:])
        )
        target = (web / rel).resolve() if web is not None and rel else None
        if target is None or web is None or not target.is_relative_to(web) or not target.is_file():
            raise NotFound(f"no file {path}", reason="NO_SUCH_FILE")
        ctype = TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if ctype.startswith("text/"):
            ctype += "; charset=utf-8"
        stat = target.stat()
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        # every file revalidated (a 304 on an unchanged ETag): the ES modules import one another, so a cached
        # module beside a new index.html after an upgrade would mix two versions of the app
        cache = "no-cache"
        if self.headers.get("If-None-Match") == etag:
            self.code = 304
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Cache-Control", cache)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_bytes(200, target.read_bytes(), ctype, {"ETag": etag}, cache)


class MethodNotAllowed(InvalidArgument):
    def __init__(self, allowed: list[str]):
        super().__init__(f"this path answers {', '.join(allowed)} only", reason="METHOD_NOT_ALLOWED")
        self.allowed = allowed


class UnsupportedType(InvalidArgument):
    def __init__(self, got: str, expected: str):
        super().__init__(
            f"Content-Type {got or '(none)'} is not accepted here: send {expected}", reason="UNSUPPORTED_MEDIA_TYPE"
        )


class TooLarge(ResourceExhausted):
    pass
