"""Who may call the gateway: bearer tokens (API keys, JWTs), roles, per-key rate limits, the audit log.

* :mod:`.roles` - the three roles and the one table of method -> least role;
* :mod:`.keys` - API keys: the keys file (hashed at rest) that ``partsim keys`` edits and the gateway reads;
* :mod:`.oidc` - JWTs checked against a JWKS file (OIDC setups);
* :mod:`.interceptor` - the gateway's server interceptor that admits or refuses each call;
* :mod:`.audit` - one JSON line per write, delete and keys change (logger ``partsim.audit``).

Nothing heavy is imported here: ``partsim keys`` imports :mod:`.keys` without gRPC.
"""
