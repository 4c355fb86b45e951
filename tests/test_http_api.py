"""The gateway's HTTP/JSON API without a cluster (issue 13): the route table comes from the google.api.http
annotations, and a real gateway (backends unreachable, auth on) answers HTTP with the gRPC server's auth
and errors, google.rpc.Status as JSON with the HTTP status of its code, and serves the web app's files.
The whole API against a cluster: tests/test_cluster_e2e_http.py."""

from __future__ import annotations

import json

import grpc
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool

from partsim.errors import InvalidArgument
from partsim.services.gateway.auth.keys import KeysFile
from partsim.services.gateway.config import GatewayConfig
from partsim.services.gateway.http.routes import find, parse_template, route_table
from partsim.services.gateway.http.server import OPENAPI_FILE
from partsim.services.gateway.server import GatewayServer
from partsim.services.status import http_status
from partsim.v1 import gateway_pb2

from .http_util import http, multipart
from .util import scrape_metrics

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["PartsimService"]
UNREACHABLE = "127.0.0.1:1"


# ------------------------------------------------------------------------------------------ the route table
def test_every_public_rpc_has_a_route_read_from_its_annotation():
    routes = route_table(SERVICE)
    assert sorted({r.name for r in routes}) == sorted(m.name for m in SERVICE.methods)
    for route in routes:
        rule = route.method.GetOptions().Extensions[annotations_pb2.http]
        assert getattr(rule, route.http_method.lower()) == route.template.text
        assert route.body == rule.body
    assert ("POST", "/v1/search:mix") in {(r.http_method, r.template.text) for r in routes}


def test_the_route_table_is_built_from_whatever_the_descriptor_declares():
    """A service the code has never seen: its routes are its annotations, nothing else."""
    f = descriptor_pb2.FileDescriptorProto(name="test_http_routes.proto", package="t", syntax="proto3")
    f.dependency.append("google/api/annotations.proto")
    req = f.message_type.add(name="Req")
    req.field.add(name="shelf", number=1, type=9, label=1)
    req.field.add(name="n", number=2, type=5, label=1)
    svc = f.service.add(name="Library")
    m = svc.method.add(name="GetShelf", input_type=".t.Req", output_type=".t.Req")
    rule = m.options.Extensions[annotations_pb2.http]
    rule.get = "/v9/shelves/{shelf}"
    rule.additional_bindings.add(post="/v9/shelves/{shelf}:look", body="*")
    descriptor_pool.Default().AddSerializedFile(f.SerializeToString())
    service = descriptor_pool.Default().FindServiceByName("t.Library")
    routes = route_table(service)
    assert [(r.http_method, r.template.text, r.body) for r in routes] == [
        ("GET", "/v9/shelves/{shelf}", ""),
        ("POST", "/v9/shelves/{shelf}:look", "*"),
    ]
    match, _ = find(routes, "POST", "/v9/shelves/a%2Fb:look")
    assert match.route.name == "GetShelf" and match.variables == {"shelf": "a/b"}


def test_a_method_without_an_annotation_is_refused():
    f = descriptor_pb2.FileDescriptorProto(name="test_http_bare.proto", package="u", syntax="proto3")
    f.message_type.add(name="M")
    f.service.add(name="Bare").method.add(name="Do", input_type=".u.M", output_type=".u.M")
    descriptor_pool.Default().AddSerializedFile(f.SerializeToString())
    service = descriptor_pool.Default().FindServiceByName("u.Bare")
    with pytest.raises(InvalidArgument, match="u.Bare.Do has no google.api.http option"):
        route_table(service)


@pytest.mark.parametrize(
    "template,path,expected",
    [
        ("/v1/tracks/{track_id}", "/v1/tracks/a%2Fb%20c", {"track_id": "a/b c"}),
        ("/v1/tracks/{track_id}", "/v1/tracks/a/b", None),
        ("/v1/tracks/{track_id}", "/v1/tracks/", None),
        ("/v1/ingestJobs/{job_id}:retry", "/v1/ingestJobs/j1:retry", {"job_id": "j1"}),
        ("/v1/ingestJobs/{job_id}:retry", "/v1/ingestJobs/j1", None),
        ("/v1/tracks/{segment.track_id}/stems", "/v1/tracks/x%3Ay/stems", {"segment.track_id": "x:y"}),
        ("/v1/{name=shelves/*}/books/**", "/v1/shelves/s1/books/a/b", {"name": "shelves/s1"}),
        ("/v1/tracks:index", "/v1/tracks:index", {}),
    ],
)
def test_path_templates_match_and_percent_decode(template, path, expected):
    assert parse_template(template).match(path) == expected


def test_grpc_codes_map_to_the_standard_http_statuses():
    expected = {
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.FAILED_PRECONDITION: 400,
        grpc.StatusCode.UNAUTHENTICATED: 401,
        grpc.StatusCode.PERMISSION_DENIED: 403,
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.ALREADY_EXISTS: 409,
        grpc.StatusCode.ABORTED: 409,
        grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
        grpc.StatusCode.CANCELLED: 499,
        grpc.StatusCode.UNIMPLEMENTED: 501,
        grpc.StatusCode.UNAVAILABLE: 503,
        grpc.StatusCode.DEADLINE_EXCEEDED: 504,
        grpc.StatusCode.INTERNAL: 500,
        grpc.StatusCode.UNKNOWN: 500,
    }
    for code, status in expected.items():
        assert http_status(code) == status == http_status(code.value[0])


# ------------------------------------------------------------------------------------------ a real gateway
@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """A gateway with AUTH=keys, its HTTP port on, a small upload limit and a web app folder of its own."""
    tmp = tmp_path_factory.mktemp("http")
    keys = KeysFile(tmp / "keys.json")
    tokens = {role: keys.create(f"http-{role}", role)[1] for role in ("reader", "writer", "admin")}
    web = tmp / "web"
    (web / "sub").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>t</title>")
    (web / "app.js").write_text("export const x = 1;")
    (web / "sub" / "style.css").write_text("body{}")
    (tmp / "secret.txt").write_text("not served")
    cfg = GatewayConfig(
        address="127.0.0.1:0",
        embedder=UNREACHABLE,
        searcher=UNREACHABLE,
        data_dir=str(tmp),
        metrics_port=0,
        ingest_workers=0,
        auth="keys",
        auth_keys_file=str(keys.path),
        http_port=0,
        max_upload_mb=0.5,
        web_dir=str(web),
    )
    gw = GatewayServer(cfg).start()
    yield gw, tokens
    gw.stop(0)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_call_without_a_token_is_401_with_the_grpc_status_as_json(gateway):
    gw, _ = gateway
    a = http(gw.http_url, "GET", "/v1/tracks")
    assert a.status == 401 and a.headers["www-authenticate"].startswith("Bearer")
    body = a.json()
    assert body["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert body["message"] == "missing or invalid credentials"
    assert a.reason() == "UNAUTHENTICATED"


def test_a_reader_may_not_delete_a_track_403_and_an_admin_passes_auth(gateway):
    gw, tokens = gateway
    a = http(gw.http_url, "DELETE", "/v1/tracks/t1", headers=bearer(tokens["reader"]))
    assert a.status == 403 and a.json()["code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    b = http(gw.http_url, "DELETE", "/v1/tracks/t1", headers=bearer(tokens["admin"]))
    assert b.status == 503 and b.reason() == "BACKEND_UNAVAILABLE"  # admitted: the backends are away
    assert "retry-after" in b.headers or b.json()["code"] == grpc.StatusCode.UNAVAILABLE.value[0]


def test_media_routes_take_the_token_as_access_token_too(gateway):
    gw, tokens = gateway
    assert http(gw.http_url, "GET", "/v1/tracks/t1/audio.wav").status == 401
    a = http(gw.http_url, "GET", f"/v1/tracks/t1/audio.wav?access_token={tokens['reader']}")
    assert a.status == 503  # admitted, then GetTrack finds no searcher


def test_unknown_route_404_and_wrong_method_405_with_allow(gateway):
    gw, tokens = gateway
    a = http(gw.http_url, "GET", "/v1/nothing", headers=bearer(tokens["reader"]))
    assert a.status == 404 and a.reason() == "NO_SUCH_ROUTE"
    b = http(gw.http_url, "PUT", "/v1/tracks/x", body={}, headers=bearer(tokens["reader"]))
    assert b.status == 405 and set(b.headers["allow"].split(", ")) == {"GET", "DELETE"}
    assert b.reason() == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize(
    "body,ctype,status,reason",
    [
        (b"{not json", "application/json", 400, "INVALID_JSON"),
        (b'{"queries": [], "bogus": 1}', "application/json", 400, "INVALID_REQUEST_FIELDS"),
        (b'{"topK": "many"}', "application/json", 400, "INVALID_REQUEST_FIELDS"),
        (b"[1, 2]", "application/json", 400, "INVALID_JSON"),
        (b"{}", "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
        (b"x" * (6 << 20), "application/json", 413, "REQUEST_TOO_LARGE"),
    ],
)
def test_a_malformed_request_gets_a_precise_json_error(gateway, body, ctype, status, reason):
    gw, tokens = gateway
    a = http(
        gw.http_url, "POST", "/v1/search:mix", body=body, headers={"Content-Type": ctype, **bearer(tokens["reader"])}
    )
    assert a.status == status, a.body
    assert a.reason() == reason
    if status == 413:
        assert "PARTSIM_GATEWAY_MAX_UPLOAD_MB" in a.json()["message"]


def test_query_parameters_name_fields_and_unknown_ones_are_refused(gateway):
    gw, tokens = gateway
    a = http(gw.http_url, "GET", "/v1/tracks/x/stems?segment.nope=1", headers=bearer(tokens["reader"]))
    assert a.status == 400 and a.reason() == "UNKNOWN_FIELD"
    assert "segment.nope" in json.dumps(a.json()["details"])
    b = http(gw.http_url, "GET", "/v1/tracks?pageSize=x", headers=bearer(tokens["reader"]))
    assert b.status == 400
    c = http(gw.http_url, "POST", "/v1/search:mix?topK=3", body={}, headers=bearer(tokens["reader"]))
    assert c.status == 400 and "JSON body" in c.json()["message"]


def test_an_upload_of_the_wrong_kind_is_refused(gateway):
    gw, tokens = gateway
    h = bearer(tokens["writer"])
    a = http(gw.http_url, "POST", "/v1/tracks:index", body=b"abc", headers={"Content-Type": "text/csv", **h})
    assert a.status == 415
    body, ctype = multipart({"track_id": "t"}, {})
    b = http(gw.http_url, "POST", "/v1/tracks:index", body=body, headers={"Content-Type": ctype, **h})
    assert b.status == 400 and "no file field 'audio'" in b.json()["message"]
    c = http(gw.http_url, "POST", "/v1/tracks:index", body={"header": {}, "audio": "%%"}, headers=h)
    assert c.status == 400 and "base64" in c.json()["message"]


def test_list_ingest_jobs_is_routed_like_every_declared_rpc(gateway):
    gw, tokens = gateway
    a = http(gw.http_url, "GET", "/v1/ingestJobs?pageSize=5", headers=bearer(tokens["admin"]))
    assert a.status in (200, 403, 501), a.body  # routed: answered by the gRPC server (its role table decides)
    assert a.reason() if a.status != 200 else a.json()["jobs"] == []


def test_the_openapi_document_is_served(gateway):
    gw, _ = gateway
    a = http(gw.http_url, "GET", "/v1/openapi.json")
    assert a.status == 200 and a.headers["content-type"] == "application/json"
    assert a.body == OPENAPI_FILE.read_bytes()


def test_the_web_app_is_served_with_types_and_caching_and_nothing_outside_it(gateway):
    gw, _ = gateway
    index = http(gw.http_url, "GET", "/")
    assert index.status == 200 and index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.body.startswith(b"<!doctype html>") and index.headers["cache-control"] == "no-cache"
    js = http(gw.http_url, "GET", "/static/app.js")
    assert js.headers["content-type"] == "text/javascript; charset=utf-8" and js.headers["cache-control"] == "no-cache"
    assert http(gw.http_url, "GET", "/app.js").body == js.body
    css = http(gw.http_url, "GET", "/static/sub/style.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    again = http(gw.http_url, "GET", "/static/app.js", headers={"If-None-Match": js.headers["etag"]})
    assert again.status == 304
    for path in ("/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/..%2Fsecret.txt", "/static/nope.js"):
        a = http(gw.http_url, "GET", path)
        assert a.status == 404 and b"not served" not in a.body, path
    assert http(gw.http_url, "POST", "/static/app.js", body={}).status == 405


def test_http_requests_are_counted_per_route_and_status(gateway):
    gw, _ = gateway
    http(gw.http_url, "GET", "/v1/catalog/stats")
    text = scrape_metrics(gw.metrics_port)
    assert 'partsim_gateway_http_requests_total{code="401",route="GET /v1/catalog/stats"}' in text


def test_a_bad_http_setting_names_its_variable(tmp_path):
    with pytest.raises(InvalidArgument, match="PARTSIM_GATEWAY_HTTP_PORT"):
        GatewayConfig(data_dir=str(tmp_path), http_port=70000).validate()
    with pytest.raises(InvalidArgument, match="PARTSIM_GATEWAY_HTTP_HOST"):
        GatewayConfig(data_dir=str(tmp_path), http_port=0, http_host="0.0.0.0").validate()


@pytest.mark.parametrize("value", ["abc", "0", "-1", "+2", "1e3", "inf", "nan", "2s", ""])
def test_a_malformed_client_deadline_is_400_naming_the_header(gateway, value):
    gw, tokens = gateway
    a = http(gw.http_url, "GET", "/v1/tracks", headers={"X-Server-Timeout": value, **bearer(tokens["reader"])})
    assert a.status == 400 and a.reason() == "INVALID_HEADER", a.body
    assert a.json()["message"].startswith("header X-Server-Timeout: expected one number of seconds above 0")
    assert repr(value) in a.json()["message"]
    assert "X-Server-Timeout" in json.dumps(a.json()["details"])  # a BadRequest field violation names it
    media = http(gw.http_url, "GET", "/v1/tracks/t1/audio.wav", headers={"X-Server-Timeout": value})
    assert media.status == 400 and media.reason() == "INVALID_HEADER"


def test_a_client_deadline_is_capped_at_the_600_s_the_bridge_allows():
    from email.message import Message
    from types import SimpleNamespace

    from partsim.services.gateway.http.handler import CALL_TIMEOUT, Handler

    def timeout(*values: str) -> float:
        headers = Message()
        for v in values:
            headers["X-Server-Timeout"] = v
        return Handler.call_timeout(SimpleNamespace(headers=headers))

    assert CALL_TIMEOUT == 600.0
    assert timeout() == 600.0 and timeout("2.5") == 2.5 and timeout(".25") == 0.25 and timeout(" 7 ") == 7.0
    assert timeout("86400") == 600.0
    with pytest.raises(InvalidArgument, match="X-Server-Timeout"):
        timeout("1", "2")  # two deadlines: which one?


def test_a_valid_client_deadline_passes(gateway):
    gw, tokens = gateway
    a = http(gw.http_url, "GET", "/v1/tracks", headers={"X-Server-Timeout": "30", **bearer(tokens["reader"])})
    assert a.status == 503 and a.reason() == "BACKEND_UNAVAILABLE"  # admitted and called: the backends are away
