"""TLS everywhere, mTLS inside (issue 12), against real services on loopback: a searcher that admits only
the gateway's client certificate, a gateway serving TLS that dials its backends with that certificate,
certificate rotation without a restart, the dev-certificate script, and the client's and CLI's
connection options (``--tls-ca``, ``--token`` and their environment variables)."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import socket
import ssl
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from partsim.cli import main
from partsim.client import Connection, PartsimClient
from partsim.errors import InvalidArgument, Unavailable
from partsim.services.searcher.config import SearcherConfig
from partsim.services.tls import channel_credentials, open_channel
from partsim.v1 import gateway_pb2, searcher_pb2, searcher_pb2_grpc

from .searcher_harness import Searcher
from .util import ROOT, run_script

pytestmark = pytest.mark.timeout(120)
Code = grpc.StatusCode
CLIENT_NAME = "partsim-gateway-client"


def _dev_certs_module():
    spec = importlib.util.spec_from_file_location("gen_dev_certs", ROOT / "scripts" / "gen-dev-certs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _dev_certs_module()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """Dev certificates (scripts/gen-dev-certs.py) of the CA the services trust."""
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
def searcher(certs, tmp_path_factory):
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


# ----------------------------------------------------------------------------------------- mTLS inside


def test_a_caller_without_a_client_certificate_fails_the_handshake(searcher, certs):
    assert code_of(lambda: get_stats(searcher.rt.address, creds(certs / "ca.crt"))) == Code.UNAVAILABLE
    assert code_of(lambda: health(searcher.rt.address, creds(certs / "ca.crt"))) == Code.UNAVAILABLE


def test_a_plaintext_caller_fails(searcher):
    assert code_of(lambda: get_stats(searcher.rt.address, None)) == Code.UNAVAILABLE


def test_the_gateways_client_certificate_is_admitted(searcher, certs):
    assert get_stats(searcher.rt.address, creds(certs / "ca.crt", "gateway-client")).tracks == 0


def test_a_certificate_of_another_ca_fails_the_handshake(searcher, certs, other_ca):
    client = other_ca / "gateway-client"  # the same name, signed by another CA
    wrong = channel_credentials(str(certs / "ca.crt"), str(client / "tls.crt"), str(client / "tls.key"))
    assert code_of(lambda: get_stats(searcher.rt.address, wrong)) == Code.UNAVAILABLE


def test_another_certificate_of_the_ca_reaches_health_only(searcher, certs):
    own = creds(certs / "ca.crt", "searcher")  # what the service's own probe presents
    assert health(searcher.rt.address, own) == health_pb2.HealthCheckResponse.SERVING
    assert code_of(lambda: get_stats(searcher.rt.address, own)) == Code.PERMISSION_DENIED


def test_a_certificate_without_the_client_auth_usage_fails_the_handshake(searcher, certs, tmp_path):
    """BoringSSL checks the purpose: a server-only certificate of the CA is no client certificate."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca, ca_key = gen.load_or_make_ca(certs, False, 1)
    cert, key = _leaf_with_usages(ca, ca_key, [ExtendedKeyUsageOID.SERVER_AUTH])
    (tmp_path / "tls.crt").write_bytes(gen._pem(cert))
    (tmp_path / "tls.key").write_bytes(gen._key_pem(key))
    wrong = channel_credentials(str(certs / "ca.crt"), str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
    assert code_of(lambda: get_stats(searcher.rt.address, wrong)) == Code.UNAVAILABLE


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


# ---------------------------------------------------------------------------- the gateway and the client


@pytest.fixture(scope="module")
def gateway(certs, searcher, tmp_path_factory):
    """An embedder and the searcher with mTLS, and a gateway serving TLS that dials them with its client certificate."""
    from partsim.services.embedder.config import EmbedderConfig
    from partsim.services.embedder.server import EmbedderServer
    from partsim.services.gateway.config import GatewayConfig
    from partsim.services.gateway.server import GatewayServer

    embedder_tls = {
        **mtls(certs),
        "tls_cert": str(certs / "embedder/tls.crt"),
        "tls_key": str(certs / "embedder/tls.key"),
    }
    embedder = EmbedderServer(
        EmbedderConfig(address="127.0.0.1:0", metrics_port=-1, grace_seconds=0, workers=4, **embedder_tls)
    ).start()
    client = certs / "gateway-client"
    cfg = GatewayConfig(
        address="127.0.0.1:0",
        metrics_port=-1,
        embedder=f"localhost:{embedder.port}",
        searcher=f"localhost:{searcher.rt.port}",
        data_dir=str(tmp_path_factory.mktemp("gateway")),
        ingest_workers=0,
        grace_seconds=0,
        tls_cert=str(certs / "gateway" / "tls.crt"),
        tls_key=str(certs / "gateway" / "tls.key"),
        backend_tls_ca=str(certs / "ca.crt"),
        backend_tls_cert=str(client / "tls.crt"),
        backend_tls_key=str(client / "tls.key"),
    )
    gw = GatewayServer(cfg).start()
    yield gw
    gw.stop(0)
    embedder.stop(0)


@pytest.mark.slow
def test_the_gateway_serves_tls_and_reaches_its_backends_with_its_client_certificate(gateway, certs):
    with PartsimClient(gateway.address, timeout=20, tls_ca=str(certs / "ca.crt"), token="") as c:
        c.wait_ready(60)  # SERVING: both backends answered over mTLS
        assert c.stats().stats.tracks == 0  # a call the gateway passes on to the searcher


@pytest.mark.slow
def test_a_plaintext_client_of_the_tls_gateway_fails(gateway, monkeypatch):
    monkeypatch.delenv("PARTSIM_TLS_CA", raising=False)
    with PartsimClient(gateway.address, timeout=10) as c, pytest.raises(Unavailable):
        c.stats()


@pytest.mark.slow
def test_partsim_health_with_tls_ca(gateway, searcher, certs, capsys, monkeypatch):
    ca = str(certs / "ca.crt")
    assert main(["health", gateway.address, "--tls-ca", ca, "--timeout", "10"]) == 0
    assert "SERVING" in capsys.readouterr().out
    monkeypatch.setenv("PARTSIM_TLS_CA", ca)  # the environment variable instead of the flag
    assert main(["health", gateway.address, "--timeout", "10"]) == 0
    monkeypatch.delenv("PARTSIM_TLS_CA")
    assert main(["health", gateway.address, "--timeout", "3"]) == 1
    assert "unreachable" in capsys.readouterr().err
    # an mTLS service: its own certificate as the probe's
    own = certs / "searcher"
    argv = [
        "health",
        searcher.rt.address,
        "--tls-ca",
        ca,
        "--tls-cert",
        str(own / "tls.crt"),
        "--tls-key",
        str(own / "tls.key"),
    ]
    assert main([*argv, "--timeout", "10"]) == 0
    assert main(["health", searcher.rt.address, "--tls-ca", ca, "--timeout", "3"]) == 1
    assert "TLS handshake failed" in capsys.readouterr().err


def test_a_client_certificate_without_a_ca_is_a_user_error(capsys, certs):
    own = certs / "searcher"
    code = main(["health", "127.0.0.1:1", "--tls-cert", str(own / "tls.crt"), "--tls-key", str(own / "tls.key")])
    assert code == 2 and "need --tls-ca" in capsys.readouterr().err
    code = main(["health", "127.0.0.1:1", "--tls-ca", str(certs / "missing.crt")])
    err = capsys.readouterr().err
    assert code == 2 and "--tls-ca (PARTSIM_TLS_CA)" in err and "missing.crt" in err


# ---------------------------------------------------------------------------------------- the token


class _Recorder:
    """A real gRPC server answering GetCatalogStats and recording each call's metadata."""

    def __init__(self, certs: Path | None):
        self.seen: list[dict[str, str]] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(2))

        def stats(request, context):
            self.seen.append(dict(context.invocation_metadata()))
            return gateway_pb2.GetCatalogStatsResponse()

        handler = grpc.unary_unary_rpc_method_handler(
            stats,
            request_deserializer=gateway_pb2.GetCatalogStatsRequest.FromString,
            response_serializer=gateway_pb2.GetCatalogStatsResponse.SerializeToString,
        )
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("partsim.v1.PartsimService", {"GetCatalogStats": handler})]
        )
        if certs is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            pair = ((certs / "gateway/tls.key").read_bytes(), (certs / "gateway/tls.crt").read_bytes())
            self.port = self.server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([pair]))
        self.server.start()


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_the_token_is_sent_as_a_bearer_authorization_on_every_call(tls, certs, monkeypatch):
    rec = _Recorder(certs if tls else None)
    try:
        monkeypatch.setenv("PARTSIM_TOKEN", "from-env")
        monkeypatch.delenv("PARTSIM_TLS_CA", raising=False)
        ca = str(certs / "ca.crt") if tls else ""
        with PartsimClient(f"localhost:{rec.port}", tls_ca=ca) as c:
            c.stats()
            c.stats()
        with PartsimClient(f"localhost:{rec.port}", tls_ca=ca, token="given") as c:
            c.stats()
        assert [m.get("authorization") for m in rec.seen] == ["Bearer from-env"] * 2 + ["Bearer given"]
    finally:
        rec.server.stop(0)


def test_connection_options_fall_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("PARTSIM_TLS_CA", "/env/ca.crt")
    monkeypatch.setenv("PARTSIM_TOKEN", "t")
    monkeypatch.delenv("PARTSIM_TLS_CERT", raising=False)
    monkeypatch.delenv("PARTSIM_TLS_KEY", raising=False)
    assert Connection().resolved() == Connection("/env/ca.crt", "t", "", "")
    assert Connection(tls_ca="", token="x").resolved() == Connection("", "x", "", "")  # given: even when empty
    assert Connection(tls_ca="").metadata() == (("authorization", "Bearer t"),)


def test_every_command_that_calls_a_server_takes_tls_ca_and_token():
    import argparse

    from partsim.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("index", "search-mix", "search-stems", "health", "demo", "up", "separate"):
        options = {o for a in sub.choices[command]._actions for o in a.option_strings}
        assert {"--tls-ca", "--token"} <= options, command
    for command in ("health", "separate"):  # internal services: a client certificate for mTLS
        options = {o for a in sub.choices[command]._actions for o in a.option_strings}
        assert {"--tls-cert", "--tls-key"} <= options, command


# --------------------------------------------------------------------------------- dev certificates


@pytest.mark.slow
def test_the_dev_certificate_script_writes_a_ca_and_certificates_chained_to_it(tmp_path):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    out = tmp_path / "certs"
    proc = run_script("gen-dev-certs.py", str(out), "--namespace", "music")
    assert proc.returncode == 0, proc.stderr
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for name in ("gateway", "embedder", "searcher", "separator", "gateway-client"):
        folder = out / name
        cert = x509.load_pem_x509_certificate((folder / "tls.crt").read_bytes())
        cert.verify_directly_issued_by(ca)  # raises unless signed by the CA
        assert (folder / "ca.crt").read_bytes() == (out / "ca.crt").read_bytes()
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        dns = set(sans.get_values_for_type(x509.DNSName))
        if name == "gateway-client":
            assert dns == {CLIENT_NAME} and usages == {ExtendedKeyUsageOID.CLIENT_AUTH}
            continue
        assert {"localhost", name, f"partsim-{name}", f"partsim-{name}.music.svc.cluster.local"} <= dns
        assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
        assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert gen_check(folder) is None
    assert (out / "ca.key").stat().st_mode & 0o077 == 0, "the CA key is private"
    # a rerun reissues the leaves under the same CA; --new-ca replaces it
    first = (out / "searcher" / "tls.crt").read_bytes()
    assert run_script("gen-dev-certs.py", str(out)).returncode == 0
    assert (out / "ca.crt").read_bytes() == ca.public_bytes(gen.serialization.Encoding.PEM)
    assert (out / "searcher" / "tls.crt").read_bytes() != first
    assert run_script("gen-dev-certs.py", str(out), "--new-ca").returncode == 0
    assert (out / "ca.crt").read_bytes() != ca.public_bytes(gen.serialization.Encoding.PEM)


def gen_check(folder: Path) -> str | None:
    from partsim.services.tls import check_files

    return check_files(str(folder / "tls.crt"), str(folder / "tls.key"), str(folder / "ca.crt"))


def test_compose_serves_tls_from_the_dev_certificates_and_admits_only_the_gateway_inside(tmp_path):
    import yaml

    services = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())["services"]
    gen.generate(tmp_path / "certs")
    for name in ("gateway", "embedder", "searcher", "separator"):
        s, prefix = services[name], f"PARTSIM_{name.upper()}_"
        env = {k.removeprefix(prefix).lower(): str(v) for k, v in s["environment"].items()}
        binds = [str(v).split(":") for v in s["volumes"] if str(v).startswith("./certs/")]
        assert binds and all(len(b) == 3 and b[2] == "ro" for b in binds), f"{name}: read-only binds of deploy/certs"
        mounted = {target: tmp_path / "certs" / src.removeprefix("./certs/") for src, target, _ in binds}

        def source(path: str, mounted=mounted) -> Path:
            """The dev certificate file that the container's ``path`` is."""
            return mounted[str(Path(path).parent)] / Path(path).name

        assert gen_check(source(env["tls_cert"]).parent) is None and source(env["tls_key"]).is_file(), name
        test = s["healthcheck"]["test"]
        assert source(test[test.index("--tls-ca") + 1]).name == "ca.crt", name
        if name == "gateway":
            assert "tls_client_ca" not in env  # callers present tokens, not certificates
            assert source(env["backend_tls_cert"]).parent.name == "gateway-client"
            assert source(env["backend_tls_key"]).is_file() and source(env["backend_tls_ca"]).name == "ca.crt"
        else:
            assert env["tls_client_names"] == CLIENT_NAME and source(env["tls_client_ca"]).name == "ca.crt", name
            own = source(test[test.index("--tls-cert") + 1]).parent
            assert own.name == name and source(test[test.index("--tls-key") + 1]).is_file(), name
