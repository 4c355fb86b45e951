"""Safe by default (issue 12): where partsim listens, what it refuses to start with, and that no deployment
file carries a default credential.

- ``partsim up`` (real processes): every listening socket of every process it starts is on 127.0.0.1,
  gRPC and /metrics alike (read from /proc: the sockets each process holds).
- One rule for every service (ServerConfig.validate): a non-loopback ADDRESS needs TLS and caller
  authentication (tokens at the gateway, client certificates inside) or INSECURE; the refusal is one line
  naming the variables, INSECURE serves with one warning line.
- Compose: secrets only from the env file scripts/compose-secrets.sh writes (``${VAR:?...}``).
- Kubernetes: no credential literal in any render; Redis requires a password from a Secret.
- Redis AUTH against a real redis-server started with ``--requirepass`` (and over TLS).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from partsim.cluster import Cluster
from partsim.errors import InvalidArgument, Unavailable
from partsim.services.config import parse
from partsim.services.gateway.cache import RedisCache
from partsim.services.gateway.jobs import IngestItem, make_job_queue

from .redis_server import RedisServer
from .util import ROOT, assert_user_error, run_cli, run_script, service_configs

DEPLOY = ROOT / "deploy"
NEEDED = {"PARTSIM_GATEWAY_DATA_DIR": "/tmp", "PARTSIM_SEARCHER_DATA_DIR": "/tmp"}
SECRET_VARIABLES = {"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "GRAFANA_ADMIN_PASSWORD", "REDIS_PASSWORD"}
DEFAULT_CREDENTIALS = re.compile(r"minioadmin|admin[/:]admin|^(password|admin|changeme|secret)$", re.I)


# -- what a process listens on (/proc) ----------------------------------------------------------------------
def _descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += [c for c, parent in parents.items() if parent == p]
    return found


def _address(hex_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_ip)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word little-endian
    ip = ipaddress.ip_address(words)
    return ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip


def listening(pids: list[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state that one of ``pids`` holds."""
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            tables = [Path(f"/proc/{pid}/net/{t}").read_text().splitlines()[1:] for t in ("tcp", "tcp6")]
        except OSError:  # exited meanwhile
            continue
        inodes = set()
        for fd in fds:  # one by one: a file the process closes meanwhile (its background work) is skipped, not it
            try:
                inodes.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
        for row in (line.split() for table in tables for line in table):
            local, state, inode = row[1], row[3], row[9]
            if state == "0A" and f"socket:[{inode}]" in inodes:
                ip, port = local.split(":")
                found.append((pid, str(_address(ip)), int(port, 16)))
    return found


def _read_until(proc: subprocess.Popen, pattern: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no {pattern!r} in:\n" + "\n".join(lines))


def _stop(proc: subprocess.Popen, sig: int) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- partsim up ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_partsim_up_listens_only_on_loopback_grpc_and_metrics_of_every_service(tmp_path):
    cmd = [sys.executable, "-m", "partsim", "up", "--data", str(tmp_path / "d"), "--gateway", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = _read_until(proc, r"partsim is serving on 127\.0\.0\.1:\d+;", 300)
        printed = {int(p) for line in lines for p in re.findall(r"127\.0\.0\.1:(\d+)", line)}
        sockets = listening(_descendants(proc.pid))
        services = {pid for pid, _, _ in sockets}
        assert len(services) == 4, sockets  # searcher, embedder, separator, gateway
        assert len(sockets) >= 8, sockets  # gRPC and /metrics of each
        assert all(address == "127.0.0.1" for _, address, _ in sockets), sockets
        assert printed - {0} <= {port for _, _, port in sockets}, (printed, sockets)  # the launcher tells the truth
    finally:
        assert _stop(proc, signal.SIGINT) == 0


def test_partsim_up_refuses_a_non_loopback_gateway_before_starting_anything(tmp_path):
    proc = run_cli("up", "--data", str(tmp_path / "d"), "--gateway", "0.0.0.0:50051", timeout=60)
    assert_user_error(
        proc,
        "PARTSIM_GATEWAY_ADDRESS (--address): 0.0.0.0:50051 is not a loopback address",
        "PARTSIM_GATEWAY_INSECURE=true (--insecure)",
    )
    assert not (tmp_path / "d").exists()  # nothing started, nothing written
    Cluster(tmp_path / "d", gateway="0.0.0.0:50051", insecure=True).check()  # --insecure: allowed


# -- the one rule -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gateway", "embedder", "searcher", "separator"])
def test_a_non_loopback_address_without_tls_and_auth_is_refused_naming_the_variables(name):
    cls = service_configs()[name]
    p = cls.prefix
    caller = f"caller authentication ({p}_AUTH)" if name == "gateway" else f"client certificates ({p}_TLS_CLIENT_CA)"
    with pytest.raises(InvalidArgument) as err:
        parse(cls, p, ["--address", "0.0.0.0:7000"], environ=NEEDED)
    assert str(err.value) == (
        f"{p}_ADDRESS (--address): 0.0.0.0:7000 is not a loopback address: serving it needs TLS "
        f"({p}_TLS_CERT, {p}_TLS_KEY) and {caller}, or {p}_INSECURE=true (--insecure)"
    )
    cfg = parse(cls, p, ["--address", "0.0.0.0:7000"], environ={**NEEDED, f"{p}_INSECURE": "true"})
    assert cfg.insecure_warning() == (
        f"serving 0.0.0.0:7000 without TLS ({p}_TLS_CERT, {p}_TLS_KEY) and {caller} ({p}_INSECURE is set): "
        "anyone who reaches it can call every method"
    )
    assert cls().address.startswith("127.0.0.1:") and cls().metrics_host == "127.0.0.1"  # the defaults


@pytest.mark.parametrize("address", ["127.0.0.1:0", "localhost:1", "[::1]:2", "127.0.0.2:3", "unix:/tmp/p.sock"])
def test_loopback_addresses_need_nothing(address):
    cfg = parse(service_configs()["embedder"], "PARTSIM_EMBEDDER", ["--address", address], environ={})
    assert cfg.insecure_warning() is None


@pytest.mark.parametrize("address", ["0.0.0.0:1", "[::]:1", ":50051", "10.1.2.3:1", "partsim-embedder:50052"])
def test_every_other_address_is_beyond_loopback(address):
    with pytest.raises(InvalidArgument, match="is not a loopback address"):
        parse(service_configs()["embedder"], "PARTSIM_EMBEDDER", ["--address", address], environ={})


def test_tls_with_client_certificates_or_tokens_is_enough():
    tls = {"address": "0.0.0.0:1", "tls_cert": "c.pem", "tls_key": "k.pem"}
    configs = service_configs()
    assert configs["searcher"](**tls, tls_client_ca="ca.pem").unprotected() == []
    assert configs["gateway"](**tls, auth="keys").unprotected() == []
    assert configs["searcher"](**tls).unprotected() == ["client certificates (PARTSIM_SEARCHER_TLS_CLIENT_CA)"]
    assert configs["gateway"](**tls).unprotected() == ["caller authentication (PARTSIM_GATEWAY_AUTH)"]
    assert configs["gateway"](address="0.0.0.0:1", auth="keys").unprotected() == [
        "TLS (PARTSIM_GATEWAY_TLS_CERT, PARTSIM_GATEWAY_TLS_KEY)"
    ]


@pytest.mark.slow
def test_a_service_process_refuses_0_0_0_0_with_one_line_and_insecure_serves_with_a_warning(tmp_path):
    run = [sys.executable, "-m", "partsim.services.gateway", "--data-dir", str(tmp_path), "--address", "0.0.0.0:0"]
    refused = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stdout == "", refused
    assert refused.stderr.splitlines() == [
        "partsim-gateway: configuration error: PARTSIM_GATEWAY_ADDRESS (--address): 0.0.0.0:0 is not a loopback "
        "address: serving it needs TLS (PARTSIM_GATEWAY_TLS_CERT, PARTSIM_GATEWAY_TLS_KEY) and caller "
        "authentication (PARTSIM_GATEWAY_AUTH), or PARTSIM_GATEWAY_INSECURE=true (--insecure)"
    ]
    proc = subprocess.Popen(
        [*run, "--insecure", "--metrics-port", "0", "--embedder", "127.0.0.1:1", "--searcher", "127.0.0.1:1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = _read_until(proc, r"gateway serving on", 120)
        warnings = [line for line in lines if "WARNING" in line]
        assert len(warnings) == 1 and warnings[0].endswith(
            "gateway: serving 0.0.0.0:0 without TLS (PARTSIM_GATEWAY_TLS_CERT, PARTSIM_GATEWAY_TLS_KEY) and caller "
            "authentication (PARTSIM_GATEWAY_AUTH) (PARTSIM_GATEWAY_INSECURE is set): anyone who reaches it can "
            "call every method"
        ), lines
        where = {address for _, address, _ in listening([proc.pid])}
        assert where == {"0.0.0.0", "127.0.0.1"} or where == {"::", "127.0.0.1"}, where  # gRPC and metrics
    finally:
        _stop(proc, signal.SIGTERM)


# -- compose ------------------------------------------------------------------------------------------------
def test_compose_has_no_default_credentials_and_needs_the_generated_env_file(tmp_path):
    texts = {p.name: p.read_text() for p in DEPLOY.glob("docker-compose*.yml")}
    for name, text in texts.items():
        assert not re.search(r"minioadmin|admin/admin|:-admin\b", text, re.I), name
        for expr in re.findall(r"\$\{([^}]+)\}", text):
            variable = re.split(r"[:?-]", expr, maxsplit=1)[0]
            if re.search(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN", variable):
                assert expr.startswith(f"{variable}:?"), f"{name}: ${{{expr}}} must be required, with no default"
    doc = yaml.safe_load(texts["docker-compose.yml"])["services"]
    code = "\n".join(line for line in texts["docker-compose.yml"].splitlines() if not line.lstrip().startswith("#"))
    required = set(re.findall(r"\$\{(\w+):\?", code))
    assert required == SECRET_VARIABLES
    for service in doc.values():
        env = service.get("environment") or {}
        for key, value in (dict(e.split("=", 1) for e in env) if isinstance(env, list) else env).items():
            assert not key.endswith("_INSECURE"), f"compose serves TLS and asks for API keys: no {key}"
            if re.search(r"PASSWORD|SECRET|ACCESS_KEY|ROOT_USER|CLI_AUTH", key):
                assert str(value).startswith("${") and ":?" in str(value), (key, value)
    assert "--requirepass" in " ".join(doc["redis"]["command"])
    gateway = doc["gateway"]["environment"]
    assert "${REDIS_PASSWORD:?" in gateway["PARTSIM_GATEWAY_REDIS_URL"]
    assert gateway["PARTSIM_GATEWAY_AUTH"] == "keys" and gateway["PARTSIM_GATEWAY_TLS_CERT"]
    # the one script: every variable, random, mode 0600; a rerun keeps them; the default file is git-ignored
    env_file = tmp_path / "secrets.env"
    script = [str(ROOT / "scripts" / "compose-secrets.sh"), str(env_file)]
    assert subprocess.run(script, capture_output=True, timeout=30).returncode == 0
    first = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert set(first) == SECRET_VARIABLES and env_file.stat().st_mode & 0o777 == 0o600
    assert all(len(v) >= 24 and re.fullmatch(r"[\w-]+", v) for v in first.values()), first
    assert subprocess.run(script, capture_output=True, timeout=30).returncode == 0
    assert dict(line.split("=", 1) for line in env_file.read_text().splitlines()) == first
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "deploy/.env"], timeout=30)
    assert ignored.returncode == 0, "deploy/.env must be git-ignored"


# -- Kubernetes ---------------------------------------------------------------------------------------------
REFERENCE_FIELDS = {"key", "path", "name", "secretName"}  # a Secret's key named "password" is no password


def _strings(obj, field: str = ""):
    """Every string value of an object, with the name of the field that holds it."""
    if isinstance(obj, dict):
        for k, value in obj.items():
            yield from _strings(value, k)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value, field)
    elif isinstance(obj, str):
        yield field, obj


def _check_no_credentials(render: str, objs: list[dict]) -> None:
    for o in objs:
        where = f"{render}: {o['kind']}/{o['metadata']['name']}"
        assert not (o["kind"] == "Secret" and (o.get("data") or o.get("stringData"))), f"{where}: a literal Secret"
        for field, text in _strings(o):
            assert field in REFERENCE_FIELDS or not DEFAULT_CREDENTIALS.search(text), f"{where}: {field}: {text!r}"
            assert not re.search(r"://[^/\s:@]*:[^/\s@]+@", text), f"{where}: a password in a URL: {text!r}"
        for key in (o.get("data") or {}) if o["kind"] == "ConfigMap" else ():
            assert not re.search(r"PASSWORD|SECRET|TOKEN", key) or key.endswith("_FILE"), f"{where}: {key}"
        for c in (o.get("spec", {}).get("template", {}).get("spec", {}).get("containers")) or []:
            for e in c.get("env") or []:
                if re.search(r"PASSWORD|SECRET|TOKEN|REDISCLI_AUTH", e["name"]) and not e["name"].endswith("_FILE"):
                    assert "secretKeyRef" in (e.get("valueFrom") or {}), f"{where}: {e['name']} is a literal"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_kubernetes_render_carries_a_credential_and_redis_requires_its_secret(k8s_renders):
    for render, objs in k8s_renders.items():
        _check_no_credentials(render, objs)
        workloads = {o["metadata"]["name"]: o for o in objs if o["kind"] in ("Deployment", "StatefulSet")}
        redis = workloads["partsim-redis"]["spec"]["template"]["spec"]["containers"][0]
        assert redis["args"][:2] == ["--requirepass", "$(REDISCLI_AUTH)"], render
        (auth,) = [e for e in redis["env"] if e["name"] == "REDISCLI_AUTH"]
        assert auth["valueFrom"]["secretKeyRef"] == {"name": "partsim-redis", "key": "password"}
        for name in ("partsim-gateway", "partsim-ingest-worker"):
            if name not in workloads:
                continue
            pod = workloads[name]["spec"]["template"]["spec"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: volumes[m["name"]] for m in pod["containers"][0]["volumeMounts"]}
            configmaps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
            path = configmaps[name]["data"]["PARTSIM_GATEWAY_REDIS_PASSWORD_FILE"]
            assert mounts[str(Path(path).parent)]["secret"]["secretName"] == "partsim-redis", (render, name)


def test_the_credential_scan_can_fail():
    deployment = {"kind": "Deployment", "metadata": {"name": "x"}, "spec": {"template": {"spec": {"containers": []}}}}
    container = {"name": "c", "env": [{"name": "DB_PASSWORD", "value": "hunter2"}]}
    deployment["spec"]["template"]["spec"]["containers"].append(container)
    for bad in (
        [deployment],
        [{"kind": "ConfigMap", "metadata": {"name": "y"}, "data": {"URL": "redis://:pw@redis:6379/0"}}],
        [{"kind": "ConfigMap", "metadata": {"name": "z"}, "data": {"MINIO_USER": "minioadmin"}}],
        [{"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"password": "x"}}],
    ):
        with pytest.raises(AssertionError):
            _check_no_credentials("test", bad)


def test_milvus_values_reference_an_existing_secret_for_minio():
    text = (ROOT / "k8s" / "milvus" / "values.yaml").read_text()
    values = yaml.safe_load(text)
    assert "minioadmin" not in text.split("#")[0] and not re.search(r"^[^#]*minioadmin", text, re.M)
    assert values["minio"]["existingSecret"] == "partsim-milvus-minio"
    assert values["minio"]["accessKey"] == "" and values["minio"]["secretKey"] == ""
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in values["standalone"]["extraEnv"]}
    assert env == {
        "MINIO_ACCESS_KEY_ID": {"name": "partsim-milvus-minio", "key": "accesskey"},
        "MINIO_SECRET_ACCESS_KEY": {"name": "partsim-milvus-minio", "key": "secretkey"},
    }


# -- Redis AUTH and TLS -------------------------------------------------------------------------------------
ITEM = [IngestItem("t1", {"title": "t"}, uri="/x.wav")]


@pytest.fixture(scope="module")
def redis_auth():
    with RedisServer(password="s3cret-" + os.urandom(8).hex()) as srv:
        yield srv


def test_the_queue_and_cache_work_with_redis_auth_from_the_url_or_a_password_file(redis_auth, tmp_path):
    bare = redis_auth.url.replace(f":{redis_auth.password}@", "")
    queue = make_job_queue(redis_auth.url, None)  # the password in the URL
    assert queue.get(queue.submit(ITEM)).state == "queued"
    queue.close()
    queue = make_job_queue(bare, None, redis_password=redis_auth.password)  # from a file: server.py reads it
    assert queue.get(queue.submit(ITEM)).state == "queued"
    queue.close()
    cache = RedisCache(bare, password=redis_auth.password)
    cache.put("k", b"v")
    assert cache.get("k") == b"v"
    assert redis_auth.password not in cache.url  # logs and errors show the URL redacted
    cache.close()


@pytest.mark.parametrize("password", ["wrong", None])
def test_a_wrong_or_missing_redis_password_fails_at_once_with_one_precise_error(redis_auth, password):
    bare = redis_auth.url.replace(f":{redis_auth.password}@", "")
    url = bare.replace("redis://", f"redis://:{password}@") if password else bare
    t = time.monotonic()
    with pytest.raises(InvalidArgument) as err:
        make_job_queue(url, None)
    assert time.monotonic() - t < 5
    message = str(err.value)
    assert "AUTH failed" in message and "PARTSIM_GATEWAY_REDIS_PASSWORD_FILE" in message
    assert "wrong" not in message.split("AUTH failed")[0]  # the URL is shown redacted


@pytest.mark.slow
def test_rediss_urls_speak_tls_and_a_plaintext_client_fails_fast(tmp_path):
    certs = tmp_path / "certs"
    proc = run_script("dev-certs.py", str(certs))
    if proc.returncode != 0:
        pytest.skip(f"scripts/dev-certs.py failed: {proc.stderr[-300:]}")
    tls = tuple(str(certs / "searcher" / f) for f in ("tls.crt", "tls.key", "ca.crt"))
    with RedisServer(password="tls-" + os.urandom(8).hex(), tls=tls) as srv:
        assert srv.url.startswith("rediss://")
        queue = make_job_queue(f"{srv.url}?ssl_ca_certs={tls[2]}", None)
        assert queue.get(queue.submit(ITEM)).state == "queued"
        queue.close()
        t = time.monotonic()
        with pytest.raises((Unavailable, InvalidArgument)):
            make_job_queue(srv.url.replace("rediss://", "redis://"), None)
        assert time.monotonic() - t < 15


def test_the_gateway_config_takes_a_redis_password_file(tmp_path):
    cls = service_configs()["gateway"]
    assert "redis_password_file" in {f.name for f in dataclasses.fields(cls)}
    with pytest.raises(InvalidArgument, match="PARTSIM_GATEWAY_REDIS_PASSWORD_FILE"):
        parse(cls, cls.prefix, [], environ={**NEEDED, "PARTSIM_GATEWAY_REDIS_PASSWORD_FILE": str(tmp_path / "pw")})
