"""A keys file that is not what `partsim keys` writes refuses every key (fail closed), with one precise line,
whatever is wrong in it: a revoked key never comes back because the file around it broke."""

from __future__ import annotations

import json
import os

import pytest

from partsim.errors import InvalidArgument
from partsim.services.gateway.auth.keys import KeyRing, KeysFile

from .util import run_cli


@pytest.mark.parametrize("field, value", [("hash", 1), ("revoked", "false"), ("role", None), ("id", ["x"])], ids=str)
def test_a_key_with_a_field_of_the_wrong_type_refuses_every_key(tmp_path, field, value):
    path = tmp_path / "keys.json"
    keys = KeysFile(path)
    live, live_token = keys.create("live", "reader")
    revoked, revoked_token = keys.create("revoked", "admin")
    keys.revoke(revoked.id)
    ring = KeyRing(path, check_every=0)
    assert ring.find(live_token) == live and ring.find(revoked_token) is None

    doc = json.loads(path.read_text())
    doc["keys"].append({**doc["keys"][0], "id": "broken", field: value})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)  # a new inode: the ring reads it again
    for _ in range(3):  # and keeps refusing, not falling back to what it had before
        assert ring.find(live_token) is None and ring.find(revoked_token) is None
    with pytest.raises(InvalidArgument, match="wrong type|not a partsim keys file"):
        keys.load()
    proc = run_cli("keys", "list", "--file", str(path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
