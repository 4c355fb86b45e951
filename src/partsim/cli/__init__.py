"""The ``partsim`` command.

Every user error is one line on stderr (``partsim: error: ...``) and a non-zero exit status, never a
traceback. Each module of this package adds its subcommands in ``register(subparsers)`` and gives each
one its handler with ``set_defaults(handler=...)``; ``main`` calls ``args.handler(args)``:

- ``corpus``: corpus make/info/bench
- ``model``: train, evaluate, export, bench-embed, interpolate, bench-train, embed
- ``cluster``: up, demo (the services on this machine)
- ``catalog``: index, search-mix, search-stems (a running gateway's catalog)
- ``tracks``: tracks list/get/delete, stats, jobs submit/get/retry (the catalog's tracks and ingest jobs)
- ``separation``: separate, compare-paths, train-separator, evaluate-separator, export-separator
- ``health``: health (one grpc.health.v1 check)
- ``keys``: keys create/list/revoke (the gateway's API keys)

The exit statuses are one table (``args.exit_status``, printed in the ``partsim --help`` epilog): 0 success, 1 the
server answered with an error (or this install lacks an extra the command needs), 2 usage error, 3 not found,
4 unreachable or unavailable, 5 permission.

Heavy libraries (torch, demucs, numpy, grpc) are imported inside the handlers, so ``partsim --help`` stays fast
and the commands that call a gateway run in the thin client install (``pip install partsim``). A command that
needs an extra of the distribution says so with ``set_defaults(needs="EXTRA[,EXTRA]")``: ``main`` checks it
first (:func:`partsim.extras.require`) and a missing one is one line naming the pip command, exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..errors import PartsimError
from ..extras import require
from . import catalog, cluster, corpus, health, keys, model, separation, tracks
from .args import EXIT_STATUSES, exit_status

COMMAND_MODULES = (corpus, model, cluster, catalog, tracks, separation, health, keys)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="partsim",
        description="Part-level music similarity search.",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"partsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "needs", None):  # the extras of the distribution the command needs (partsim.extras)
            require(f"partsim {args.command}", args.needs)
        return args.handler(args)
    except PartsimError as exc:
        print(f"partsim: error: {exc}", file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt:
        print("partsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
