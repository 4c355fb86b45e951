"""The route table of the HTTP/JSON API, read from the ``google.api.http`` annotations of the public proto.

Nothing here names an RPC: :func:`route_table` walks ``partsim.v1.PartsimService`` in the generated descriptor
and turns each method's :class:`google.api.HttpRule` into a :class:`Route` (its ``additional_bindings`` too).
A path template follows google/api/http.proto::

    Template = "/" Segments [ Verb ] ;     Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;   Verb = ":" LITERAL ;

Matching works on the raw (still percent-encoded) path split at "/", so a track id holding "/" travels as
``%2F`` inside one segment; each variable's text is percent-decoded once matched (a ``**`` variable keeps
its "/" separators).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from partsim.errors import InvalidArgument

HTTP_METHODS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Segment:
    """One template segment: a literal, ``*`` (one segment) or ``**`` (the rest); ``var``: the field path a
    variable binds (set on each segment the variable spans)."""

    literal: str | None  # None: a wildcard
    rest: bool = False  # "**"
    var: str | None = None


@dataclass(frozen=True)
class Template:
    text: str
    segments: tuple[Segment, ...]
    verb: str = ""

    @property
    def variables(self) -> list[str]:
        return list(dict.fromkeys(s.var for s in self.segments if s.var))

    def match(self, path: str) -> dict[str, str] | None:
        """The variables of ``path`` (raw, before percent-decoding, no query) decoded; None: no match."""
        if self.verb:
            if not path.endswith(":" + self.verb):
                return None
            path = path[: -len(self.verb) - 1]
        if not path.startswith("/"):
            return None
        parts = path[1:].split("/")
        bound: dict[str, list[str]] = {}
        i = 0
        for n, seg in enumerate(self.segments):
            if seg.rest:
                tail = len(self.segments) - n - 1
                if len(parts) - i < tail:
                    return None
                taken = parts[i : len(parts) - tail]
                i = len(parts) - tail
                if seg.var:
                    bound.setdefault(seg.var, []).extend(taken)
                continue
            if i >= len(parts):
                return None
            text = parts[i]
            i += 1
            if seg.literal is not None:
                if text != seg.literal:
                    return None
            elif not text:
                return None  # a variable is never empty
            if seg.var:
                bound.setdefault(seg.var, []).append(text)
        if i != len(parts):
            return None
        return {var: "/".join(unquote(p, errors="strict") for p in texts) for var, texts in bound.items()}


def parse_template(text: str) -> Template:
    """A path template of an HttpRule; ValueError when it is not one."""
    if not text.startswith("/"):
        raise ValueError(f"a path template starts with '/': {text!r}")
    body, verb = text, ""
    last = text.rsplit("/", 1)[-1]
    if ":" in last and "}" not in last.split(":")[-1]:
        body, verb = text.rsplit(":", 1)
    segments: list[Segment] = []
    var: str | None = None
    var_segments = 0
    for raw in body[1:].split("/"):
        piece = raw
        if piece.startswith("{"):
            if var is not None:
                raise ValueError(f"nested variable in {text!r}")
            inner = piece[1:]
            closes = inner.endswith("}")
            inner = inner[:-1] if closes else inner
            var, _, pattern = inner.partition("=")
            var_segments = 0
            piece = pattern or "*"
            if closes:
                segments.append(_segment(piece, var, text))
                var = None
                continue
            segments.append(_segment(piece, var, text))
            var_segments = 1
            continue
        if var is not None:
            closes = piece.endswith("}")
            segments.append(_segment(piece[:-1] if closes else piece, var, text))
            var_segments += 1
            if closes:
                var = None
            continue
        segments.append(_segment(piece, None, text))
    if var is not None:
        raise ValueError(f"unclosed variable in {text!r}")
    if sum(s.rest for s in segments) > 1:
        raise ValueError(f"more than one '**' in {text!r}")
    return Template(text, tuple(segments), verb)


def _segment(piece: str, var: str | None, text: str) -> Segment:
    if not piece or "{" in piece or "}" in piece:
        raise ValueError(f"bad segment {piece!r} in {text!r}")
    if piece == "*":
        return Segment(None, var=var)
    if piece == "**":
        return Segment(None, rest=True, var=var)
    return Segment(piece, var=var)


@dataclass(frozen=True)
class Route:
    """One HTTP binding of an RPC (or of a media endpoint: ``method`` None, ``name`` its handler)."""

    http_method: str  # "GET", "POST", ...
    template: Template
    name: str  # the RPC's name, e.g. "SearchMix"
    method: MethodDescriptor | None = None
    body: str = ""  # "*": the whole request; a field name; "": none (query parameters)
    response_body: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        """The route's name in metrics: the method and the template, e.g. ``GET /v1/tracks/{track_id}``."""
        return f"{self.http_method} {self.template.text}"


def rule_routes(method: MethodDescriptor, rule: http_pb2.HttpRule) -> list[Route]:
    """The routes of one HttpRule of ``method`` (with its additional bindings)."""
    kind = rule.WhichOneof("pattern")
    out = []
    if kind in HTTP_METHODS:
        out.append(
            Route(kind.upper(), parse_template(getattr(rule, kind)), method.name, method, rule.body, rule.response_body)
        )
    elif kind == "custom":
        out.append(Route(rule.custom.kind.upper(), parse_template(rule.custom.path), method.name, method, rule.body))
    for extra in rule.additional_bindings:
        out.extend(rule_routes(method, extra))
    return out


def route_table(service: ServiceDescriptor) -> list[Route]:
    """Every HTTP binding of ``service``'s methods, from their ``google.api.http`` options.

    Raises:
        InvalidArgument: a method has no binding (each public RPC must answer over HTTP), or a template
            names a field its request lacks.
    """
    routes: list[Route] = []
    for method in service.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        found = rule_routes(method, rule)
        if not found:
            raise InvalidArgument(f"{service.full_name}.{method.name} has no google.api.http option")
        for route in found:
            for var in route.template.variables:
                check_field_path(method.input_type, var, f"{method.name}: {route.template.text}")
        routes.extend(found)
    return routes


def check_field_path(message, path: str, what: str) -> None:
    desc = message
    for name in path.split("."):
        f = desc.fields_by_name.get(name) if desc is not None else None
        if f is None:
            raise InvalidArgument(f"{what}: {desc.full_name if desc else '?'} has no field {name!r}")
        desc = f.message_type


@dataclass
class Match:
    route: Route
    variables: dict[str, str]


def find(routes: Iterable[Route], http_method: str, path: str) -> tuple[Match | None, list[str]]:
    """The route of ``http_method`` ``path`` with its variables, or None and the methods the path allows
    (empty: no route has this path: 404; else 405 with ``Allow``). A literal route wins over a variable one."""
    allowed: list[str] = []
    best: Match | None = None
    best_literals = -1
    for route in routes:
        try:
            variables = route.template.match(path)
        except UnicodeDecodeError:
            raise InvalidArgument(f"the path {path!r} holds a percent-encoding that is not UTF-8") from None
        if variables is None:
            continue
        if route.http_method != http_method:
            if route.http_method not in allowed:
                allowed.append(route.http_method)
            continue
        literals = sum(s.literal is not None for s in route.template.segments)
        if literals > best_literals:
            best, best_literals = Match(route, variables), literals
    return best, ([] if best else allowed)
