"""Identity at the gateway (issue 12): API keys and JWTs, roles, rate limits, the audit log, ``partsim keys``.

A real gateway on loopback with unreachable backends: refusals happen before any backend is asked, and an
admitted call ends in UNAVAILABLE (or INVALID_ARGUMENT), never UNAUTHENTICATED or PERMISSION_DENIED.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import stat
import time

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf import message_factory
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from partsim.cli import main as partsim
from partsim.errors import InvalidArgument
from partsim.services.gateway.auth.keys import KeysFile
from partsim.services.gateway.auth.roles import METHOD_ROLES, allows
from partsim.services.gateway.config import GatewayConfig
from partsim.services.gateway.server import GatewayServer
from partsim.v1 import gateway_pb2, gateway_pb2_grpc

from .util import run_cli, scrape_metrics

UNREACHABLE = "127.0.0.1:1"
ISSUER, AUDIENCE = "https://idp.example", "partsim-gateway"
DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["PartsimService"]


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def gateway_config(tmp, **auth) -> GatewayConfig:
    return GatewayConfig(
        address="127.0.0.1:0",
        embedder=UNREACHABLE,
        searcher=UNREACHABLE,
        data_dir=str(tmp),
        metrics_port=0,
        ingest_workers=0,
        **auth,
    )


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    """The identity provider: a signing key, and the JWKS file of its public key (kid "k1")."""
    key = rsa_key()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    path = tmp_path_factory.mktemp("idp") / "jwks.json"
    path.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    return key, path


def id_token(key, kid="k1", **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600, **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, idp):
    """A gateway with AUTH=keys+jwt, one key of each role (tokens by role) and its keys file."""
    tmp = tmp_path_factory.mktemp("auth")
    keys = KeysFile(tmp / "keys.json")
    tokens = {role: keys.create(f"test-{role}", role)[1] for role in ("reader", "writer", "admin")}
    cfg = gateway_config(
        tmp,
        auth="keys+jwt",
        auth_keys_file=str(keys.path),
        auth_jwks_file=str(idp[1]),
        auth_jwt_issuer=ISSUER,
        auth_jwt_audience=AUDIENCE,
    )
    gateway = GatewayServer(cfg).start()
    channel = grpc.insecure_channel(gateway.address)
    yield gateway, gateway_pb2_grpc.PartsimServiceStub(channel), tokens, keys
    channel.close()
    gateway.stop(0)


def call(stub, method: str, token: str | None = None, message=None) -> tuple[grpc.StatusCode, str]:
    """Call ``method`` (its empty request unless given) with ``token``; its status code and message."""
    m = SERVICE.methods_by_name[method]
    message = message if message is not None else request(method)
    metadata = [("authorization", f"Bearer {token}")] if token is not None else None
    try:
        if m.client_streaming:
            getattr(stub, method)(iter([message]), metadata=metadata, timeout=10)
        elif m.server_streaming:
            list(getattr(stub, method)(message, metadata=metadata, timeout=10))
        else:
            getattr(stub, method)(message, metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def request(method: str, **fields):
    """The request message of a PartsimService method, with ``fields`` set."""
    return message_factory.GetMessageClass(SERVICE.methods_by_name[method].input_type)(**fields)


def delete(track_id="t1"):
    return request("DeleteTrack", track_id=track_id)


def index(track_id="t1"):
    return request("IndexTrack", header={"track_id": track_id})


def test_every_gateway_method_has_a_role_and_unknown_methods_are_denied():
    assert set(SERVICE.methods_by_name) <= set(METHOD_ROLES)
    assert not allows("admin", "NoSuchMethod") and not allows("", "SearchMix")


@pytest.mark.parametrize("token", [None, "", "garbage", "psk_000000000000_nope", "psk_", "a.b.c", "psk_x"], ids=repr)
def test_a_missing_or_bad_token_is_unauthenticated_with_one_message(cluster, token):
    _, stub, tokens, _ = cluster
    assert call(stub, "SearchMix", token) == (grpc.StatusCode.UNAUTHENTICATED, "missing or invalid credentials")


def test_a_wrong_secret_or_scheme_gets_the_same_answer_as_no_token(cluster):
    _, stub, tokens, _ = cluster
    admin = tokens["admin"]
    forged = admin[:-4] + ("AAAA" if not admin.endswith("AAAA") else "BBBB")
    answers = {call(stub, "DeleteTrack", t, delete()) for t in (None, forged, admin + "x")}
    metadata = [("authorization", f"Basic {admin}")]
    with pytest.raises(grpc.RpcError) as basic:
        stub.DeleteTrack(delete(), metadata=metadata, timeout=10)
    answers.add((basic.value.code(), basic.value.details()))
    assert answers == {(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid credentials")}


def test_a_reader_may_search_but_not_write_or_delete(cluster):
    _, stub, tokens, _ = cluster
    assert call(stub, "SearchMix", tokens["reader"])[0] not in DENIED
    assert call(stub, "DeleteTrack", tokens["reader"], delete()) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "this key's role may not call DeleteTrack",
    )
    assert call(stub, "IndexTrack", tokens["reader"], index())[0] == grpc.StatusCode.PERMISSION_DENIED


def test_a_writer_may_index_but_not_delete(cluster):
    _, stub, tokens, _ = cluster
    assert call(stub, "IndexTrack", tokens["writer"], index())[0] not in DENIED
    assert call(stub, "SubmitIngestJob", tokens["writer"])[0] not in DENIED
    assert call(stub, "DeleteTrack", tokens["writer"], delete())[0] == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.slow
def test_an_admin_may_call_every_method(cluster):
    _, stub, tokens, _ = cluster
    for method in SERVICE.methods_by_name:
        assert call(stub, method, tokens["admin"])[0] not in DENIED, method


def test_health_and_reflection_need_no_token(cluster):
    gateway, *_ = cluster
    with grpc.insecure_channel(gateway.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING  # its backends are unreachable
        asks = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        answer = next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(asks, timeout=10))
    assert "partsim.v1.PartsimService" in {s.name for s in answer.list_services_response.service}


def test_the_keys_file_holds_no_token_and_only_its_owner_may_read_it(cluster):
    *_, tokens, keys = cluster
    text = keys.path.read_text()
    for token in tokens.values():
        assert token not in text and token.split("_", 2)[2] not in text  # the secret (it may hold "_")
        assert hashlib.sha256(token.encode()).hexdigest() in text
    assert stat.S_IMODE(keys.path.stat().st_mode) == 0o600


@pytest.mark.slow
def test_a_revoked_key_is_refused_within_a_second_of_partsim_keys_revoke(cluster):
    _, stub, _, keys = cluster
    key, token = keys.create("soon-revoked", "reader")
    time.sleep(1.1)  # the gateway has looked at the file since the key was made
    assert call(stub, "ListTracks", token)[0] not in DENIED
    revoke = run_cli("keys", "revoke", key.id, "--file", str(keys.path))
    assert revoke.returncode == 0 and f"key {key.id}" in revoke.stdout, revoke.stderr
    revoked = time.monotonic()
    while call(stub, "ListTracks", token)[0] != grpc.StatusCode.UNAUTHENTICATED:
        assert time.monotonic() - revoked < 1.5, "the revoked key is still accepted"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_valid_jwt_gets_the_role_of_its_claim(cluster, idp):
    _, stub, _, _ = cluster
    reader = id_token(idp[0], partsim_role="reader")
    assert call(stub, "SearchMix", reader)[0] not in DENIED
    assert call(stub, "DeleteTrack", reader, delete())[0] == grpc.StatusCode.PERMISSION_DENIED
    admin = id_token(idp[0], partsim_role=["reader", "admin"])
    assert call(stub, "DeleteTrack", admin, delete())[0] not in DENIED
    assert call(stub, "SearchMix", id_token(idp[0]))[0] == grpc.StatusCode.PERMISSION_DENIED  # no role claim


def _hs256_signed_with_the_public_key(key) -> str:
    """The algorithm-confusion forgery: HS256 whose secret is the RSA public key's PEM."""
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=")  # noqa: E731
    head = (
        b64({"alg": "HS256", "typ": "JWT", "kid": "k1"})
        + b"."
        + b64({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 600, "partsim_role": "admin"})
    )
    sig = base64.urlsafe_b64encode(hmac.new(pem, head, hashlib.sha256).digest()).rstrip(b"=")
    return (head + b"." + sig).decode()


@pytest.mark.parametrize(
    "forge",
    [
        lambda k: id_token(k, partsim_role="admin", exp=int(time.time()) - 3600),
        lambda k: id_token(k, partsim_role="admin", aud="someone-else"),
        lambda k: id_token(k, partsim_role="admin", iss="https://evil.example"),
        lambda k: id_token(rsa_key(), partsim_role="admin"),
        lambda k: id_token(k, kid="k2", partsim_role="admin"),
        lambda k: jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "partsim_role": "admin"}, None, "none"),
        _hs256_signed_with_the_public_key,
    ],
    ids=["expired", "wrong-audience", "wrong-issuer", "other-signer", "unknown-kid", "alg-none", "hs256-confusion"],
)
def test_an_invalid_jwt_is_unauthenticated(cluster, idp, forge):
    _, stub, _, _ = cluster
    token = forge(idp[0])
    assert call(stub, "DeleteTrack", token, delete()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "missing or invalid credentials",
    )


@pytest.mark.slow
def test_each_write_delete_and_refused_delete_leaves_an_audit_line_naming_the_key(cluster, caplog):
    _, stub, tokens, keys = cluster
    ids = {k.role: k.id for k in keys.list() if k.name.startswith("test-")}
    caplog.set_level(logging.INFO, logger="partsim.audit")
    call(stub, "DeleteTrack", tokens["admin"], delete("gone-1"))
    call(stub, "IndexTrack", tokens["writer"], index("new-1"))
    call(stub, "DeleteTrack", tokens["reader"], delete("gone-2"))
    call(stub, "SearchMix", tokens["reader"])  # a read: no line
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "partsim.audit"]
    assert [(x["method"], x["principal"], x["track_id"], x["code"]) for x in lines] == [
        ("DeleteTrack", ids["admin"], "gone-1", "UNAVAILABLE"),  # allowed; the searcher is unreachable
        ("IndexTrack", ids["writer"], "new-1", "UNAVAILABLE"),
        ("DeleteTrack", ids["reader"], "gone-2", "PERMISSION_DENIED"),
    ]
    assert [x["name"] for x in lines] == ["test-admin", "test-writer", "test-reader"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", x["time"]) for x in lines)
    assert not any(t in caplog.text for t in tokens.values())


def test_refusals_are_counted_by_reason(cluster):
    gateway, stub, tokens, _ = cluster
    call(stub, "SearchMix")
    call(stub, "DeleteTrack", tokens["reader"], delete())
    text = scrape_metrics(gateway.metrics_port)
    for reason in ("unauthenticated", "permission_denied"):
        value = re.search(rf'^partsim_gateway_auth_failures_total{{reason="{reason}"}} (\S+)$', text, re.M)
        assert value and float(value.group(1)) >= 1, reason


def retry_delay(exc: grpc.RpcError) -> float:
    """The RetryInfo delay of an error's google.rpc.Status details (seconds)."""
    raw = dict(exc.trailing_metadata() or ())["grpc-status-details-bin"]
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError("no RetryInfo detail")


@pytest.mark.slow
def test_a_key_over_its_rate_limit_gets_resource_exhausted_and_others_do_not(tmp_path):
    keys = KeysFile(tmp_path / "keys.json")
    hasty, calm = (keys.create(name, "reader")[1] for name in ("hasty", "calm"))
    cfg = gateway_config(
        tmp_path, auth="keys", auth_keys_file=str(keys.path), auth_rate_per_second=0.5, auth_rate_burst=3
    )
    gateway = GatewayServer(cfg).start()
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            stub = gateway_pb2_grpc.PartsimServiceStub(channel)
            burst = [call(stub, "GetCatalogStats", hasty)[0] for _ in range(3)]
            with pytest.raises(grpc.RpcError) as over:
                stub.GetCatalogStats(request("GetCatalogStats"), metadata=[("authorization", f"Bearer {hasty}")])
            assert grpc.StatusCode.RESOURCE_EXHAUSTED not in burst
            assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert re.fullmatch(r"this key's rate limit is reached: retry in \d\.\d\d s", over.value.details())
            assert 0 < retry_delay(over.value) <= 2.0  # one token a 2 s
            assert call(stub, "GetCatalogStats", calm)[0] == grpc.StatusCode.UNAVAILABLE
    finally:
        gateway.stop(0)


@pytest.mark.parametrize(
    "settings, variable",
    [
        ({"auth": "passwords"}, "PARTSIM_GATEWAY_AUTH "),
        ({"auth": "keys"}, "PARTSIM_GATEWAY_AUTH_KEYS_FILE"),
        ({"auth": "keys", "auth_keys_file": "/nonexistent/keys.json"}, "PARTSIM_GATEWAY_AUTH_KEYS_FILE"),
        (
            {"auth": "jwt", "auth_jwt_audience": "a", "auth_jwks_file": "/nonexistent"},
            "PARTSIM_GATEWAY_AUTH_JWT_ISSUER",
        ),
        ({"auth_rate_burst": 0}, "PARTSIM_GATEWAY_AUTH_RATE_BURST"),
    ],
)
def test_bad_auth_settings_are_refused_naming_the_variable(tmp_path, settings, variable):
    with pytest.raises(InvalidArgument, match=re.escape(variable)):
        gateway_config(tmp_path, **settings).validate()


def cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = partsim(["keys", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_partsim_keys_creates_lists_and_revokes_without_showing_secrets(tmp_path, capsys):
    f = str(tmp_path / "keys.json")
    rc, out, err = cli(capsys, "create", "--role", "writer", "--name", "ci-indexer", "--file", f)
    token = out.strip()
    assert rc == 0 and re.fullmatch(r"psk_[0-9a-f]{12}_[\w-]{43}", token), out
    kid = token.split("_")[1]
    assert json.loads(err.splitlines()[0])["event"] == "keys.create"  # the audit line
    rc, out, _ = cli(capsys, "list", "--file", f, "--json")
    assert rc == 0 and [json.loads(line) for line in out.splitlines()] == [
        {
            "id": kid,
            "name": "ci-indexer",
            "role": "writer",
            "created_at": json.loads(out)["created_at"],
            "revoked": False,
        }
    ]
    rc, out, _ = cli(capsys, "revoke", kid, "--file", f)
    assert rc == 0 and "revoked" in out
    rc, out, _ = cli(capsys, "list", "--file", f)
    assert rc == 0 and re.match(rf"{kid}\s+writer\s+revoked\s", out) and token not in out


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["create", "--role", "root", "--name", "x"], "unknown role 'root'"),
        (["list"], "does not exist"),
        (["revoke", "0123456789ab"], "does not exist"),
        (["create", "--role", "reader", "--name", ""], "a key name is"),
    ],
)
def test_partsim_keys_errors_are_one_line(tmp_path, capsys, args, fragment):
    rc, out, err = cli(capsys, *args, "--file", str(tmp_path / "missing.json"))
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("partsim: error: ") and fragment in lines[0], err


def test_partsim_keys_revoke_of_an_unknown_id_names_it(tmp_path, capsys):
    f = str(tmp_path / "keys.json")
    cli(capsys, "create", "--role", "reader", "--name", "a", "--file", f)
    rc, _, err = cli(capsys, "revoke", "feedfeedfeed", "--file", f)
    assert (
        rc == 2
        and err.strip() == f"partsim: error: no key with id 'feedfeedfeed' in {f} (partsim keys list shows the ids)"
    )


def test_the_cli_exits_5_without_a_token_and_with_a_too_weak_one(cluster, capsys):
    gateway, _, tokens, _ = cluster
    assert partsim(["tracks", "delete", "t1", "--gateway", gateway.address]) == 5
    assert partsim(["tracks", "delete", "t1", "--gateway", gateway.address, "--token", tokens["reader"]]) == 5
    err = capsys.readouterr().err
    assert err.count("partsim: error:") == 2 and "Traceback" not in err
