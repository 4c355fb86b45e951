"""API keys: the keys file that ``partsim keys`` edits and the gateway reads.

A token is ``psk_<id>_<secret>``: ``id`` (12 hex digits) names the key in lists, logs and rate limits
and is not secret; ``secret`` is 32 random bytes (URL-safe base64). The file keeps, per key, its id,
name, role, creation time, revoked flag and ``sha256:<hex>`` of the whole token, never the token.

Why a plain SHA-256 and not scrypt or bcrypt: those slow hashes protect low-entropy passwords against
guessing once the file leaks. A 256-bit random secret cannot be guessed whatever the hash, so a slow
hash would buy nothing and cost every request milliseconds of CPU; a SHA-256 preimage of a 256-bit
secret is as hard as guessing it. Digests are compared in constant time.

The file is JSON, replaced atomically (write a temporary file beside it, fsync, rename) with mode 0600,
and edits hold a lock file beside it so two ``partsim keys create`` do not lose one another's key.
:class:`KeyRing` (the gateway's view) re-reads it when it changes, looking at most once per
``check_every`` seconds, so a revoked key is refused within about a second without a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from partsim.errors import InvalidArgument, NotFound

from .audit import utc_now
from .roles import ROLES
from .watch import WatchedFile

PREFIX = "psk_"
FORMAT_VERSION = 1
MAX_NAME = 64


@dataclass
class ApiKey:
    id: str
    name: str
    role: str
    created_at: str  # UTC, ISO 8601
    revoked: bool
    hash: str  # "sha256:<hex>" of the whole token

    def public(self) -> dict:
        """What ``partsim keys list`` shows: everything but the hash."""
        d = asdict(self)
        d.pop("hash")
        return d


def digest(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def key_id_of(token: str) -> str | None:
    """The key id a token claims (None: not an API key's shape)."""
    if not token.startswith(PREFIX):
        return None
    kid, sep, secret = token[len(PREFIX) :].partition("_")
    return kid if sep and kid and secret else None


def _parse(text: str, path: Path) -> dict[str, ApiKey]:
    where = f"keys file {path}"
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION or not isinstance(doc.get("keys"), list):
            raise ValueError(f"expected {{'version': {FORMAT_VERSION}, 'keys': [...]}}")
        keys = [ApiKey(**k) for k in doc["keys"]]
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"{where} is not a partsim keys file: {exc}") from None
    for k in keys:
        typed = all(isinstance(v, str) for v in (k.id, k.name, k.role, k.created_at, k.hash))
        if not typed or not isinstance(k.revoked, bool):
            raise InvalidArgument(f"{where}: key {k.id!r} has a field of the wrong type")
        if k.role not in ROLES or not k.hash.startswith("sha256:"):
            raise InvalidArgument(f"{where}: key {k.id!r} has an unknown role or hash")
    return {k.id: k for k in keys}


class KeysFile:
    """The keys file, for ``partsim keys``: create, list, revoke (each edit atomic and locked)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[str, ApiKey]:
        """The keys by id. Raises NotFound (no file) or InvalidArgument (not a keys file)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            raise NotFound(f"keys file {self.path} does not exist (partsim keys create makes it)") from None
        except OSError as exc:
            raise InvalidArgument(f"keys file {self.path} cannot be read: {exc.strerror}") from None
        return _parse(text, self.path)

    def list(self) -> list[ApiKey]:
        return sorted(self.load().values(), key=lambda k: (k.created_at, k.id))

    def create(self, name: str, role: str) -> tuple[ApiKey, str]:
        """A new key of ``role`` named ``name``; returns it and its token (shown once, kept nowhere)."""
        if role not in ROLES:
            raise InvalidArgument(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise InvalidArgument(f"a key name is 1..{MAX_NAME} printable characters, got {name!r}")
        with self._locked():
            keys = self.load() if self.path.exists() else {}
            kid = secrets.token_hex(6)
            while kid in keys:
                kid = secrets.token_hex(6)
            token = f"{PREFIX}{kid}_{secrets.token_urlsafe(32)}"
            key = ApiKey(id=kid, name=name, role=role, created_at=utc_now("seconds"), revoked=False, hash=digest(token))
            keys[kid] = key
            self._save(keys)
        return key, token

    def revoke(self, kid: str) -> tuple[ApiKey, bool]:
        """Mark key ``kid`` revoked; returns it and whether it was live until now. Raises NotFound."""
        with self._locked():
            keys = self.load()
            key = keys.get(kid)
            if key is None:
                raise NotFound(f"no key with id {kid!r} in {self.path} (partsim keys list shows the ids)")
            was_live = not key.revoked
            key.revoked = True
            if was_live:
                self._save(keys)
        return key, was_live

    @contextlib.contextmanager
    def _locked(self):
        if not self.path.parent.is_dir():
            raise NotFound(f"folder {self.path.parent} of the keys file does not exist")
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _save(self, keys: dict[str, ApiKey]) -> None:
        doc = {"version": FORMAT_VERSION, "keys": [asdict(k) for k in keys.values()]}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class KeyRing:
    """The gateway's view of the keys file: :meth:`find` the live key of a token.

    The file is re-read when it changes (looked at most once per ``check_every`` seconds); while it is
    missing or broken no key is valid (fail closed). ``on_reload(keys)`` is called after each reading.
    """

    def __init__(self, path: str | Path, check_every: float = 1.0, on_reload=None):
        def read(p: Path) -> dict[str, ApiKey]:
            keys = KeysFile(p).load()
            if on_reload is not None:
                on_reload(keys)
            return keys

        self.keys: WatchedFile[dict[str, ApiKey]] = WatchedFile(path, read, {}, "API keys", check_every)

    def find(self, token: str) -> ApiKey | None:
        """The live (not revoked) key whose token this is; None otherwise."""
        kid = key_id_of(token)
        if kid is None:
            return None
        key = self.keys.get().get(kid)
        if key is None or not hmac.compare_digest(key.hash, digest(token)):
            return None
        return None if key.revoked else key
