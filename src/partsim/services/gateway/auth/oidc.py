"""JWTs checked against a JWKS file (OIDC setups): the identity provider signs, the gateway verifies.

A token is accepted when its signature verifies with a key of the JWKS file (chosen by the ``kid``
header, or the only key), with an asymmetric algorithm that key allows (RS*, PS*, ES*, EdDSA: never
``none`` nor HS*, whose "secret" would be the public key), and it carries ``exp``, ``sub``, the
configured issuer (``iss``) and audience (``aud``). Its role is the configured claim: one role or a
list (the highest known counts). The JWKS file is re-read when it changes (key rotation), looked at
most once per ``check_every`` seconds; a missing or broken file accepts no token until it is fixed.

PyJWT (``pyjwt[crypto]``) is imported here only, so a gateway without JWTs does not need it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt

from .roles import Principal, best_role
from .watch import WatchedFile

ALGORITHMS_BY_KTY = {
    "RSA": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
    "EC": ["ES256", "ES384", "ES512"],
    "OKP": ["EdDSA"],
}
LEEWAY_SECONDS = 10.0  # clock skew tolerated on exp/nbf/iat


def load_jwks(path: Path) -> dict[str, tuple[Any, list[str]]]:
    """The JWKS file's public signing keys: kid -> (public key, algorithms it may verify). Raises ValueError."""
    doc = json.loads(path.read_text())  # a JSONDecodeError is a ValueError
    keys: dict[str, tuple[Any, list[str]]] = {}
    for n, data in enumerate(doc.get("keys", []) if isinstance(doc, dict) else []):
        if not isinstance(data, dict):
            continue
        allowed = ALGORITHMS_BY_KTY.get(str(data.get("kty")), [])
        if data.get("use", "sig") != "sig" or not allowed or "d" in data:
            continue  # not a public signing key of an asymmetric type: never used
        alg = data.get("alg")
        if alg is not None:
            if alg not in allowed:
                continue
            allowed = [alg]
        try:
            key = jwt.PyJWK(data, algorithm=allowed[0]).key
        except jwt.PyJWTError as exc:
            raise ValueError(f"key {n}: {exc}") from None
        keys[str(data.get("kid", f"#{n}"))] = (key, allowed)
    if not keys:
        raise ValueError("it holds no public signing key (RSA, EC or OKP)")
    return keys


class JwtVerifier:
    """``verify(token)``: the caller a valid JWT names, or None."""

    def __init__(self, jwks_path: str | Path, issuer: str, audience: str, role_claim: str, check_every: float = 1.0):
        self.issuer = issuer
        self.audience = audience
        self.role_claim = role_claim
        self.jwks: WatchedFile[dict[str, tuple[Any, list[str]]]] = WatchedFile(
            jwks_path, load_jwks, {}, "JWTs", check_every
        )

    def verify(self, token: str) -> Principal | None:
        keys = self.jwks.get()
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            if kid is None and len(keys) == 1:
                kid = next(iter(keys))
            key, algorithms = keys[str(kid)]
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, KeyError, ValueError, TypeError):
            return None
        sub = str(claims["sub"])
        return Principal(id=f"jwt:{sub}", name=sub, role=best_role(claims.get(self.role_claim)), kind="jwt")
