"""Fixtures for the searcher's tests: Milvus server processes (:mod:`partsim.services.searcher.servers`:
``milvus-lite server`` and the Milvus 2.3.5 standalone of the ``milvus`` package), started and stopped here.

Import them into a test module: ``from .milvus_servers import milvus_server_fixture, milvus_uri_fixture,
milvus_standalone_bin_fixture  # noqa: F401``; pytest knows them by their ``name=``, so a test's parameter
``milvus_uri`` does not shadow the import:

- ``milvus_server`` (module scope, parametrized ``lite-server`` / ``standalone-2.3``): a running
  :class:`MilvusProcess`; pytest finishes every test of one server before it starts the other, so one runs at a time.
- ``milvus_uri``: ``http://127.0.0.1:PORT/DB``, a new, empty database of that server for this test only (pymilvus
  reads the database from the URI's path), so tests on one server never see each other's collections.
- ``lite_server``: one ``milvus-lite server`` for a module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from partsim.services.searcher.servers import (  # noqa: F401 - re-exported for the tests
    LITE,
    SERVERS,
    STANDALONE,
    STANDALONE_VERSION,
    MilvusLiteServer,
    MilvusProcess,
    MilvusStandalone,
    answers,
    free_port,
    listening,
    standalone_missing,
    unpack_standalone,
)


@pytest.fixture(scope="module", name="lite_server")
def lite_server_fixture(tmp_path_factory):
    """One ``milvus-lite server`` process for a module (where the 2.3 standalone need not run too)."""
    if MilvusLiteServer.executable() is None:
        pytest.skip("milvus-lite's server command is not installed")
    server = MilvusLiteServer(tmp_path_factory.mktemp("milvus-lite-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", name="milvus_standalone_bin")
def milvus_standalone_bin_fixture(tmp_path_factory) -> Path:
    """The 2.3.5 standalone's binaries, unpacked once per session (about 7 s)."""
    why = standalone_missing()
    if why:
        pytest.skip(why)
    return unpack_standalone(tmp_path_factory.mktemp("milvus-standalone-2.3.5"))


@pytest.fixture(scope="module", params=SERVERS, name="milvus_server")
def milvus_server_fixture(request, tmp_path_factory):
    """A running Milvus server process (:class:`MilvusProcess`): ``lite-server`` or ``standalone-2.3``."""
    if request.param == LITE:
        if MilvusLiteServer.executable() is None:
            pytest.skip("milvus-lite's server command is not installed")
        server: MilvusProcess = MilvusLiteServer(tmp_path_factory.mktemp("milvus-lite-server"))
    else:
        bin_dir = request.getfixturevalue("milvus_standalone_bin")
        server = MilvusStandalone(tmp_path_factory.mktemp("milvus-standalone"), bin_dir)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="milvus_uri")
def milvus_uri_fixture(milvus_server, request) -> str:
    """A new, empty database of ``milvus_server`` for this test: ``http://127.0.0.1:PORT/DB``."""
    return milvus_server.new_database(request.node.originalname)
