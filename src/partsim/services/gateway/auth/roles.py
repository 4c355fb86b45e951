"""The roles and the one table of which role each gateway method needs.

Roles are ordered: ``reader`` < ``writer`` < ``admin``; a role may call a method whose least role it
reaches. A method missing from :data:`METHOD_ROLES` is denied to everyone (a test checks the table
against the service descriptor, so a new RPC cannot ship unguarded).
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("reader", "writer", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}

READ = "reader"
WRITE = "writer"
ADMIN = "admin"

SERVICE = "partsim.v1.PartsimService"  # the public API, whose methods the table below covers

# partsim.v1.PartsimService: method -> the least role that may call it.
METHOD_ROLES: dict[str, str] = {
    "EmbedParts": READ,
    "SearchMix": READ,
    "SearchStems": READ,
    "GetStems": READ,
    "GetTrack": READ,
    "ListTracks": READ,
    "GetCatalogStats": READ,
    "GetIngestJob": READ,
    "ListIngestJobs": READ,
    "IndexTrack": WRITE,
    "SubmitIngestJob": WRITE,
    "RetryIngestJob": WRITE,
    "DeleteTrack": ADMIN,
}

# Services every caller may reach without a token: health checks (load balancers, kubelets) and reflection.
OPEN_SERVICES = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)


def allows(role: str, method: str) -> bool:
    """Whether ``role`` may call the gateway method ``method`` (its short name, e.g. ``DeleteTrack``)."""
    need = METHOD_ROLES.get(method)
    return need is not None and role in _RANK and _RANK[role] >= _RANK[need]


def audited(method: str) -> bool:
    """Whether a call of ``method`` gets an audit line: every write and delete (all but the reader's methods)."""
    return METHOD_ROLES.get(method, ADMIN) != READ


def best_role(claimed: object) -> str:
    """The highest known role in a claim (one role, or a list of them); '' when none is known."""
    names = [claimed] if isinstance(claimed, str) else claimed if isinstance(claimed, list) else []
    known = [n for n in names if isinstance(n, str) and n in _RANK]
    return max(known, key=_RANK.__getitem__, default="")


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``id`` is the rate-limit and audit key (an API key's id, ``jwt:<sub>``, ``anonymous``)."""

    id: str
    name: str
    role: str
    kind: str  # "key", "jwt" or "anonymous" (authentication is off)


ANONYMOUS = Principal(id="anonymous", name="anonymous", role=ADMIN, kind="anonymous")
