"""HTTPS on the gateway's HTTP port (issue 13): with its TLS certificate (the dev certificates of
scripts/dev-certs.py) the HTTP/JSON API and web app answer HTTPS that verifies against the CA; plain HTTP to
that port fails at once instead of hanging; a renewed certificate is served to the next connection without a
restart (http/tls.py); and a gateway that requires client certificates refuses the HTTP port, naming both
variables (no cluster: a gateway whose backends are unreachable, as tests/test_http_api.py)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
from pathlib import Path

import pytest

from partsim.cluster import Cluster
from partsim.errors import InvalidArgument
from partsim.services.config import parse
from partsim.services.gateway.config import PREFIX, GatewayConfig
from partsim.services.gateway.server import GatewayServer

from .tls_harness import served_certificate

pytestmark = pytest.mark.timeout(120)
UNREACHABLE = "127.0.0.1:1"


def replace_file(src: Path, dst: Path) -> None:
    """``dst`` gets ``src``'s bytes at once (a temporary file renamed over it, as a Secret's files change)."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)


@pytest.fixture
def https_gateway(certs, tmp_path):
    """A gateway serving TLS on gRPC and HTTP with its dev certificate, copied to files a test may renew."""
    files = tmp_path / "tls"
    files.mkdir()
    for name in ("tls.crt", "tls.key"):
        replace_file(certs / "gateway" / name, files / name)
    cfg = GatewayConfig(
        address="127.0.0.1:0",
        embedder=UNREACHABLE,
        searcher=UNREACHABLE,
        data_dir=str(tmp_path / "data"),
        metrics_port=-1,
        ingest_workers=0,
        grace_seconds=0,
        tls_cert=str(files / "tls.crt"),
        tls_key=str(files / "tls.key"),
        http_port=0,
    )
    gw = GatewayServer(cfg).start()
    yield gw, files
    gw.stop(0)


def https_get(url: str, path: str, ca: Path, host: str = "localhost") -> tuple[int, dict, bytes]:
    """GET ``path`` over HTTPS at ``url``'s port trusting ``ca`` alone, naming ``host`` (the certificate's SAN)."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    conn = http.client.HTTPSConnection(host, port, context=ssl.create_default_context(cafile=str(ca)), timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_https_with_the_dev_ca_verifies_and_answers(https_gateway, certs, other_ca):
    gw, _ = https_gateway
    assert gw.http_url.startswith("https://127.0.0.1:")
    status, headers, body = https_get(gw.http_url, "/v1/openapi.json", certs / "ca.crt")
    assert status == 200 and json.loads(body)["openapi"].startswith("3.1")
    status, _, body = https_get(gw.http_url, "/", certs / "ca.crt", host="127.0.0.1")  # the IP SAN too
    assert status == 200 and b"MixQuery" in body
    status, _, body = https_get(gw.http_url, "/v1/tracks", certs / "ca.crt")  # through the bridge: gRPC's answer
    assert status == 503 and json.loads(body)["message"]
    with pytest.raises(ssl.SSLCertVerificationError):  # another CA (with the very same names) does not verify it
        https_get(gw.http_url, "/", other_ca / "ca.crt")


def test_plain_http_to_the_https_port_fails_at_once(https_gateway, certs):
    gw, _ = https_gateway
    port = int(gw.http_url.rstrip("/").rsplit(":", 1)[1])
    t = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine)):
            conn.request("GET", "/v1/openapi.json")
            conn.getresponse()
    finally:
        conn.close()
    assert time.monotonic() - t < 5, "plain HTTP to the HTTPS port hung"
    # nothing in plaintext comes back on that port, and it goes on serving HTTPS
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert not raw.recv(100).startswith(b"HTTP/")
        except ConnectionResetError:
            pass
    assert https_get(gw.http_url, "/v1/openapi.json", certs / "ca.crt")[0] == 200


def test_a_renewed_certificate_is_served_without_a_restart(https_gateway, certs, other_ca):
    gw, files = https_gateway
    address = gw.http_url.removeprefix("https://").rstrip("/")
    before = served_certificate(address, certs / "ca.crt", certs / "gateway-client")
    for name in ("tls.crt", "tls.key"):  # renewed: a certificate of another CA over the same paths
        replace_file(other_ca / "gateway" / name, files / name)
    after = served_certificate(address, other_ca / "ca.crt", other_ca / "gateway-client")  # the next connection
    assert after != before
    assert https_get(gw.http_url, "/v1/openapi.json", other_ca / "ca.crt")[0] == 200
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(gw.http_url, "/v1/openapi.json", certs / "ca.crt")  # the old CA no longer verifies it
    assert gw.http.server.tls.reloads == 1


def test_a_half_written_certificate_keeps_the_previous_one(https_gateway, certs):
    gw, files = https_gateway
    (files / "tls.crt.tmp").write_bytes((certs / "gateway" / "tls.crt").read_bytes()[:300])
    os.replace(files / "tls.crt.tmp", files / "tls.crt")
    assert https_get(gw.http_url, "/v1/openapi.json", certs / "ca.crt")[0] == 200
    assert gw.http.server.tls.reloads == 0


def test_client_certificates_and_the_http_port_are_refused_naming_both_variables(certs, tmp_path):
    tls = {
        "PARTSIM_GATEWAY_TLS_CERT": str(certs / "gateway" / "tls.crt"),
        "PARTSIM_GATEWAY_TLS_KEY": str(certs / "gateway" / "tls.key"),
        "PARTSIM_GATEWAY_TLS_CLIENT_CA": str(certs / "ca.crt"),
        "PARTSIM_GATEWAY_DATA_DIR": str(tmp_path),
    }
    with pytest.raises(InvalidArgument) as info:
        parse(GatewayConfig, PREFIX, [], environ={**tls, "PARTSIM_GATEWAY_HTTP_PORT": "8080"})
    message = str(info.value)
    assert message.startswith("PARTSIM_GATEWAY_HTTP_PORT (--http-port): ")
    assert "PARTSIM_GATEWAY_TLS_CLIENT_CA" in message and "PARTSIM_GATEWAY_HTTP_PORT=-1" in message
    assert parse(GatewayConfig, PREFIX, [], environ={**tls, "PARTSIM_GATEWAY_HTTP_PORT": "-1"}).tls_client_ca
    # partsim up turns HTTP on: with client certificates required it refuses before starting anything
    with pytest.raises(InvalidArgument, match="PARTSIM_GATEWAY_TLS_CLIENT_CA"):
        Cluster(tmp_path / "up", gateway="127.0.0.1:0", extra_env=tls).check()
    Cluster(tmp_path / "up", gateway="127.0.0.1:0", extra_env=tls, http="").check()  # --http off: accepted
