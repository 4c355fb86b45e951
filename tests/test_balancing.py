"""Client-side load balancing and connection ageing, with real embedder servers on loopback.

In Kubernetes the gateway reaches the embedder, searcher and separator through headless Services
(``dns:///partsim-embedder:50052`` resolves to every ready pod). These tests give the gateway's own
:func:`partsim.services.gateway.backends.channel` a target that resolves to two real embedders
(``ipv4:ADDR1,ADDR2``) and count, from each server's ``grpc_server_handled_total``, where the calls
went. ``pick_first`` is the negative control: everything lands on one server.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import HealthServicer
from prometheus_client import CollectorRegistry

from partsim.errors import InvalidArgument
from partsim.internal.v1 import embedder_pb2, embedder_pb2_grpc
from partsim.services.config import parse
from partsim.services.embedder.config import EmbedderConfig
from partsim.services.embedder.server import EmbedderServer
from partsim.services.gateway.backends import channel
from partsim.services.gateway.config import PREFIX as GW_PREFIX
from partsim.services.gateway.config import GatewayConfig

from .audio import make_audio, pcm

CALLS = 12
SEARCHER = "partsim.internal.v1.SearcherService"


def handled(srv) -> float:
    return (
        srv.rt.registry.get_sample_value(
            "grpc_server_handled_total",
            {
                "grpc_type": "unary",
                "grpc_service": "partsim.internal.v1.EmbedderService",
                "grpc_method": "Embed",
                "grpc_code": "OK",
            },
        )
        or 0.0
    )


def start_embedder(**kw):
    cfg = EmbedderConfig(address="127.0.0.1:0", metrics_port=-1, max_batch=4, max_wait_ms=1, grace_seconds=1, **kw)
    return EmbedderServer(cfg, CollectorRegistry()).start()


@pytest.fixture(scope="module")
def embedders():
    servers = [start_embedder(), start_embedder()]
    yield servers
    for s in servers:
        s.stop(1)


def spread(embedders, lb_policy: str, settle: float = 0.3) -> list[float]:
    before = [handled(s) for s in embedders]
    target = "ipv4:" + ",".join(s.address for s in embedders)
    ch = channel(target, 16 << 20, ["partsim.internal.v1.EmbedderService"], lb_policy)
    try:
        grpc.channel_ready_future(ch).result(timeout=10)
        time.sleep(settle)  # every address connected, so the count shows the policy, not connect order
        stub = embedder_pb2_grpc.EmbedderServiceStub(ch)
        audio = pcm(make_audio(1.0, seed=3))
        for _ in range(CALLS):
            stub.Embed(embedder_pb2.EmbedRequest(audio=audio, segment_seconds=1.0), timeout=60)
    finally:
        ch.close()
    return [handled(s) - b for s, b in zip(embedders, before)]


@pytest.mark.slow
def test_round_robin_spreads_calls_over_every_address(embedders):
    counts = spread(embedders, "round_robin")
    assert sum(counts) == CALLS
    assert min(counts) >= CALLS // 2 - 1, f"round_robin should alternate, got {counts}"


@pytest.mark.slow
def test_round_robin_skips_an_address_whose_health_is_not_serving(embedders):
    """Client-side health checking (the channel's healthCheckConfig): a replica that says NOT_SERVING (still
    loading, or stopping within its grace) gets no calls; once SERVING again it gets its share."""
    embedders[0].rt.set_serving(False)
    try:
        assert spread(embedders, "round_robin", settle=1.0) == [0, CALLS]
    finally:
        embedders[0].rt.set_serving(True)
    assert min(spread(embedders, "round_robin", settle=1.0)) >= CALLS // 2 - 1


def test_a_call_answered_unavailable_is_sent_again_large_requests_included():
    """The retry policy covers every method of the backend's service (here a searcher write) and requests of
    any size up to the message limit (gRPC keeps only 256 KiB of a request for a retry unless told more)."""
    attempts: list[int] = []

    def upsert(request: bytes, context: grpc.ServicerContext) -> bytes:
        attempts.append(len(request))
        if len(attempts) % 2:
            context.abort(grpc.StatusCode.UNAVAILABLE, "this replica is going away")
        return b""

    class Handler(grpc.GenericRpcHandler):
        def service(self, details):
            if details.method == f"/{SEARCHER}/UpsertTrack":
                return grpc.unary_unary_rpc_method_handler(upsert)
            return None

    server = grpc.server(ThreadPoolExecutor(4), options=[("grpc.max_receive_message_length", 16 << 20)])
    server.add_generic_rpc_handlers([Handler()])
    health = HealthServicer(experimental_non_blocking=True)
    health.set(SEARCHER, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ch = channel(f"127.0.0.1:{port}", 16 << 20, [SEARCHER])
    try:
        call = ch.unary_unary(f"/{SEARCHER}/UpsertTrack")
        for size in (1000, 4 << 20):
            attempts.clear()
            call(b"x" * size, timeout=30)
            assert attempts == [size, size]
    finally:
        ch.close()
        server.stop(0)


def test_pick_first_pins_every_call_to_one_server(embedders):
    counts = spread(embedders, "pick_first")
    assert sorted(counts) == [0, CALLS], counts


def test_dns_targets_as_in_kubernetes_resolve_and_serve(embedders):
    """The k8s ConfigMap form of a target (dns:///NAME:PORT) goes through gRPC's DNS resolver."""
    port = embedders[0].address.rsplit(":", 1)[1]
    ch = channel(f"dns:///localhost:{port}", 16 << 20, ["partsim.internal.v1.EmbedderService"])
    try:
        resp = embedder_pb2_grpc.EmbedderServiceStub(ch).Embed(
            embedder_pb2.EmbedRequest(audio=pcm(make_audio(1.0, seed=4)), segment_seconds=1.0), timeout=60
        )
        assert len(resp.segments) == 1
    finally:
        ch.close()


def test_gateway_lb_policy_is_validated():
    assert parse(GatewayConfig, GW_PREFIX, environ={"PARTSIM_GATEWAY_DATA_DIR": "/tmp"}).lb_policy == "round_robin"
    with pytest.raises(InvalidArgument, match="PARTSIM_GATEWAY_LB_POLICY"):
        parse(
            GatewayConfig,
            GW_PREFIX,
            environ={"PARTSIM_GATEWAY_DATA_DIR": "/tmp", "PARTSIM_GATEWAY_LB_POLICY": "least_request"},
        )
    with pytest.raises(InvalidArgument, match="PARTSIM_EMBEDDER_MAX_CONNECTION_AGE_SECONDS"):
        parse(EmbedderConfig, "PARTSIM_EMBEDDER", environ={"PARTSIM_EMBEDDER_MAX_CONNECTION_AGE_SECONDS": "-1"})


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:50053",
        "searcher:50053",
        "[::1]:50053",
        "dns:///partsim-searcher:50053",
        "ipv4:127.0.0.1:50053,127.0.0.1:50063",
        "ipv6:[::1]:50053,[::1]:50063",
        "unix:/run/partsim/searcher.sock",
    ],
)
def test_gateway_backend_targets_are_grpc_targets(target):
    env = {"PARTSIM_GATEWAY_DATA_DIR": "/tmp", "PARTSIM_GATEWAY_SEARCHER": target, "PARTSIM_GATEWAY_EMBEDDER": target}
    cfg = parse(GatewayConfig, GW_PREFIX, environ=env)
    assert cfg.searcher == cfg.embedder == target


@pytest.mark.parametrize(
    "name, target, message",
    [
        ("SEARCHER", "127.0.0.1:50053,127.0.0.1:50063", "needs gRPC's ipv4: .*ipv4:127.0.0.1:50053,127.0.0.1:50063"),
        ("SEARCHER", "ipv4:localhost:50053", "'localhost:50053' in the ipv4: list is not address:port"),
        ("SEARCHER", "ipv4:127.0.0.1:50053,127.0.0.1", "'127.0.0.1' in the ipv4: list"),
        ("EMBEDDER", "embedder", "'embedder' is not host:port"),
        ("EMBEDDER", "dns:///embedder:http", "port 'http' is not a number"),
        ("SEPARATOR", "ipv6:127.0.0.1:50054", "not an IPv6 address:port"),
    ],
)
def test_a_backend_target_that_is_not_one_names_the_variable(name, target, message):
    env = {"PARTSIM_GATEWAY_DATA_DIR": "/tmp", f"PARTSIM_GATEWAY_{name}": target}
    with pytest.raises(InvalidArgument, match=f"PARTSIM_GATEWAY_{name}.*{message}"):
        parse(GatewayConfig, GW_PREFIX, environ=env)


@pytest.mark.slow
def test_max_connection_age_closes_idle_connections():
    """With a 1-s maximum age the server sends GOAWAY; the client's channel leaves READY (and would
    re-resolve its target on the next call). Without it the connection stays up."""
    aged, plain = start_embedder(max_connection_age_seconds=1.0), start_embedder()
    try:
        states = {}
        channels = {}
        for name, srv in (("aged", aged), ("plain", plain)):
            ch = grpc.insecure_channel(srv.address)
            channels[name] = ch
            seen = states[name] = []
            ch.subscribe(seen.append, try_to_connect=True)
            grpc.channel_ready_future(ch).result(timeout=10)
            seen.clear()
        time.sleep(3.0)
        assert (
            grpc.ChannelConnectivity.IDLE in states["aged"]
            or grpc.ChannelConnectivity.TRANSIENT_FAILURE in states["aged"]
        ), states["aged"]
        assert states["plain"] == [] or set(states["plain"]) == {grpc.ChannelConnectivity.READY}, states["plain"]
        for ch in channels.values():
            ch.close()
    finally:
        aged.stop(1)
        plain.stop(1)


def test_process_and_serving_metrics_are_exported(embedders):
    reg = embedders[0].rt.registry
    assert reg.get_sample_value("partsim_health_serving") == 1.0
    assert reg.get_sample_value("process_resident_memory_bytes") > 0
    assert reg.get_sample_value("process_cpu_seconds_total") > 0
