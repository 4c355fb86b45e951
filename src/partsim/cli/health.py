"""``partsim health HOST:PORT [--service NAME] [--timeout S] [--tls-ca PEM [--tls-cert PEM --tls-key PEM]]``:
one grpc.health.v1 Check (over TLS with a CA; mTLS with a client certificate).

Exit status 0 when the server answers SERVING, 1 otherwise (NOT_SERVING, an unknown service, an
unreachable or silent server), with one line saying which; never a traceback. The compose
healthchecks (deploy/docker-compose.yml) run it inside each service's container.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import InvalidArgument
from .args import add_connection_options, connection, number

EXIT_UNHEALTHY = 1


def register(sub) -> None:
    p = sub.add_parser("health", help="check a service's grpc.health.v1 status: exit 0 iff SERVING")
    p.add_argument("target", metavar="HOST:PORT", help="the service's gRPC address, e.g. localhost:50051")
    p.add_argument(
        "--service",
        default="",
        metavar="NAME",
        help="health service name, e.g. partsim.v1.PartsimService (default '': the whole server)",
    )
    p.add_argument("--timeout", type=number, default=5.0, metavar="SECONDS", help="deadline of the check (default 5)")
    add_connection_options(p, client_cert=True)  # an mTLS service: its own certificate is the probe's
    p.set_defaults(handler=_cmd_health)


def _cmd_health(args: argparse.Namespace) -> int:
    host, sep, port = args.target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidArgument(f"expected HOST:PORT, got {args.target!r}")
    if not args.timeout > 0:
        raise InvalidArgument(f"--timeout must be positive, got {args.timeout:g}")
    # gRPC's C core would log connection failures on stderr; the one line below says it all.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import grpc

    from ..client import Connection, health

    conn = Connection(**connection(args)).resolved()
    what = args.target + (f" service {args.service!r}" if args.service else "")
    # No proxy: health checks target the container itself or a neighbour on the same network.
    with conn.channel(args.target, [("grpc.enable_http_proxy", 0)]) as channel:
        try:
            status = health.check(channel, args.service, timeout=args.timeout, metadata=conn.metadata())
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.NOT_FOUND:
                reason = "unknown service (the server does not report on it)"
            elif code == grpc.StatusCode.UNAVAILABLE:
                reason = "unreachable" + (" or the TLS handshake failed" if conn.tls_ca else "")
            elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
                reason = f"unreachable (no answer within {args.timeout:g} s)"
            elif code == grpc.StatusCode.UNIMPLEMENTED:
                reason = "does not implement grpc.health.v1"
            else:
                reason = f"check failed: {code.name if code else exc}"
            print(f"partsim health: {what}: {reason}", file=sys.stderr)
            return EXIT_UNHEALTHY
    if status != health.SERVING:
        print(f"partsim health: {what}: {health.status_name(status)}", file=sys.stderr)
        return EXIT_UNHEALTHY
    print(f"{what}: SERVING")
    return 0
