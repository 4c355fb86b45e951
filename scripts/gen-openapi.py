#!/usr/bin/env python3
"""Regenerate the OpenAPI document of the gateway's HTTP/JSON API from the protos.

    protos/partsim/v1/*.proto (google.api.http annotations, comments)
        -> src/partsim/services/gateway/http/openapi.json   (served at /v1/openapi.json)

The routes and schemas come from the descriptors the server itself uses (partsim.v1.gateway_pb2, kept fresh
by scripts/gen-protos.sh); the descriptions from the .proto comments, read from a descriptor set that
grpc_tools.protoc builds with --include_source_info.

    scripts/gen-openapi.py            # rewrite the document
    scripts/gen-openapi.py --check    # exit 1 when the committed document is stale (tests/test_http_openapi.py runs it)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from google.protobuf import descriptor_pb2  # noqa: E402 - after the path

from partsim.services.gateway.http.openapi import comments, document  # noqa: E402
from partsim.v1 import gateway_pb2  # noqa: E402

OUT = ROOT / "src" / "partsim" / "services" / "gateway" / "http" / "openapi.json"
PROTO = "partsim/v1/gateway.proto"


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}", "--include_imports",
               "--include_source_info", f"--descriptor_set_out={out}", PROTO]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"protoc failed: {proc.stderr.strip()}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def render() -> str:
    service = gateway_pb2.DESCRIPTOR.services_by_name["PartsimService"]
    return json.dumps(document(service, comments(descriptor_set())), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed document is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"stale: {OUT.relative_to(ROOT)} (run scripts/gen-openapi.py)", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
