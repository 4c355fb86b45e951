"""IndexTrack over HTTP (``POST /v1/tracks:index``): one request body to the client stream gRPC takes (the
header, then the audio in chunks). Three bodies are accepted:

* ``multipart/form-data``: text fields ``track_id``, ``title``, ``artist``, ``tags`` (a JSON object of strings),
  ``mode`` (``EMBED_MODE_FEATURE``/``EMBED_MODE_SIGNAL``, or ``feature``/``signal``) and the file field ``audio``
  (any format libsndfile reads) - what an HTML form or ``curl -F audio=@song.flac`` sends;
* a raw audio body (``Content-Type: audio/*`` or ``application/octet-stream``): the file itself, the other
  fields as query parameters (``?track_id=...&title=...&tags={"k":"v"}``);
* ``application/json``: ``{"header": <IndexTrackHeader>, "audio": "<base64 of the file or raw PCM>"}``
  (the stream's header message and its chunks concatenated; ``header.pcmFormat`` set: the bytes are PCM).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from urllib.parse import parse_qsl

from partsim.v1 import gateway_pb2

from .transcode import bad_request, load_json, parse_message

CHUNK_BYTES = 1 << 20
TEXT_FIELDS = ("track_id", "title", "artist", "tags", "mode")
MODES = {"feature": "EMBED_MODE_FEATURE", "signal": "EMBED_MODE_SIGNAL"}


def stream(header: gateway_pb2.IndexTrackHeader, audio: bytes) -> Iterator[gateway_pb2.IndexTrackRequest]:
    yield gateway_pb2.IndexTrackRequest(header=header)
    for off in range(0, len(audio), CHUNK_BYTES):
        yield gateway_pb2.IndexTrackRequest(chunk=audio[off : off + CHUNK_BYTES])


def header_of(fields: dict[str, str], where: str) -> gateway_pb2.IndexTrackHeader:
    """The header from the form fields or query parameters (``where`` names them in errors)."""
    unknown = sorted(set(fields) - set(TEXT_FIELDS))
    if unknown:
        raise bad_request(
            f"unknown {where} {', '.join(unknown)} (expected {', '.join(TEXT_FIELDS)} and the file)",
            "UNKNOWN_FIELD",
            unknown[0],
        )
    tags = {}
    if fields.get("tags"):
        tags = load_json(fields["tags"].encode(), f"the {where} tags")
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise bad_request(f"the {where} tags must be a JSON object of strings", "INVALID_PARAMETER", "tags")
    mode = fields.get("mode", "")
    tree = {
        "trackId": fields.get("track_id", ""),
        "metadata": {"title": fields.get("title", ""), "artist": fields.get("artist", ""), "tags": tags},
        **({"mode": MODES.get(mode.lower(), mode)} if mode else {}),
    }
    return parse_message(tree, gateway_pb2.IndexTrackHeader.DESCRIPTOR)  # type: ignore[return-value]


def from_json(body: bytes) -> tuple[gateway_pb2.IndexTrackHeader, bytes]:
    tree = load_json(body)
    if not isinstance(tree, dict):
        raise bad_request("the request body must be a JSON object", "INVALID_JSON")
    unknown = sorted(set(tree) - {"header", "audio"})
    if unknown:
        raise bad_request(
            f'unknown field {unknown[0]!r}: the body is {{"header": <IndexTrackHeader>, "audio": "<base64>"}}',
            "UNKNOWN_FIELD",
            unknown[0],
        )
    header = parse_message(tree.get("header", {}), gateway_pb2.IndexTrackHeader.DESCRIPTOR)
    text = tree.get("audio", "")
    if not isinstance(text, str):
        raise bad_request("audio must be a base64 string", "INVALID_PARAMETER", "audio")
    try:
        audio = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise bad_request("audio is not base64", "INVALID_PARAMETER", "audio") from None
    return header, audio  # type: ignore[return-value]


def from_raw(body: bytes, query: str) -> tuple[gateway_pb2.IndexTrackHeader, bytes]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the query string is malformed: {exc}", "INVALID_PARAMETER") from None
    fields = {k: v for k, v in pairs if k != "access_token"}
    return header_of(fields, "query parameter"), body


def parse_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body: each part's headers (names lower-case) and its bytes."""
    params = dict(_params(content_type))
    boundary = params.get("boundary", "")
    if not boundary:
        raise bad_request("multipart/form-data without a boundary", "INVALID_MULTIPART")
    delimiter = b"--" + boundary.encode("latin-1")
    pieces = body.split(b"\r\n" + delimiter)
    first = pieces[0]
    if not first.startswith(delimiter):
        raise bad_request("the multipart body does not start with its boundary", "INVALID_MULTIPART")
    pieces[0] = first[len(delimiter) :]
    parts: list[tuple[dict[str, str], bytes]] = []
    for piece in pieces:
        if piece.startswith(b"--"):
            return parts  # the closing delimiter
        if not piece.startswith(b"\r\n"):
            raise bad_request("a multipart delimiter is not followed by a line break", "INVALID_MULTIPART")
        head, sep, data = piece[2:].partition(b"\r\n\r\n")
        if not sep:
            raise bad_request("a multipart part has no blank line after its headers", "INVALID_MULTIPART")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, data))
    raise bad_request("the multipart body has no closing boundary", "INVALID_MULTIPART")


def _params(header: str) -> list[tuple[str, str]]:
    out = []
    for item in header.split(";")[1:]:
        name, _, value = item.strip().partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out.append((name.strip().lower(), value))
    return out


def from_multipart(body: bytes, content_type: str) -> tuple[gateway_pb2.IndexTrackHeader, bytes]:
    fields: dict[str, str] = {}
    audio: bytes | None = None
    for headers, data in parse_multipart(body, content_type):
        disposition = dict(_params("x;" + headers.get("content-disposition", "").partition(";")[2]))
        name = disposition.get("name", "")
        if name == "audio":
            if audio is not None:
                raise bad_request("the form has two audio files", "INVALID_MULTIPART", "audio")
            audio = data
        elif "filename" in disposition:
            raise bad_request(
                f"unexpected file field {name!r}: the audio file goes in field 'audio'", "UNKNOWN_FIELD", name
            )
        else:
            try:
                fields[name] = data.decode("utf-8")
            except UnicodeDecodeError:
                raise bad_request(f"form field {name!r} is not UTF-8 text", "INVALID_MULTIPART", name) from None
    if audio is None:
        raise bad_request("the form has no file field 'audio'", "INVALID_MULTIPART", "audio")
    return header_of(fields, "form field"), audio


def index_request(content_type: str, body: bytes, query: str) -> Iterator[gateway_pb2.IndexTrackRequest]:
    """The IndexTrack stream of an HTTP upload; InvalidArgument for a body that is none of the three."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        header, audio = from_multipart(body, content_type)
    elif kind == "application/json":
        if query and any(k != "access_token" for k, _ in parse_qsl(query)):
            raise bad_request("a JSON upload takes its fields in the body, not the query string", "INVALID_PARAMETER")
        header, audio = from_json(body)
    else:
        header, audio = from_raw(body, query)
    return stream(header, audio)


def is_upload_type(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind in ("multipart/form-data", "application/json", "application/octet-stream") or kind.startswith("audio/")
