"""Configuration: environment variables, with command-line flags as overrides, read and
validated once at start-up.

Each service declares a dataclass; field ``max_batch`` of service prefix ``PARTSIM_EMBEDDER``
is read from ``PARTSIM_EMBEDDER_MAX_BATCH`` and overridden by ``--max-batch``. Field
metadata ``help`` documents it. The dataclass's ``validate()`` raises
:class:`partsim.errors.InvalidArgument` naming the variable; :func:`load` exits with that
message (status 2) so a misconfigured pod fails fast and says why.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Mapping, TypeVar

from partsim.errors import InvalidArgument

T = TypeVar("T")


def _parse(kind: str, text: str, what: str) -> Any:
    try:
        if kind == "bool":
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(text)
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        return text
    except ValueError:
        raise InvalidArgument(f"{what}: expected {kind}, got {text!r}") from None


def _kind(field: dataclasses.Field) -> str:
    t = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    t = t.replace(" ", "")
    for k in ("bool", "int", "float"):
        if t == k or t.startswith(k + "|") or t.endswith("|" + k):
            return k
    return "str"


def env_name(prefix: str, field: str) -> str:
    return f"{prefix}_{field.upper()}"


def parse(cls: type[T], prefix: str, argv: list[str] | None = None, environ: Mapping[str, str] | None = None,
          prog: str | None = None) -> T:
    """Build ``cls`` from ``environ`` then ``argv``; raises InvalidArgument on a bad value."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    parser = argparse.ArgumentParser(prog=prog, description=cls.__doc__,
                                     epilog=f"Every option can also be set as an environment variable {prefix}_<NAME>.")
    for f in dataclasses.fields(cls):
        kind = _kind(f)
        name = env_name(prefix, f.name)
        if name in environ:
            values[f.name] = _parse(kind, environ[name], name)
        flag = "--" + f.name.replace("_", "-")
        helptext = f.metadata.get("help", "") + f" (env {name})"
        if kind == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=helptext)
    args = parser.parse_args(argv if argv is not None else [])
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name)
        if v is not None:
            values[f.name] = v if isinstance(v, bool) else _parse(_kind(f), v, "--" + f.name.replace("_", "-"))
    cfg = cls(**values)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def load(cls: type[T], prefix: str, argv: list[str] | None = None, prog: str | None = None) -> T:
    """:func:`parse` for a service's ``main``: a bad value exits 2 with one line naming it."""
    try:
        return parse(cls, prefix, argv, prog=prog)
    except InvalidArgument as exc:
        print(f"{prog or prefix.lower()}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def require(cond: bool, prefix: str, field: str, message: str) -> None:
    """For ``validate()``: raise InvalidArgument naming the env variable when ``cond`` is false."""
    if not cond:
        raise InvalidArgument(f"{env_name(prefix, field)} (--{field.replace('_', '-')}): {message}")
