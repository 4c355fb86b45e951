"""Paging of the List RPCs (ListTracks in the searcher, ListIngestJobs in the gateway; AIP-158): one page-size
rule, one opaque token shape, one error for a token the service did not issue.

A page token is URL-safe base64 of a small JSON object naming the position after the page's last item (the
service decides its keys); ``json`` writes floats so they read back bit for bit, so a position is exact.
"""

from __future__ import annotations

import base64
import binascii
import json

from ..errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50  # page_size 0
MAX_PAGE_SIZE = 1000  # a larger page_size is treated as this


def page_size(size: int) -> int:
    """The number of items a page holds: 0 means :data:`DEFAULT_PAGE_SIZE`, at most :data:`MAX_PAGE_SIZE`;
    negative: :class:`InvalidArgument` naming ``page_size``."""
    if size < 0:
        message = (
            f"page_size {size}: must be >= 0 (0 means {DEFAULT_PAGE_SIZE}; above {MAX_PAGE_SIZE}, {MAX_PAGE_SIZE})"
        )
        raise InvalidArgument(message, field_violations=[("page_size", message)])
    return min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(position: dict) -> str:
    """The opaque token of a position (a JSON object)."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def decode_token(token: str, rpc: str, issuer: str) -> dict | None:
    """The position an :func:`encode_token` token names; None for the empty token (the first page). Not such a
    token: :func:`bad_token`. The caller checks the position's keys and types (and raises :func:`bad_token`)."""
    if not token:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (binascii.Error, ValueError, TypeError, UnicodeError):
        raise bad_token(rpc, issuer) from None
    if not isinstance(position, dict):
        raise bad_token(rpc, issuer)
    return position


def bad_token(rpc: str, issuer: str) -> InvalidArgument:
    """INVALID_ARGUMENT, reason ``INVALID_PAGE_TOKEN``, naming ``page_token``: a token ``issuer`` did not issue."""
    message = (
        f"page_token is not one this {issuer} issued; pass the next_page_token of the previous {rpc} response, "
        "or none for the first page"
    )
    return InvalidArgument(message, reason="INVALID_PAGE_TOKEN", field_violations=[("page_token", message)])
