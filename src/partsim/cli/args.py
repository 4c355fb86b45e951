"""Argument types, connection options and the exit statuses the ``partsim`` subcommands share.

Each argument type turns a bad value into ``argparse.ArgumentTypeError``, so argparse reports it as one usage
line (``partsim COMMAND: error: argument --flag: expected ...``) with exit status 2. :func:`exit_status` is the
one table of exit statuses (:data:`EXIT_STATUSES`, the ``partsim --help`` epilog).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..client import PartsimClient

DEFAULT_GATEWAY = "localhost:50051"
EXIT_OK, EXIT_SERVER_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_PERMISSION = 0, 1, 2, 3, 4, 5
# gRPC status code -> exit status; any other code the server answers with is EXIT_SERVER_ERROR
EXIT_FOR_CODE = {
    "INVALID_ARGUMENT": EXIT_USAGE,
    "NOT_FOUND": EXIT_NOT_FOUND,
    "UNAVAILABLE": EXIT_UNAVAILABLE,
    "DEADLINE_EXCEEDED": EXIT_UNAVAILABLE,
    "PERMISSION_DENIED": EXIT_PERMISSION,
    "UNAUTHENTICATED": EXIT_PERMISSION,
}
EXIT_STATUSES = f"""exit status (every command that calls the gateway; health keeps its own: 0 SERVING, 1 otherwise);
every error is one line "partsim: error: ...":
  {EXIT_OK}  success
  {EXIT_SERVER_ERROR}  the server failed otherwise (INTERNAL, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ...),
     or this install lacks an extra the command needs (pip install 'partsim[EXTRA]', named in the error)
  {EXIT_USAGE}  usage error or invalid argument: a bad option, a file that cannot be read, INVALID_ARGUMENT
  {EXIT_NOT_FOUND}  not found: the track, segment or job does not exist (NOT_FOUND)
  {EXIT_UNAVAILABLE}  the server is unreachable or unavailable (UNAVAILABLE, DEADLINE_EXCEEDED, connection refused)
  {EXIT_PERMISSION}  permission: no, an invalid or a too weak token (UNAUTHENTICATED, PERMISSION_DENIED)"""


def exit_status(exc: BaseException) -> int:
    """The exit status of a command that failed with ``exc`` (a :class:`partsim.errors.PartsimError`): an error a
    server call raised carries its status code (:data:`EXIT_FOR_CODE`, else :data:`EXIT_SERVER_ERROR`); a local
    one (a bad argument, an unreadable file) is :data:`EXIT_USAGE`; a missing extra of the distribution
    (:class:`partsim.extras.MissingExtra`) is :data:`EXIT_SERVER_ERROR`, "any other failure"."""
    from ..client import rpc_code
    from ..extras import MissingExtra

    if isinstance(exc, MissingExtra):
        return EXIT_SERVER_ERROR
    code = rpc_code(exc)
    if code is None:
        return EXIT_USAGE
    return EXIT_FOR_CODE.get(code, EXIT_SERVER_ERROR)


def integer(text: str) -> int:
    """A whole number (``--songs 30``)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def number(text: str) -> float:
    """A number (``--seconds 12.5``)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def fractions(text: str) -> tuple[float, float, float]:
    """Three comma-separated fractions (``--split 0.8,0.1,0.1``); their sum is checked by the command."""
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated fractions, got {text!r}") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated fractions, got {text!r}")
    return parts[0], parts[1], parts[2]


def widths(text: str) -> list[int]:
    """Five positive comma-separated channel counts, one per conv block (``--widths 8,16,32,64,128``)."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected five comma-separated channel counts, got {text!r}") from None
    if len(values) != 5 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected five positive comma-separated channel counts, got {text!r}")
    return values


def add_connection_options(parser: argparse.ArgumentParser, client_cert: bool = False) -> None:
    """How a command that calls a server connects: ``--tls-ca`` and ``--token`` (with ``client_cert`` also
    ``--tls-cert``/``--tls-key``, for mTLS to an internal service); each unset one comes from its
    environment variable (:class:`partsim.client.Connection`)."""
    g = parser.add_argument_group("connection (each defaults to its environment variable)")
    g.add_argument(
        "--tls-ca", metavar="PEM", help="connect over TLS trusting this CA (env PARTSIM_TLS_CA; unset: plaintext)"
    )
    g.add_argument(
        "--token", metavar="TOKEN", help="bearer token sent with every call (env PARTSIM_TOKEN, which ps does not show)"
    )
    if client_cert:
        g.add_argument("--tls-cert", metavar="PEM", help="client certificate to present, mTLS (env PARTSIM_TLS_CERT)")
        g.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert (env PARTSIM_TLS_KEY)")


def add_gateway_options(parser: argparse.ArgumentParser) -> None:
    """``--gateway HOST:PORT`` and :func:`add_connection_options`: what a command that calls the gateway takes."""
    parser.add_argument("--gateway", default=DEFAULT_GATEWAY, metavar="HOST:PORT", help=f"default {DEFAULT_GATEWAY}")
    add_connection_options(parser)


def gateway_client(args: argparse.Namespace) -> PartsimClient:
    """A client of ``--gateway`` with the connection options (:func:`add_gateway_options`)."""
    from ..client import PartsimClient

    return PartsimClient(args.gateway, **connection(args))


def connection(args: argparse.Namespace) -> dict[str, Any]:
    """The options :func:`add_connection_options` added, as keyword arguments of ``PartsimClient`` and
    ``Connection``."""
    return {k: getattr(args, k, None) for k in ("tls_ca", "token", "tls_cert", "tls_key")}
