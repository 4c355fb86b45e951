"""A small HTTP client for the tests of the gateway's HTTP/JSON API (urllib: what any client sends)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from google.protobuf import json_format


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    def message(self, cls):
        """The body parsed as ``cls`` by protobuf's JSON mapping (unknown fields refused)."""
        return json_format.ParseDict(self.json(), cls())

    def reason(self) -> str:
        """The ErrorInfo reason of a google.rpc.Status body."""
        return next(d["reason"] for d in self.json()["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))


def http(
    base: str, method: str, path: str, body=None, headers: dict[str, str] | None = None, timeout: float = 300
) -> Answer:
    """``method path`` at ``base`` (``http://host:port/``); ``body``: bytes as they are, else JSON."""
    headers = dict(headers or {})
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(base.rstrip("/") + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body (as a browser's form sends it) and its Content-Type."""
    boundary = "----partsim-test-boundary-7MA4YWxkTrZu0gW"
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, (filename, data) in files.items():
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"
