"""HTTP requests to protobuf requests and protobuf answers to JSON, by protobuf's own ``json_format``.

* A route's path variables and (for a route without ``body: "*"``) its query parameters set fields by their
  path (``segment.seconds=5``; the proto name or its lowerCamelCase JSON name; a repeated field by repeating
  the parameter; an enum by name or number; a bool as ``true``/``false``; bytes as base64).
* A body ``"*"`` is the request message in the proto3 JSON mapping (``json_format.ParseDict`` with
  ``ignore_unknown_fields=False``: an unknown field is an error); the path variables are set on top.
* Answers are ``json_format.MessageToDict``: lowerCamelCase field names, int64 as strings, bytes as base64,
  enums by name, fields at their default value included (an empty list, 0, false), unset messages left out.
* Errors are google.rpc.Status as JSON (``{"code": 5, "message": "...", "details": [{"@type": ...}]}``).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2

from partsim.errors import InvalidArgument, PartsimError

from ...status import code_for, http_status, rich_status, status_proto

JSON_TYPE = "application/json"


def bad_request(message: str, reason: str, field: str | None = None) -> InvalidArgument:
    return InvalidArgument(message, reason=reason, field_violations=[(field, message)] if field else ())


def load_json(body: bytes, what: str = "the request body") -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise bad_request(f"{what} is not UTF-8 text", "INVALID_JSON") from None
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"{what} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", "INVALID_JSON"
        ) from None


def field_of(desc: Descriptor, name: str) -> FieldDescriptor | None:
    f = desc.fields_by_name.get(name)
    if f is not None:
        return f
    return next((f for f in desc.fields if f.json_name == name), None)


def scalar(f: FieldDescriptor, text: str, where: str) -> Any:
    """A query or path text as the JSON value ``json_format`` takes for field ``f``."""
    if f.type == FieldDescriptor.TYPE_BOOL:
        low = text.lower()
        if low not in ("true", "false", "1", "0"):
            raise bad_request(f"{where}: expected true or false, got {text!r}", "INVALID_PARAMETER", where)
        return low in ("true", "1")
    if f.type == FieldDescriptor.TYPE_ENUM and text.lstrip("-").isdigit():
        return int(text)
    return text  # strings, bytes (base64), enums by name; numbers as strings (proto3 JSON allows them)


def set_path(tree: dict, desc: Descriptor, path: str, text: str, where: str) -> None:
    """Set ``path`` (dotted field names) in the JSON object ``tree`` of a ``desc`` message to ``text``."""
    names = path.split(".")
    node = tree
    for n, name in enumerate(names):
        f = field_of(desc, name)
        if f is None:
            raise bad_request(f"{where}: {desc.full_name} has no field {name!r}", "UNKNOWN_FIELD", path)
        key = f.json_name
        if n < len(names) - 1:
            if f.message_type is None or f.is_repeated:
                raise bad_request(
                    f"{where}: {'.'.join(names[: n + 1])} is not a message field", "INVALID_PARAMETER", path
                )
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise bad_request(f"{where}: {path} conflicts with the body", "INVALID_PARAMETER", path)
            node, desc = child, f.message_type
            continue
        if f.message_type is not None and not f.message_type.full_name.startswith("google.protobuf."):
            raise bad_request(
                f"{where}: {path} is a message; set its fields ({path}.<field>)", "INVALID_PARAMETER", path
            )
        value = scalar(f, text, where)
        if f.is_repeated:
            node.setdefault(key, []).append(value)
        else:
            if key in node and where.startswith("query"):
                raise bad_request(f"{where}: {path} is given twice", "INVALID_PARAMETER", path)
            node[key] = value


def build_request(route, variables: dict[str, str], query: str, body: bytes | None) -> Message:
    """The request message of ``route``'s RPC from the path ``variables``, the ``query`` string and the
    JSON ``body`` (None or empty: ``{}``)."""
    desc = route.method.input_type
    tree: dict = {}
    if route.body:
        tree = load_json(body) if body and body.strip() else {}
        if route.body != "*":
            body_field = field_of(desc, route.body)
            assert body_field is not None, route.body  # routes.route_table checked it
            tree = {body_field.json_name: tree}
        if not isinstance(tree, dict):
            raise bad_request("the request body must be a JSON object", "INVALID_JSON")
    if query and route.body != "*":
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, errors="strict")
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(f"the query string is malformed: {exc}", "INVALID_PARAMETER") from None
        for name, text in pairs:
            if name == "access_token":
                continue  # a credential (see server.py), not a field
            set_path(tree, desc, name, text, f"query parameter {name}")
    elif query and route.body == "*":
        names = [n for n, _ in parse_qsl(query, keep_blank_values=True) if n != "access_token"]
        if names:
            raise bad_request(
                f"{route.label} takes its fields in the JSON body, not the query string ({', '.join(names)})",
                "INVALID_PARAMETER",
            )
    for var, text in variables.items():
        set_path(tree, desc, var, text, f"path variable {var}")
    return parse_message(tree, desc)


def parse_message(tree: Any, desc: Any) -> Message:
    from google.protobuf import message_factory

    msg = message_factory.GetMessageClass(desc)()
    try:
        json_format.ParseDict(tree, msg, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise bad_request(f"the request does not match {desc.full_name}: {exc}", "INVALID_REQUEST_FIELDS") from None
    return msg


def to_json(message: Message) -> dict:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


# ------------------------------------------------------------------------------------------- errors
def error_status(exc: BaseException) -> status_pb2.Status:
    """The google.rpc.Status of a failed call (as its trailers carried it) or of an error raised here."""
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        status = rich_status(exc)
        if status is None:
            status = status_pb2.Status(code=exc.code().value[0], message=exc.details() or exc.code().name)
        return status
    if isinstance(exc, PartsimError):
        return status_proto(code_for(exc), exc)
    return status_proto(
        grpc.StatusCode.INTERNAL,
        PartsimError("internal error in the HTTP gateway; see the server log", reason="INTERNAL"),
    )


def status_json(status: status_pb2.Status) -> tuple[int, dict]:
    """The HTTP status and JSON body of a google.rpc.Status."""
    body = {"code": status.code, "message": status.message, **json_format.MessageToDict(status)}
    body.setdefault("details", [])
    return http_status(status.code), body


def retry_after(status: status_pb2.Status) -> float | None:
    from google.rpc import error_details_pb2

    for any_ in status.details:
        if any_.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            any_.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    return None
