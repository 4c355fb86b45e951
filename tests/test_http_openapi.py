"""The OpenAPI document of the HTTP/JSON API (issue 13): generated from the protos by scripts/gen-openapi.py,
committed, valid OpenAPI 3.1, and in step with the route table the server answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from openapi_spec_validator import validate

from partsim.services.gateway.http.routes import route_table
from partsim.services.gateway.http.server import OPENAPI_FILE
from partsim.v1 import gateway_pb2

from .util import ROOT

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["PartsimService"]


def test_the_committed_document_is_what_the_generator_writes():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-openapi.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_the_check_fails_on_a_stale_document(tmp_path):
    saved = tmp_path / "openapi.json"
    shutil.copy(OPENAPI_FILE, saved)
    try:
        OPENAPI_FILE.write_text(OPENAPI_FILE.read_text().replace('"version": "v1"', '"version": "v0"'))
        proc = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "gen-openapi.py"), "--check"], capture_output=True, text=True
        )
        assert proc.returncode == 1 and "stale: src/partsim/services/gateway/http/openapi.json" in proc.stderr
    finally:
        shutil.copy(saved, OPENAPI_FILE)


def test_the_document_is_valid_openapi_3_1():
    doc = json.loads(OPENAPI_FILE.read_text())
    validate(doc)
    assert doc["openapi"].startswith("3.1")


def test_every_route_is_an_operation_with_the_proto_comment_and_the_bearer_scheme():
    doc = json.loads(OPENAPI_FILE.read_text())
    for route in route_table(SERVICE):
        op = doc["paths"][route.template.text][route.http_method.lower()]
        assert op["operationId"] == route.name
        assert op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"].endswith("google.rpc.Status")
    assert doc["paths"]["/v1/search:mix"]["post"]["summary"].startswith("Songs whose parts resemble")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for media in ("/v1/tracks/{track_id}/stems/{file}", "/v1/tracks/{track_id}/audio.wav"):
        assert "get" in doc["paths"][media]


def test_schemas_follow_the_proto3_json_mapping():
    schemas = json.loads(OPENAPI_FILE.read_text())["components"]["schemas"]
    hit = schemas["partsim.v1.SearchMixResponse"]["properties"]
    assert hit["candidates"]["type"] == "string" and hit["candidates"]["format"] == "int64"  # int64 as a string
    req = schemas["partsim.v1.SearchMixRequest"]["properties"]
    assert req["partWeights"]["additionalProperties"] == {"type": "number", "format": "float"}
    assert "topK" in req and "top_k" not in req  # lowerCamelCase
    assert schemas["partsim.v1.Audio"]["properties"]["encoded"]["contentEncoding"] == "base64"
    assert schemas["partsim.v1.EmbedMode"]["enum"][0] == "EMBED_MODE_UNSPECIFIED"
    assert schemas["partsim.v1.StemQuery"]["x-oneof"] == {"source": ["indexed", "audio", "vector"]}


def test_every_operation_takes_the_x_server_timeout_header():
    doc = json.loads(OPENAPI_FILE.read_text())
    header = doc["components"]["parameters"]["ServerTimeout"]
    assert header["name"] == "X-Server-Timeout" and header["in"] == "header" and "504" in header["description"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert {"$ref": "#/components/parameters/ServerTimeout"} in op["parameters"], (method, path)
