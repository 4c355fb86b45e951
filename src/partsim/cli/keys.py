"""``partsim keys create|list|revoke``: the gateway's API keys (its ``AUTH_KEYS_FILE``).

``create`` prints the new token once on stdout (the file keeps only its SHA-256); give it to the
caller as ``--token`` or ``PARTSIM_TOKEN``. ``list`` shows ids, roles, names and states, never
secrets. ``revoke ID`` refuses the key within about a second at every gateway reading the file,
without a restart. Each change writes an audit line (JSON, logger ``partsim.audit``) on stderr.
The file is ``--file``, else ``$PARTSIM_GATEWAY_AUTH_KEYS_FILE``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from ..errors import InvalidArgument

ENV_FILE = "PARTSIM_GATEWAY_AUTH_KEYS_FILE"


def register(sub) -> None:
    p = sub.add_parser("keys", help="create, list and revoke the gateway's API keys")
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    def with_file(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--file", metavar="PATH", help=f"the keys file (default ${ENV_FILE})")
        return parser

    c = with_file(keys.add_parser("create", help="make a key and print its token once"))
    c.add_argument("--role", required=True, metavar="ROLE", help="reader, writer or admin")
    c.add_argument("--name", required=True, metavar="NAME", help="who or what holds it, e.g. ci-indexer")
    c.set_defaults(handler=_cmd_create)
    ls = with_file(keys.add_parser("list", help="the keys: id, role, state, created, name (never secrets)"))
    ls.add_argument("--json", action="store_true", help="one JSON object a key")
    ls.set_defaults(handler=_cmd_list)
    r = with_file(keys.add_parser("revoke", help="refuse a key from now on (within about a second)"))
    r.add_argument("key_id", metavar="ID", help="the key's id (partsim keys list)")
    r.set_defaults(handler=_cmd_revoke)


def _keys_file(args: argparse.Namespace):
    from ..services.gateway.auth.keys import KeysFile

    path = args.file or os.environ.get(ENV_FILE, "")
    if not path:
        raise InvalidArgument(f"no keys file: give --file PATH or set {ENV_FILE}")
    return KeysFile(path)


def _operator() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


def _audit(event: str, key, path) -> None:
    from ..services.gateway.auth.audit import audit, audit_to_stderr

    with audit_to_stderr():
        audit(event, key_id=key.id, name=key.name, role=key.role, by=_operator(), file=str(path))


def _cmd_create(args: argparse.Namespace) -> int:
    f = _keys_file(args)
    key, token = f.create(args.name, args.role)
    _audit("keys.create", key, f.path)
    print(f"created key {key.id} ({key.role}, {key.name!r}); its token, shown only now:", file=sys.stderr)
    print(token, flush=True)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    for key in _keys_file(args).list():
        if args.json:
            print(json.dumps(key.public()))
        else:
            state = "revoked" if key.revoked else "active"
            print(f"{key.id}  {key.role:<6}  {state:<7}  {key.created_at}  {key.name}")
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    f = _keys_file(args)
    key, was_live = f.revoke(args.key_id)
    if was_live:
        _audit("keys.revoke", key, f.path)
    print(f"key {key.id} ({key.role}, {key.name!r}) {'revoked' if was_live else 'was already revoked'}")
    return 0
