"""TLS at the gateway (issue 12): a gateway serving TLS that dials its backends with its client certificate,
the client's and CLI's connection options (``--tls-ca``, ``--token`` and their environment variables) and the
dev-certificate script, against real services on loopback."""

from __future__ import annotations

import os
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from partsim.cli import main
from partsim.client import Connection, PartsimClient
from partsim.errors import Unavailable
from partsim.v1 import gateway_pb2

from .tls_harness import CLIENT_NAME, gen, mtls
from .util import ROOT, run_script

pytestmark = pytest.mark.timeout(120)
Code = grpc.StatusCode
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


# ---------------------------------------------------------------------------- the gateway and the client


@pytest.fixture(scope="module")
def embedder(certs):
    """An embedder with mTLS that admits the gateway's client certificate alone."""
    from partsim.services.embedder.config import EmbedderConfig
    from partsim.services.embedder.server import EmbedderServer

    embedder_tls = {
        **mtls(certs),
        "tls_cert": str(certs / "embedder/tls.crt"),
        "tls_key": str(certs / "embedder/tls.key"),
    }
    server = EmbedderServer(
        EmbedderConfig(address="127.0.0.1:0", metrics_port=-1, grace_seconds=0, workers=4, **embedder_tls)
    ).start()
    yield server
    server.stop(0)


def tls_gateway(certs: Path, searcher, embedder, data_dir: Path, client: Path):
    """A gateway serving TLS that dials the backends presenting ``client``/tls.crt (and .key)."""
    from partsim.services.gateway.config import GatewayConfig
    from partsim.services.gateway.server import GatewayServer

    cfg = GatewayConfig(
        address="127.0.0.1:0",
        metrics_port=-1,
        embedder=f"localhost:{embedder.port}",
        searcher=f"localhost:{searcher.rt.port}",
        data_dir=str(data_dir),
        ingest_workers=0,
        grace_seconds=0,
        tls_cert=str(certs / "gateway" / "tls.crt"),
        tls_key=str(certs / "gateway" / "tls.key"),
        backend_tls_ca=str(certs / "ca.crt"),
        backend_tls_cert=str(client / "tls.crt"),
        backend_tls_key=str(client / "tls.key"),
    )
    return GatewayServer(cfg).start()


@pytest.fixture(scope="module")
def gateway(certs, mtls_searcher, embedder, tmp_path_factory):
    """An embedder and the searcher with mTLS, and a gateway serving TLS that dials them with its client certificate."""
    gw = tls_gateway(certs, mtls_searcher, embedder, tmp_path_factory.mktemp("gateway"), certs / "gateway-client")
    yield gw
    gw.stop(0)


@pytest.mark.slow
def test_the_gateway_serves_tls_and_reaches_its_backends_with_its_client_certificate(gateway, certs):
    with PartsimClient(gateway.address, timeout=20, tls_ca=str(certs / "ca.crt"), token="") as c:
        c.wait_ready(60)  # SERVING: both backends answered over mTLS
        assert c.stats().tracks == 0  # a call the gateway passes on to the searcher


@pytest.mark.slow
def test_a_plaintext_client_of_the_tls_gateway_fails(gateway, monkeypatch):
    monkeypatch.delenv("PARTSIM_TLS_CA", raising=False)
    with PartsimClient(gateway.address, timeout=10) as c, pytest.raises(Unavailable):
        c.stats()


@pytest.mark.slow
def test_partsim_health_with_tls_ca(gateway, mtls_searcher, certs, capsys, monkeypatch):
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
        mtls_searcher.rt.address,
        "--tls-ca",
        ca,
        "--tls-cert",
        str(own / "tls.crt"),
        "--tls-key",
        str(own / "tls.key"),
    ]
    assert main([*argv, "--timeout", "10"]) == 0
    assert main(["health", mtls_searcher.rt.address, "--tls-ca", ca, "--timeout", "3"]) == 1
    assert "TLS handshake failed" in capsys.readouterr().err


def test_a_client_certificate_without_a_ca_is_a_user_error(capsys, certs):
    own = certs / "searcher"
    code = main(["health", "127.0.0.1:1", "--tls-cert", str(own / "tls.crt"), "--tls-key", str(own / "tls.key")])
    assert code == 2 and "need --tls-ca" in capsys.readouterr().err
    code = main(["health", "127.0.0.1:1", "--tls-ca", str(certs / "missing.crt")])
    err = capsys.readouterr().err
    assert code == 2 and "--tls-ca (PARTSIM_TLS_CA)" in err and "missing.crt" in err


# ------------------------------------------------------------------ a renewed backend client certificate


def replace_file(src: Path, dst: Path, data: bytes | None = None) -> None:
    """``dst`` gets ``src``'s bytes (or ``data``) at once: a temporary file renamed over it, as cert-manager's
    symlink swap replaces a Secret's files."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(src.read_bytes() if data is None else data)
    os.replace(tmp, dst)


def searcher_status(c: PartsimClient, want: int, timeout: float = 10) -> int:
    """The gateway's health of its searcher, asked until it is ``want`` or ``timeout`` passed."""
    stub = health_pb2_grpc.HealthStub(c.channel)
    deadline, status = time.monotonic() + timeout, -1
    while time.monotonic() < deadline and status != want:
        request = health_pb2.HealthCheckRequest(service="partsim.v1.PartsimService/searcher")
        try:
            status = stub.Check(request, timeout=5).status
        except grpc.RpcError as exc:  # NOT_FOUND until the gateway's first check of its searcher
            assert exc.code() == Code.NOT_FOUND
        time.sleep(0.2)
    return status


@pytest.fixture
def client_files(tmp_path) -> Path:
    (tmp_path / "client").mkdir()
    return tmp_path / "client"


@pytest.mark.slow
def test_a_renewed_backend_client_certificate_is_used_without_a_restart(
    certs, other_ca, mtls_searcher, embedder, client_files, tmp_path
):
    for name in ("tls.crt", "tls.key"):  # a client certificate of another CA: the backends refuse it
        replace_file(other_ca / "gateway-client" / name, client_files / name)
    gw = tls_gateway(certs, mtls_searcher, embedder, tmp_path / "gw", client_files)
    try:
        with PartsimClient(gw.address, timeout=10, tls_ca=str(certs / "ca.crt"), token="") as c:
            assert searcher_status(c, NOT_SERVING) == NOT_SERVING
            for name in ("tls.crt", "tls.key"):  # renewed: the right one over the same paths
                replace_file(certs / "gateway-client" / name, client_files / name)
            c.wait_ready(10)  # the gateway, the embedder and the searcher: SERVING, no restart
            assert searcher_status(c, SERVING, 1) == SERVING
            assert c.stats().tracks == 0  # GetCatalogStats passes through to the searcher
        assert gw.servicer.backends.tls.reloads == 1
    finally:
        gw.stop(0)


@pytest.mark.slow
def test_a_half_written_client_certificate_keeps_the_previous_one(
    certs, mtls_searcher, embedder, client_files, tmp_path, caplog
):
    for name in ("tls.crt", "tls.key"):
        replace_file(certs / "gateway-client" / name, client_files / name)
    gw = tls_gateway(certs, mtls_searcher, embedder, tmp_path / "gw", client_files)
    try:
        with PartsimClient(gw.address, timeout=10, tls_ca=str(certs / "ca.crt"), token="") as c:
            c.wait_ready(20)
            half = (certs / "gateway-client" / "tls.crt").read_bytes()[:300]
            replace_file(client_files / "tls.crt", client_files / "tls.crt", half)
            time.sleep(2.5)  # two checks of the files at least
            assert searcher_status(c, SERVING, 1) == SERVING
            assert c.stats().tracks == 0
        assert gw.servicer.backends.tls.reloads == 0
        refused = [r for r in caplog.records if "do not load" in r.getMessage()]
        assert len(refused) == 1 and "PARTSIM_GATEWAY_BACKEND_TLS" in refused[0].getMessage()
    finally:
        gw.stop(0)


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
    for command in ("index", "search-mix", "search-stems", "stats", "health", "demo", "up", "separate"):
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
    proc = run_script("dev-certs.py", str(out), "--namespace", "music")
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
    assert run_script("dev-certs.py", str(out)).returncode == 0
    assert (out / "ca.crt").read_bytes() == ca.public_bytes(gen.serialization.Encoding.PEM)
    assert (out / "searcher" / "tls.crt").read_bytes() != first
    assert run_script("dev-certs.py", str(out), "--new-ca").returncode == 0
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
