"""What the TLS tests share: dev certificates of two CAs, a searcher that admits only the gateway's client
certificate, and calls over fresh TLS connections (tests/test_security_tls*.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import socket
import ssl
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from partsim.internal.v1 import searcher_pb2, searcher_pb2_grpc
from partsim.services.tls import channel_credentials, open_channel

from .searcher_harness import Searcher
from .util import ROOT

CLIENT_NAME = "partsim-gateway-client"


def _dev_certs_module():
    spec = importlib.util.spec_from_file_location("gen_dev_certs", ROOT / "scripts" / "dev-certs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _dev_certs_module()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """Dev certificates (scripts/dev-certs.py) of the CA the services trust."""
    out = tmp_path_factory.mktemp("tls") / "certs"
    gen.generate(out)
    return out


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory) -> Path:
    """Certificates of another CA, with the very same names."""
    out = tmp_path_factory.mktemp("tls-other") / "certs"
    gen.generate(out)
    return out


def mtls(certs: Path) -> dict[str, str]:
    """A searcher's settings for mTLS that admits the gateway's client certificate alone."""
    return {
        "tls_cert": str(certs / "searcher" / "tls.crt"),
        "tls_key": str(certs / "searcher" / "tls.key"),
        "tls_client_ca": str(certs / "ca.crt"),
        "tls_client_names": CLIENT_NAME,
    }


@pytest.fixture(scope="module")
def mtls_searcher(certs, tmp_path_factory):
    """A searcher that admits the gateway's client certificate alone (mTLS)."""
    s = Searcher(tmp_path_factory.mktemp("searcher") / "data", **mtls(certs))
    yield s
    s.stop()


def creds(ca: Path, who: str | None = None, folder: Path | None = None) -> grpc.ChannelCredentials:
    """Channel credentials trusting ``ca``, presenting the certificate of ``folder/who`` when given."""
    if who is None:
        return channel_credentials(str(ca))
    base = (folder or ca.parent) / who
    return channel_credentials(str(ca), str(base / "tls.crt"), str(base / "tls.key"))


def get_stats(address: str, credentials: grpc.ChannelCredentials | None):
    """GetStats on a fresh channel (its own subchannel pool: a new connection, a new handshake)."""
    with open_channel(address, credentials, [("grpc.use_local_subchannel_pool", 1)]) as ch:
        return searcher_pb2_grpc.SearcherServiceStub(ch).GetStats(searcher_pb2.GetStatsRequest(), timeout=10)


def health(address: str, credentials: grpc.ChannelCredentials | None) -> int:
    with open_channel(address, credentials, [("grpc.use_local_subchannel_pool", 1)]) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def served_certificate(address: str, ca: Path, client: Path) -> str:
    """The SHA-256 of the certificate a new TLS connection to ``address`` is served."""
    host, port = address.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(client / "tls.crt"), str(client / "tls.key"))
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        der = s.getpeercert(binary_form=True)
    assert der
    return hashlib.sha256(der).hexdigest()
