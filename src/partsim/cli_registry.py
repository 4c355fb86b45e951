"""A registry the CLI modules share: ``@command("name")`` files a handler under ``HANDLERS``."""

from __future__ import annotations

from typing import Callable

HANDLERS: dict[tuple[str, None], Callable] = {}


def command(name: str):
    def deco(fn):
        HANDLERS[(name, None)] = fn
        return fn
    return deco
