"""Milvus server processes on this machine: ``milvus-lite server`` and the Milvus 2.3.5 standalone of the ``milvus``
package (``pip install milvus==2.3.5``, in the ``test`` extra), each on loopback ports the OS picks, in a folder of
its own, stopped by its own PID. The searcher's tests (tests/milvus_servers.py: fixtures) and its benchmark
(``python -m partsim.services.searcher.bench --start-server lite|standalone``) start them from here.

The standalone is started from the package's binaries and config template, not through its ``MilvusServer`` class,
because of what 2.3.5 does by itself (each worked around below):

- ``MilvusServerConfig(template=...)`` crashes in ``write_config`` (AttributeError: ``glog_conf_file`` is only set
  when no template is given), so the package's own template is used and changed only through its extra-config keys
  (``proxy.ip`` ...), which replace lines of the written ``configs/milvus.yaml``;
- the embedded etcd ignores ``etcd.endpoints`` for what it listens on (it is only the address Milvus dials): it
  listens on localhost:2379 and :2380 unless given an etcd config file of its own (``ETCD_CONFIG_PATH``), which
  names free loopback ports for its client and peer URLs;
- ports: the package scans upwards from 19530, 2379, ... for one it can bind (two test sessions collide, and it
  checks 127.0.0.1 only while Milvus binds every interface); here every port is one the OS picked, and the
  webservice (``/healthz``, metrics) port, otherwise 9091 and up, is ``METRICS_PORT``;
- components register the first non-loopback address of the machine in etcd unless ``<role>.ip`` is set: 127.0.0.1;
- ``MilvusServer.wait_started`` never notices that the process died (it waits its 180 s), and ``stop`` kills after
  one second; here the process is watched and readiness is a real pymilvus call;
- a graceful stop hangs: after SIGTERM the query node keeps retrying the coordinators stopped before it (the log
  fills with "retry func failed") and the process does not exit; the data is thrown away, so it is killed after 5 s.

Milvus 2.3.5's gRPC servers (proxy, coordinators, nodes) and its webservice listen on every interface (``*:PORT``,
even with ``<role>.ip: 127.0.0.1``: that is only the address registered; its template has no listen-address
setting), so only etcd is bound to 127.0.0.1 alone; the tests connect to 127.0.0.1 only. A SIGTERM soon after start
makes 2.3.5 exit with "panic: context canceled" (SIGABRT): harmless here.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LITE = "lite-server"
STANDALONE = "standalone-2.3"
SERVERS = [LITE, STANDALONE]
STANDALONE_VERSION = "2.3.5"

# the roles of a 2.3 standalone whose registered address is set to loopback (the template's "<role>:\n  ip:")
_ROLES = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS picked (free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(uri: str, timeout: float = 3.0) -> str | None:
    """None when the Milvus at ``uri`` answers list_collections through pymilvus within ``timeout``; else why not."""
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=uri, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure to connect means: not (yet) up
        return f"connect: {exc}"
    try:
        client.list_collections(timeout=timeout)
        return None
    except Exception as exc:  # noqa: BLE001 - as above
        return f"list_collections: {exc}"
    finally:
        client.close()


def listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs process ``pid`` listens on over TCP (from /proc: its socket inodes)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A: LISTEN
                continue
            addr, port = f[1].split(":")
            raw = bytes.fromhex(addr)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # 32-bit words, host order
            out.add((socket.inet_ntop(family, raw), int(port, 16)))
    return out


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({path}: {exc})"


class MilvusProcess:
    """One Milvus server process (``start()`` / ``stop()``), its ``uri`` (http://127.0.0.1:PORT) and ``log``."""

    name = ""
    start_timeout = 60.0
    stop_grace = 20.0  # seconds from SIGTERM to SIGKILL

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = self.folder / "server.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.started_in = 0.0  # seconds from Popen to the first answered pymilvus call
        self._databases = itertools.count(1)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The running process's id (0 when none runs)."""
        return self.proc.pid if self.proc is not None else 0

    def _launch(self) -> subprocess.Popen:
        raise NotImplementedError

    def start(self) -> MilvusProcess:
        t0 = time.monotonic()
        self.proc = self._launch()
        why: str | None = "not started"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"{self.name} exited with {rc} while starting; {self.log}:\n{_tail(self.log)}")
            why = answers(self.uri, timeout=2.0)
            if why is None:
                self.started_in = time.monotonic() - t0
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not answer within {self.start_timeout:.0f} s ({why}); {self.log}:\n{_tail(self.log)}"
        )

    def stop(self) -> None:
        """SIGTERM to our process (by its PID), SIGKILL after ``stop_grace`` seconds."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)

    def __enter__(self) -> MilvusProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def new_database(self, hint: str = "t") -> str:
        """A new empty database on this server; its URI (``http://127.0.0.1:PORT/DB``)."""
        from pymilvus import MilvusClient

        name = re.sub(r"[^A-Za-z0-9_]", "_", f"t{next(self._databases)}_{hint}")[:60]
        client = MilvusClient(uri=self.uri, timeout=30)
        try:
            client.create_database(name, timeout=30)
        finally:
            client.close()
        return f"{self.uri}/{name}"


class MilvusLiteServer(MilvusProcess):
    """``milvus-lite server`` (the pymilvus-compatible gRPC server of the milvus-lite package) on 127.0.0.1."""

    name = LITE

    @staticmethod
    def executable() -> str | None:
        exe = Path(sys.executable).with_name("milvus-lite")
        return str(exe) if exe.exists() else shutil.which("milvus-lite")

    def _launch(self) -> subprocess.Popen:
        exe = self.executable()
        if exe is None:
            raise RuntimeError("milvus-lite's server command is not installed (pip install milvus-lite)")
        self.port = free_port()
        data = self.folder / "data"
        cmd = [exe, "server", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log, "ab") as log:
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start(self) -> MilvusProcess:
        # the port was free when picked; another process may take it before the server binds: try again
        for attempt in range(5):
            try:
                return super().start()
            except RuntimeError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")


class MilvusStandalone(MilvusProcess):
    """Milvus 2.3.5 standalone (embedded etcd, RocksMQ, local storage) from the ``milvus`` package's binaries.

    Args:
        folder: its data, configs and logs (``configs/milvus.yaml``, ``configs/etcd.yaml``, ``server.log``).
        bin_dir: the package's binaries, unpacked (:func:`unpack_standalone`).
    """

    name = STANDALONE
    start_timeout = 120.0
    stop_grace = 5.0  # its graceful stop hangs (see the module's doc); the data is thrown away

    def __init__(self, folder: Path, bin_dir: Path):
        super().__init__(folder)
        self.bin_dir = Path(bin_dir)
        self.ports: dict[str, int] = {}

    def configure(self) -> dict[str, str]:
        """Write configs/milvus.yaml and configs/etcd.yaml; the process's environment."""
        from milvus import MilvusServerConfig  # type: ignore[import-untyped]

        # no template= (it would crash: see the module's doc); ports given explicitly are only checked
        cfg = MilvusServerConfig(data_dir=str(self.folder))
        self.ports = {key: free_port() for key in cfg.configurable_items if key.endswith("_port")}
        self.ports["etcd_peer_port"] = free_port()
        self.ports["webservice_port"] = free_port()
        cfg.update(**{k: v for k, v in self.ports.items() if k in cfg.configurable_items})
        for role in _ROLES:
            cfg.set(f"{role}.ip", "127.0.0.1")
        cfg.set("etcd.endpoints", f"127.0.0.1:{self.ports['etcd_port']}")
        cfg.resolve()  # writes configs/milvus.yaml and glog.conf, makes logs/ and data/
        configs = self.folder / "configs"
        written = (configs / "milvus.yaml").read_text()
        for role in _ROLES:  # the extra-config keys replace template lines only where they exist: check
            if not re.search(rf"^{role}:\n(?:  .*\n|\s*\n)*?  ip: 127\.0\.0\.1", written, re.M):
                raise RuntimeError(f"{role}.ip was not set in {configs / 'milvus.yaml'}")
        self.port = self.ports["proxy_port"]
        client, peer = self.ports["etcd_port"], self.ports["etcd_peer_port"]
        etcd = configs / "etcd.yaml"
        etcd.write_text(
            "name: partsim-milvus\n"
            f"listen-client-urls: http://127.0.0.1:{client}\n"
            f"advertise-client-urls: http://127.0.0.1:{client}\n"
            f"listen-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-cluster: partsim-milvus=http://127.0.0.1:{peer}\n"
            "initial-cluster-state: new\n"
        )
        return dict(
            os.environ,
            DEPLOY_MODE="STANDALONE",
            MILVUSCONF=str(configs),
            ETCD_CONFIG_PATH=str(etcd),  # Milvus reads etcd.config.path from here
            METRICS_PORT=str(self.ports["webservice_port"]),
            MILVUS_RUN_DIR=str(self.folder / "run"),
            LD_LIBRARY_PATH=os.pathsep.join(p for p in (str(self.bin_dir), os.environ.get("LD_LIBRARY_PATH")) if p),
        )

    def _launch(self) -> subprocess.Popen:
        env = self.configure()
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                [str(self.bin_dir / "milvus"), "run", "standalone"],
                cwd=self.folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )


def unpack_standalone(folder: Path) -> Path:
    """The ``milvus`` package's binaries (lzma-compressed in the wheel, 250 MB unpacked) in ``folder``/bin."""
    import milvus

    if milvus.__version__ != STANDALONE_VERSION:
        raise RuntimeError(f"the milvus package is {milvus.__version__}, these tests pin {STANDALONE_VERSION}")
    milvus._initialize_data_files(str(folder))  # unpacks into folder/bin (skips files whose .md5 matches)
    return Path(folder) / "bin"


def standalone_missing() -> str | None:
    """Why the 2.3 standalone cannot run here (None: it can)."""
    if not sys.platform.startswith("linux"):
        return f"the milvus package's standalone binary is for Linux x86-64, this is {sys.platform}"
    try:
        import milvus  # noqa: F401
    except ImportError:
        return f"the milvus package is not installed (pip install milvus=={STANDALONE_VERSION}, in the test extra)"
    return None
