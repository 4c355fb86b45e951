"""The OpenAPI 3.1 document of the HTTP/JSON API, generated from the proto descriptors.

Paths and operations come from the same route table the server uses (:func:`.routes.route_table`), schemas
from the message descriptors in proto3's JSON mapping (lowerCamelCase names; int64 as strings; bytes as
base64 strings; enums by name; maps as objects; a oneof named in its fields' descriptions and in
``x-oneof``), descriptions from the comments of the .proto files (``comments``: full name -> text, read from a
descriptor set built with ``--include_source_info`` by ``scripts/gen-openapi.py``, which writes the
committed ``openapi.json`` beside this module).
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, ServiceDescriptor
from google.rpc import status_pb2

from .handler import CALL_TIMEOUT, DEADLINE_HEADER
from .media import FORMATS
from .routes import Route, route_table

FD = FieldDescriptor
NUMBER = {FD.TYPE_DOUBLE: "double", FD.TYPE_FLOAT: "float"}
INT32 = {FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32, FD.TYPE_UINT32, FD.TYPE_FIXED32}
INT64 = {FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64, FD.TYPE_UINT64, FD.TYPE_FIXED64}
WELL_KNOWN = {
    "google.protobuf.Duration": {
        "type": "string",
        "description": 'A duration in seconds with an "s" suffix, e.g. "1.5s".',
    },
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Any": {
        "type": "object",
        "description": "A message of the type its @type names, in the JSON mapping.",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
}
STATUS = "google.rpc.Status"


def comments(files: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Full name (message, field, enum, enum value, service, method) -> its leading comment."""
    out: dict[str, str] = {}
    for f in files.file:
        by_path = {tuple(loc.path): loc.leading_comments for loc in f.source_code_info.location if loc.leading_comments}

        def note(name: str, path: tuple, by_path=by_path) -> None:
            text = by_path.get(path)
            if text:
                out[name] = "\n".join(
                    line[1:] if line.startswith(" ") else line for line in text.strip("\n").split("\n")
                )

        def walk_message(m, prefix: str, path: tuple, note=note) -> None:
            name = f"{prefix}.{m.name}"
            note(name, path)
            for i, fld in enumerate(m.field):
                note(f"{name}.{fld.name}", (*path, 2, i))
            for i, nested in enumerate(m.nested_type):
                walk_message(nested, name, (*path, 3, i))
            for i, e in enumerate(m.enum_type):
                walk_enum(e, name, (*path, 4, i))

        def walk_enum(e, prefix: str, path: tuple, note=note) -> None:
            note(f"{prefix}.{e.name}", path)
            for i, v in enumerate(e.value):
                note(f"{prefix}.{e.name}.{v.name}", (*path, 2, i))

        for i, m in enumerate(f.message_type):
            walk_message(m, f.package, (4, i))
        for i, e in enumerate(f.enum_type):
            walk_enum(e, f.package, (5, i))
        for i, s in enumerate(f.service):
            note(f"{f.package}.{s.name}", (6, i))
            for j, rpc in enumerate(s.method):
                note(f"{f.package}.{s.name}.{rpc.name}", (6, i, 2, j))
    return out


class Schemas:
    """components.schemas, filled as messages and enums are referenced."""

    def __init__(self, notes: dict[str, str]):
        self.notes = notes
        self.schemas: dict[str, dict] = {}

    def ref(self, desc: Descriptor | EnumDescriptor) -> dict:
        name = desc.full_name
        if name in WELL_KNOWN:
            return dict(WELL_KNOWN[name])  # type: ignore[call-overload]
        if name not in self.schemas:
            self.schemas[name] = {}  # reserved first: messages may refer to themselves
            self.schemas[name] = self.enum(desc) if isinstance(desc, EnumDescriptor) else self.message(desc)
        return {"$ref": f"#/components/schemas/{name}"}

    def enum(self, e: EnumDescriptor) -> dict:
        values = "\n".join(f"- `{v.name}`: {self.notes.get(f'{e.full_name}.{v.name}', '').strip()}" for v in e.values)
        text = self.notes.get(e.full_name, "")
        return {"type": "string", "enum": [v.name for v in e.values], "description": f"{text}\n\n{values}".strip()}

    def message(self, m: Descriptor) -> dict:
        props = {}
        for f in m.fields:
            schema = self.field(f)
            text = self.notes.get(f"{m.full_name}.{f.name}", "")
            oneof = f.containing_oneof
            if oneof is not None and not oneof.name.startswith("_"):  # "_x": proto3 optional
                others = ", ".join(o.json_name for o in oneof.fields if o is not f)
                text = f"{text}\n\nOne of `{oneof.name}`: set at most one of this and {others}.".strip()
            if text:
                schema = (
                    {"allOf": [schema], "description": text} if "$ref" in schema else {**schema, "description": text}
                )
            props[f.json_name] = schema
        out: dict = {"type": "object", "properties": props, "additionalProperties": False}
        oneofs = {o.name: [f.json_name for f in o.fields] for o in m.oneofs if not o.name.startswith("_")}
        if oneofs:
            out["x-oneof"] = oneofs
        if m.full_name in self.notes:
            out["description"] = self.notes[m.full_name]
        return out

    def field(self, f: FieldDescriptor) -> dict:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value = f.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.scalar(value)}
        one = self.scalar(f)
        return {"type": "array", "items": one} if f.is_repeated else one

    def scalar(self, f: FieldDescriptor) -> dict:
        if f.message_type is not None:
            return self.ref(f.message_type)
        if f.enum_type is not None:
            return self.ref(f.enum_type)
        if f.type in NUMBER:
            return {"type": "number", "format": NUMBER[f.type]}
        if f.type in INT32:
            return {"type": "integer", "format": "int32" if f.type in (FD.TYPE_INT32, FD.TYPE_SINT32) else "uint32"}
        if f.type in INT64:
            return {"type": "string", "format": "int64", "description": "A 64-bit integer as a decimal string."}
        if f.type == FD.TYPE_BOOL:
            return {"type": "boolean"}
        if f.type == FD.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "string"}


def query_parameters(
    desc: Descriptor, skip: set[str], schemas: Schemas, prefix: str = "", depth: int = 0
) -> list[dict]:
    """A GET/DELETE route's query parameters: the request's fields by path (nested messages flattened)."""
    out = []
    for f in desc.fields:
        path = prefix + f.name
        if path in skip:
            continue
        if f.message_type is not None and not f.is_repeated and f.message_type.full_name not in WELL_KNOWN:
            if depth < 3:
                out += query_parameters(f.message_type, skip, schemas, path + ".", depth + 1)
            continue
        text = schemas.notes.get(f"{desc.full_name}.{f.name}", "")
        out.append(
            {
                "name": path,
                "in": "query",
                "required": False,
                "schema": schemas.field(f),
                **({"description": text} if text else {}),
            }
        )
    return out


def path_parameter(name: str, text: str = "") -> dict:
    note = "Percent-encode a '/' in it as %2F."
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": f"{text} {note}".strip(),
    }


TIMEOUT_REF = {"$ref": "#/components/parameters/ServerTimeout"}


def timeout_parameter() -> dict:
    """The ``X-Server-Timeout`` header every operation takes (handler.py honours it)."""
    return {
        "name": DEADLINE_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": r"^(\d+(\.\d*)?|\.\d+)$", "examples": ["2.5"]},
        "description": f"The call's deadline in seconds (a decimal number above 0; at most {CALL_TIMEOUT:g} are "
        f"honoured, the default). When it passes the answer is 504 with DEADLINE_EXCEEDED; a value that is not "
        "such a number is 400 INVALID_ARGUMENT naming the header.",
    }


def error_responses() -> dict:
    status = {"$ref": f"#/components/schemas/{STATUS}"}
    return {
        "default": {
            "description": "An error: google.rpc.Status as JSON (its code's HTTP status: 400 INVALID_ARGUMENT or "
            "FAILED_PRECONDITION, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND, 409 ABORTED, 429 "
            "RESOURCE_EXHAUSTED, 501 UNIMPLEMENTED, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, else 500); details "
            "hold an ErrorInfo with the reason, and a BadRequest or RetryInfo where they apply.",
            "content": {"application/json": {"schema": status}},
        }
    }


def operation(route: Route, schemas: Schemas, service: ServiceDescriptor) -> dict:
    m = route.method
    assert m is not None
    text = schemas.notes.get(f"{service.full_name}.{m.name}", "") or f"{m.name} (partsim.v1.PartsimService)."
    op: dict = {
        "operationId": m.name,
        "summary": text.split("\n")[0].rstrip(".")[:120],
        "description": f"{text}\n\ngRPC: `{service.full_name}/{m.name}`.",
        "tags": [service.name],
    }
    variables = route.template.variables
    op["parameters"] = [path_parameter(v) for v in variables] + [TIMEOUT_REF]
    out = schemas.ref(m.output_type)
    if m.server_streaming:
        out = {"type": "array", "items": out, "description": "The messages of the gRPC response stream, in order."}
    op["responses"] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": out}}},
        **error_responses(),
    }
    if m.name == "IndexTrack" and m.client_streaming:
        op["requestBody"] = index_track_body(schemas)
        op["parameters"] += [
            {"name": n, "in": "query", "required": False, "schema": {"type": "string"}, "description": d}
            for n, d in INDEX_QUERY
        ]
    elif route.body == "*":
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": schemas.ref(m.input_type)}}}
    elif route.body:
        f = m.input_type.fields_by_name[route.body]
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schemas.field(f)}}}
    else:
        op["parameters"] += query_parameters(m.input_type, set(variables), schemas)
    return op


INDEX_QUERY = [
    ("track_id", "With a raw audio body: the track id."),
    ("title", "With a raw audio body: the title."),
    ("artist", "With a raw audio body: the artist."),
    ("tags", 'With a raw audio body: the tags as a JSON object of strings, e.g. {"genre":"rock"}.'),
    ("mode", "With a raw audio body: EMBED_MODE_FEATURE (feature, the default) or EMBED_MODE_SIGNAL (signal)."),
]


def index_track_body(schemas: Schemas) -> dict:
    header = schemas.ref(_index_header())
    form = {
        "type": "object",
        "properties": {
            "track_id": {"type": "string"},
            "title": {"type": "string"},
            "artist": {"type": "string"},
            "tags": {"type": "string", "description": "A JSON object of strings."},
            "mode": {"type": "string", "description": "EMBED_MODE_FEATURE (feature) or EMBED_MODE_SIGNAL (signal)."},
            "audio": {
                "type": "string",
                "contentMediaType": "application/octet-stream",
                "description": "The audio file.",
            },
        },
        "required": ["track_id", "audio"],
    }
    raw = {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}
    return {
        "required": True,
        "description": "The track: a form with the file in field `audio`, the file itself (fields as query "
        "parameters), or JSON with the header message and the audio as base64 (raw PCM when header.pcmFormat "
        "is set).",
        "content": {
            "multipart/form-data": {"schema": form},
            "audio/*": raw,
            "application/octet-stream": raw,
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"header": header, "audio": {"type": "string", "contentEncoding": "base64"}},
                    "required": ["header", "audio"],
                    "additionalProperties": False,
                }
            },
        },
    }


def _index_header():
    from partsim.v1 import gateway_pb2

    return gateway_pb2.IndexTrackHeader.DESCRIPTOR


def media_paths() -> dict:
    audio_types = {kind: {"schema": {"type": "string", "contentMediaType": kind}} for _, kind in FORMATS.values()}
    ok = {"description": "The file (Range requests are answered with 206).", "content": audio_types}
    track = path_parameter("track_id", "The track id.")
    stem = {
        "get": {
            "operationId": "GetStemFile",
            "summary": "One separated stem of one indexed segment, as a playable file",
            "description": "`file` is `<stem>.wav` or `<stem>.flac`, the stem a catalog part (drums, bass, ...) or the "
            "separator's source name. Built from GetStems (the same auth, role and errors). 16-bit PCM.",
            "tags": ["Media"],
            "parameters": [
                track,
                TIMEOUT_REF,
                {
                    "name": "file",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": r"^.+\.(wav|flac)$"},
                },
                {
                    "name": "seconds",
                    "in": "query",
                    "schema": {"type": "number"},
                    "description": "The segment containing this time.",
                },
                {
                    "name": "segment_index",
                    "in": "query",
                    "schema": {"type": "integer"},
                    "description": "Or the segment by index (default 0).",
                },
            ],
            "responses": {"200": ok, "206": ok, **error_responses()},
        }
    }
    paths = {"/v1/tracks/{track_id}/stems/{file}": stem}
    for ext in FORMATS:
        paths[f"/v1/tracks/{{track_id}}/audio.{ext}"] = {
            "get": {
                "operationId": f"GetAudio{ext.upper()}",
                "summary": f"The indexed audio of a track, clipped, as {ext.upper()}",
                "description": "The audio kept when the track was indexed (needs the gateway's audio store), from "
                "`start` to `end` seconds (both optional). The caller needs the reader role (as GetTrack).",
                "tags": ["Media"],
                "parameters": [
                    track,
                    TIMEOUT_REF,
                    {"name": "start", "in": "query", "schema": {"type": "number", "minimum": 0}},
                    {"name": "end", "in": "query", "schema": {"type": "number", "minimum": 0}},
                ],
                "responses": {"200": ok, "206": ok, **error_responses()},
            }
        }
    return paths


def document(service: ServiceDescriptor, notes: dict[str, str], routes: Iterable[Route] | None = None) -> dict:
    """The OpenAPI 3.1 document of ``service``'s HTTP bindings and the media routes."""
    schemas = Schemas(notes)
    paths: dict[str, dict] = {}
    for route in routes if routes is not None else route_table(service):
        paths.setdefault(route.template.text, {})[route.http_method.lower()] = operation(route, schemas, service)
    paths.update(media_paths())
    schemas.ref(status_pb2.Status.DESCRIPTOR)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "partsim",
            "version": "v1",
            "summary": "Find music by the sound of its individual instrumental parts.",
            "description": (notes.get(service.full_name, "") + "\n\n" + GENERAL).strip(),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {}],
        "tags": [
            {"name": service.name, "description": f"The RPCs of {service.full_name}, transcoded."},
            {"name": "Media", "description": "Playable files for <audio> elements (not RPCs)."},
        ],
        "paths": dict(sorted(paths.items())),
        "components": {
            "parameters": {"ServerTimeout": timeout_parameter()},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`partsim keys create`) or a JWT, as the gRPC `authorization` "
                    "metadata; needed when the gateway's PARTSIM_GATEWAY_AUTH is not `none`. The media routes also "
                    "take it as the `access_token` query parameter.",
                }
            },
            "schemas": dict(sorted(schemas.schemas.items())),
        },
    }


GENERAL = """\
The HTTP/JSON transcoding of the gRPC API (google.api.http annotations of partsim/v1/gateway.proto). Bodies and \
answers follow protobuf's JSON mapping: lowerCamelCase field names (the proto names are accepted too), 64-bit \
integers as strings, bytes as base64, enums by name; answers include fields at their default values. Query \
parameters of GET and DELETE routes name fields by path (`segment.seconds=5`). A call's deadline is 600 s, or \
less when the `X-Server-Timeout` header gives seconds. Errors are google.rpc.Status as JSON with the HTTP status \
of their code."""
