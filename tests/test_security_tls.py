"""mTLS inside (issue 12), against a real searcher on loopback: it admits only the gateway's client
certificate; certificate rotation without a restart; TLS settings checked naming the variable.
The gateway, the client's options and the dev certificates: tests/test_security_tls_gateway.py."""

from __future__ import annotations

import hashlib
import shutil
import ssl
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from partsim.errors import InvalidArgument
from partsim.internal.v1 import searcher_pb2, searcher_pb2_grpc
from partsim.services.searcher.config import SearcherConfig
from partsim.services.tls import channel_credentials, open_channel

from .searcher_harness import Searcher
from .tls_harness import CLIENT_NAME, code_of, creds, gen, get_stats, health, mtls, served_certificate

pytestmark = pytest.mark.timeout(120)
Code = grpc.StatusCode


# ----------------------------------------------------------------------------------------- mTLS inside


def test_a_caller_without_a_client_certificate_fails_the_handshake(mtls_searcher, certs):
    assert code_of(lambda: get_stats(mtls_searcher.rt.address, creds(certs / "ca.crt"))) == Code.UNAVAILABLE
    assert code_of(lambda: health(mtls_searcher.rt.address, creds(certs / "ca.crt"))) == Code.UNAVAILABLE


def test_a_plaintext_caller_fails(mtls_searcher):
    assert code_of(lambda: get_stats(mtls_searcher.rt.address, None)) == Code.UNAVAILABLE


def test_the_gateways_client_certificate_is_admitted(mtls_searcher, certs):
    assert get_stats(mtls_searcher.rt.address, creds(certs / "ca.crt", "gateway-client")).tracks == 0


def test_a_certificate_of_another_ca_fails_the_handshake(mtls_searcher, certs, other_ca):
    client = other_ca / "gateway-client"  # the same name, signed by another CA
    wrong = channel_credentials(str(certs / "ca.crt"), str(client / "tls.crt"), str(client / "tls.key"))
    assert code_of(lambda: get_stats(mtls_searcher.rt.address, wrong)) == Code.UNAVAILABLE


def test_another_certificate_of_the_ca_reaches_health_only(mtls_searcher, certs):
    own = creds(certs / "ca.crt", "searcher")  # what the service's own probe presents
    assert health(mtls_searcher.rt.address, own) == health_pb2.HealthCheckResponse.SERVING
    assert code_of(lambda: get_stats(mtls_searcher.rt.address, own)) == Code.PERMISSION_DENIED


def test_a_certificate_without_the_client_auth_usage_fails_the_handshake(mtls_searcher, certs, tmp_path):
    """BoringSSL checks the purpose: a server-only certificate of the CA is no client certificate."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca, ca_key = gen.load_or_make_ca(certs, False, 1)
    cert, key = _leaf_with_usages(ca, ca_key, [ExtendedKeyUsageOID.SERVER_AUTH])
    (tmp_path / "tls.crt").write_bytes(gen._pem(cert))
    (tmp_path / "tls.key").write_bytes(gen._key_pem(key))
    wrong = channel_credentials(str(certs / "ca.crt"), str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
    assert code_of(lambda: get_stats(mtls_searcher.rt.address, wrong)) == Code.UNAVAILABLE


def _leaf_with_usages(ca, ca_key, usages):
    """A certificate of the gateway's client name, signed by the CA, with these extended key usages only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = gen._key()
    cert = (
        gen._builder(gen._name(CLIENT_NAME), ca.subject, key, 1)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(CLIENT_NAME)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


# ------------------------------------------------------------------------------------------- rotation


@pytest.fixture
def rotating(certs, tmp_path):
    """A searcher with mTLS on a copy of the certificates (the test replaces them), that copy, and the
    SHA-256 of the certificate it serves at first."""
    folder = tmp_path / "certs"
    shutil.copytree(certs, folder)
    s = Searcher(tmp_path / "data", **mtls(folder))
    yield s.rt.address, folder, served_certificate(s.rt.address, folder / "ca.crt", folder / "gateway-client")
    s.stop()


@pytest.mark.slow
def test_a_rotated_certificate_is_served_to_new_connections_without_a_restart(rotating):
    address, folder, before = rotating
    with open_channel(address, creds(folder / "ca.crt", "gateway-client")) as kept:
        stub = searcher_pb2_grpc.SearcherServiceStub(kept)
        stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=10)
        gen.generate(folder)  # reissue every leaf (the same CA), as a cert-manager renewal does
        after = served_certificate(address, folder / "ca.crt", folder / "gateway-client")
        assert after != before
        assert after == hashlib.sha256(_der(folder / "searcher" / "tls.crt")).hexdigest()
        stub.GetStats(searcher_pb2.GetStatsRequest(), timeout=10)  # an open connection keeps working
    assert get_stats(address, creds(folder / "ca.crt", "gateway-client")).tracks == 0
    # a rotation to a new CA: new callers trust the new one
    gen.generate(folder, new_ca=True)
    assert get_stats(address, creds(folder / "ca.crt", "gateway-client")).tracks == 0


@pytest.mark.slow
def test_a_rotation_that_does_not_load_keeps_the_previous_certificate(rotating):
    address, folder, before = rotating
    (folder / "searcher" / "tls.key").write_bytes((folder / "embedder" / "tls.key").read_bytes())  # not its key
    assert served_certificate(address, folder / "ca.crt", folder / "gateway-client") == before
    assert get_stats(address, creds(folder / "ca.crt", "gateway-client")).tracks == 0


def _der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


# --------------------------------------------------------------------------------------- configuration


def test_tls_settings_are_checked_naming_the_variable(certs, tmp_path):
    cases = [
        ({"tls_cert": str(certs / "searcher" / "tls.crt")}, "PARTSIM_SEARCHER_TLS_KEY"),
        ({"tls_key": str(certs / "searcher" / "tls.key")}, "PARTSIM_SEARCHER_TLS_CERT"),
        ({"tls_client_ca": str(certs / "ca.crt")}, "PARTSIM_SEARCHER_TLS_CLIENT_CA"),
        ({**mtls(certs), "tls_client_ca": ""}, "PARTSIM_SEARCHER_TLS_CLIENT_NAMES"),
        ({**mtls(certs), "tls_cert": str(tmp_path / "missing.crt")}, "PARTSIM_SEARCHER_TLS_CERT"),
    ]
    for fields, variable in cases:
        with pytest.raises(InvalidArgument, match=variable):
            SearcherConfig(data_dir=str(tmp_path), **fields).validate()


def test_a_key_that_is_not_the_certificates_stops_the_start_naming_both(certs, tmp_path):
    fields = {**mtls(certs), "tls_key": str(certs / "embedder" / "tls.key")}
    with pytest.raises(InvalidArgument, match="PARTSIM_SEARCHER_TLS_CERT, PARTSIM_SEARCHER_TLS_KEY"):
        Searcher(tmp_path / "data", **fields)
