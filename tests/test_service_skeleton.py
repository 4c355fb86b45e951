"""The one service shape: every service is a :class:`Service` (serve, load, stop) configured by a
:class:`ServerConfig`, whose shared server settings are read and checked in one place."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from partsim.errors import InvalidArgument
from partsim.services.config import InternalServerConfig, ServerConfig, parse
from partsim.services.embedder.server import EmbedderServer
from partsim.services.gateway.config import GatewayConfig
from partsim.services.gateway.server import GatewayServer
from partsim.services.searcher.server import SearcherServer
from partsim.services.separator.server import SeparatorServer
from partsim.services.service import Service

from .util import service_configs

SERVERS = {
    "gateway": GatewayServer,
    "embedder": EmbedderServer,
    "searcher": SearcherServer,
    "separator": SeparatorServer,
}
# a value of each shared server setting that its check refuses
BAD = {
    "ADDRESS": "no-port",
    "METRICS_PORT": "70000",
    "GRACE_SECONDS": "-1",
    "MAX_CONNECTION_AGE_SECONDS": "-1",
    "WORKERS": "0",
}
# what the services need besides (so that only the setting under test is wrong)
NEEDED = {"PARTSIM_GATEWAY_DATA_DIR": "/tmp", "PARTSIM_SEARCHER_DATA_DIR": "/tmp"}


@pytest.mark.parametrize("name", SERVERS)
def test_every_service_is_a_service_configured_by_a_server_config(name):
    server, config = SERVERS[name], service_configs()[name]
    assert issubclass(server, Service) and server.name == name and server.config is config
    assert issubclass(config, ServerConfig) and config.prefix == f"PARTSIM_{name.upper()}"
    # the gateway is the public API; the services behind it are internal
    package = "partsim.v1." if name == "gateway" else "partsim.internal.v1."
    assert server.grpc_service.startswith(package)
    parse(config, config.prefix, argv=[], environ=NEEDED)  # the defaults are valid


# the gateway has no MAX_MESSAGE_MB: its message limit follows from its MAX_UPLOAD_MB
SHARED = [(name, field) for name in SERVERS for field in BAD]
SHARED += [(name, "MAX_MESSAGE_MB") for name in SERVERS if issubclass(service_configs()[name], InternalServerConfig)]


@pytest.mark.parametrize(("name", "field"), SHARED)
def test_a_bad_shared_setting_is_refused_naming_the_variable(name, field):
    config = service_configs()[name]
    variable = f"{config.prefix}_{field}"
    unparsable = [] if field == "ADDRESS" else ["garbage"]  # any text is a string: only its check refuses it
    for value in [BAD.get(field, "4096"), *unparsable]:
        with pytest.raises(InvalidArgument, match=variable):
            parse(config, config.prefix, argv=[], environ={**NEEDED, variable: value})


@pytest.mark.parametrize("name", SERVERS)
def test_main_exits_2_naming_a_bad_variable(name, monkeypatch, capsys):
    for key, value in NEEDED.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(f"PARTSIM_{name.upper()}_WORKERS", "0")
    with pytest.raises(SystemExit) as info:
        SERVERS[name].main([])
    assert info.value.code == 2
    assert f"partsim-{name}: configuration error: PARTSIM_{name.upper()}_WORKERS" in capsys.readouterr().err


def test_main_takes_its_flags_from_argv(monkeypatch, capsys):
    monkeypatch.setenv("PARTSIM_SEARCHER_DATA_DIR", "/tmp")
    with pytest.raises(SystemExit) as info:
        SearcherServer.main(["--grace-seconds", "-1"])
    assert info.value.code == 2 and "PARTSIM_SEARCHER_GRACE_SECONDS (--grace-seconds)" in capsys.readouterr().err


def test_a_service_has_no_address_before_it_serves():
    with pytest.raises(RuntimeError, match="not serving yet"):
        _ = GatewayServer(GatewayConfig(data_dir="/tmp")).address


def test_a_gateway_without_backends_listens_not_serving_and_stops_at_once(tmp_path):
    """load() returns at once for the gateway (its backends may start later); stop() ends the search for them."""
    unreachable = "127.0.0.1:1"
    cfg = GatewayConfig(
        address="127.0.0.1:0",
        embedder=unreachable,
        searcher=unreachable,
        data_dir=str(tmp_path),
        metrics_port=-1,
        ingest_workers=0,
    )
    t0 = time.monotonic()
    gateway = GatewayServer(cfg).start()
    try:
        assert time.monotonic() - t0 < 5
        with grpc.insecure_channel(gateway.address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        t0 = time.monotonic()
        gateway.stop(0)
        gateway.stop(0)  # twice: nothing more
        assert time.monotonic() - t0 < 5
