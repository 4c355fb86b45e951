"""The checks of the gateway's ``AUTH_*`` settings (called by ``GatewayConfig.validate``).

``PARTSIM_GATEWAY_AUTH``: ``none`` (the default: anyone who reaches the port may call anything; for
loopback only), ``keys`` (API keys of ``AUTH_KEYS_FILE``, made by ``partsim keys create``), ``jwt`` (JWTs
signed by a key of ``AUTH_JWKS_FILE`` with ``AUTH_JWT_ISSUER`` and ``AUTH_JWT_AUDIENCE``, the role in the
``AUTH_JWT_ROLE_CLAIM`` claim) or ``keys+jwt`` (either). ``AUTH_RATE_PER_SECOND`` and ``AUTH_RATE_BURST``:
each caller's token bucket (0 calls a second: no limit).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from partsim.errors import PartsimError

from ...config import require

if TYPE_CHECKING:
    from ..config import GatewayConfig

MODES = ("none", "keys", "jwt", "keys+jwt")


def modes(cfg: GatewayConfig) -> set[str]:
    """The token kinds the gateway accepts: a subset of {"keys", "jwt"} (empty: authentication is off)."""
    return set(cfg.auth.split("+")) - {"none"}


def check_auth(cfg: GatewayConfig) -> None:
    p = cfg.prefix
    require(cfg.auth in MODES, p, "auth", f"expected one of {', '.join(MODES)}, got {cfg.auth!r}")
    if "keys" in modes(cfg):
        require(bool(cfg.auth_keys_file), p, "auth_keys_file", "needed when AUTH uses keys (partsim keys create)")
        from .keys import KeysFile

        try:
            KeysFile(cfg.auth_keys_file).load()
        except PartsimError as exc:
            require(False, p, "auth_keys_file", str(exc))
    if "jwt" in modes(cfg):
        require(bool(cfg.auth_jwt_issuer), p, "auth_jwt_issuer", "needed when AUTH uses jwt")
        require(bool(cfg.auth_jwt_audience), p, "auth_jwt_audience", "needed when AUTH uses jwt")
        require(bool(cfg.auth_jwt_role_claim), p, "auth_jwt_role_claim", "needed when AUTH uses jwt")
        require(Path(cfg.auth_jwks_file).is_file(), p, "auth_jwks_file", f"no JWKS file at {cfg.auth_jwks_file!r}")
        try:
            from .oidc import load_jwks

            load_jwks(Path(cfg.auth_jwks_file))
        except ImportError:
            require(False, p, "auth", "jwt needs PyJWT: pip install 'pyjwt[crypto]'")
        except (OSError, ValueError) as exc:
            require(False, p, "auth_jwks_file", f"{cfg.auth_jwks_file} is not a JWKS file: {exc}")
    require(cfg.auth_rate_per_second >= 0, p, "auth_rate_per_second", "must be 0 (no limit) or more")
    require(1 <= cfg.auth_rate_burst <= 1_000_000, p, "auth_rate_burst", "must be within 1..1000000")
