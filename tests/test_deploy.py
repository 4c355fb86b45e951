"""The deployment files: ``partsim health``, deploy/Dockerfile*, the requirement locks,
deploy/docker-compose*.yml (against the Compose Specification's JSON schema and the services'
real configuration) and the Grafana provisioning. No container engine is needed: ``docker compose
config`` runs where the compose plugin exists and is skipped elsewhere."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from partsim.cli import main

from .util import service_configs

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_GPU = DEPLOY / "docker-compose.gpu.yml"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.gpu"]
LOCKS = {"cpu": DEPLOY / "requirements" / "cpu.txt", "gpu": DEPLOY / "requirements" / "gpu.txt"}
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"

# The contract: service -> (gRPC port, metrics port, grpc.health.v1 service name)
SERVICES = {
    "gateway": (50051, 9091, "partsim.v1.PartsimService"),
    "embedder": (50052, 9092, "partsim.v1.EmbedderService"),
    "searcher": (50053, 9093, "partsim.v1.SearcherService"),
    "separator": (50054, 9094, "partsim.v1.SeparatorService"),
}
IMAGE = "ghcr.io/partsim/partsim:0.1.0"
PUBLISHED = {"gateway": 50051, "grafana": 3000, "prometheus": 9090}
UID = "10001"


# --------------------------------------------------------------------------- partsim health

@pytest.fixture()
def runtime():
    from partsim.services.runtime import ServiceRuntime
    from partsim.v1 import embedder_pb2  # noqa: F401  (registers partsim.v1.EmbedderService's descriptor)

    rt = ServiceRuntime("health-test", address="127.0.0.1:0", max_message_bytes=1 << 20, metrics_port=None)
    rt.start(["partsim.v1.EmbedderService"])
    yield rt
    rt.stop(grace=0)


def _health(capsys, *argv) -> tuple[int, str, str]:
    code = main(["health", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_health_serving(runtime, capsys):
    runtime.set_serving(True)
    code, out, err = _health(capsys, runtime.address, "--timeout", "5")
    assert (code, err) == (0, "")
    assert out.strip().endswith("SERVING")
    code, out, err = _health(capsys, runtime.address, "--service", "partsim.v1.EmbedderService")
    assert (code, err) == (0, "")


def test_health_not_serving(runtime, capsys):
    # NOT_SERVING until the service has loaded its model (rt.set_serving(True) not called)
    code, out, err = _health(capsys, runtime.address, "--service", "partsim.v1.EmbedderService")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "NOT_SERVING" in err
    runtime.set_serving(True)
    runtime.set_serving(False)
    assert _health(capsys, runtime.address)[0] == 1


def test_health_unknown_service(runtime, capsys):
    runtime.set_serving(True)
    code, out, err = _health(capsys, runtime.address, "--service", "partsim.v1.NoSuchService")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "unknown service" in err and "NoSuchService" in err


def test_health_closed_port_is_one_line_and_fast():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "partsim.cli", "health", f"127.0.0.1:{port}", "--timeout", "1"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "unreachable" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_health_bad_target_is_a_user_error(capsys):
    code, out, err = _health(capsys, "no-port-here")
    assert code == 2 and err.startswith("partsim: error: expected HOST:PORT")


# --------------------------------------------------------------------------- helpers

def _interpolate(value):
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR:?msg} with no variable set."""
    if isinstance(value, str):
        def sub(m):
            expr = m.group(1)
            for op in (":-", "-"):
                if op in expr:
                    return expr.split(op, 1)[1]
            if ":?" in expr or "?" in expr:
                pytest.fail(f"compose needs variable {expr.split(':')[0]} to be set")
            return ""
        return re.sub(r"\$\{([^}]+)\}", sub, value)
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _merged() -> dict:
    """deploy/docker-compose.yml with deploy/docker-compose.gpu.yml merged over it (maps merge, the rest replaces)."""
    def merge(a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            return {k: merge(a[k], b[k]) if k in a and k in b else b.get(k, a.get(k)) for k in {**a, **b}}
        return b

    return merge(_load(COMPOSE), _load(COMPOSE_GPU))


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _config_fields() -> dict[str, set[str]]:
    return {svc: {f.name for f in dataclasses.fields(cls)} for svc, cls in service_configs().items()}


def _exact_tag(image: str) -> bool:
    """name:TAG pinned to one release (x.y.z or a dated release), or name@sha256:digest."""
    if "@sha256:" in image:
        return bool(re.search(r"@sha256:[0-9a-f]{64}$", image))
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag or tag == "latest":
        return False
    return bool(re.search(r"\d+\.\d+\.\d+|\d{4}-\d{2}-\d{2}", tag))


# --------------------------------------------------------------------------- compose

def test_docker_compose_config():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker CLI not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("docker compose plugin not installed")
    for files in (["-f", str(COMPOSE)], ["-f", str(COMPOSE), "-f", str(COMPOSE_GPU)]):
        proc = subprocess.run([docker, "compose", *files, "config", "-q"], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the test extra")
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"].rstrip("#").endswith("draft-07/schema")
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=lambda p: p.name)
def test_compose_matches_the_compose_specification(validator, path):
    errors = sorted(validator.iter_errors(_load(path)), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_check_can_fail(validator):
    doc = _load(COMPOSE)
    doc["services"]["gateway"]["healthcheck"]["intervall"] = "10s"   # a typo
    doc["services"]["redis"]["imagee"] = "redis:7"                     # an unknown service key
    doc["services"]["embedder"]["cap_drop"] = "ALL"                    # a string where a list goes
    assert len(list(validator.iter_errors(doc))) >= 3


def test_partsim_services_are_hardened_and_health_checked():
    services = _interpolate(_load(COMPOSE)["services"])
    partsim = {name for name, s in services.items() if s.get("image", "").startswith("ghcr.io/partsim/partsim:")}
    assert partsim == set(SERVICES)
    for name in partsim:
        s = services[name]
        grpc_port, metrics_port, health_name = SERVICES[name]
        assert s["image"] == IMAGE
        assert str(s.get("user", "")).split(":")[0] == UID, name
        assert s.get("read_only") is True, name
        assert s.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in s.get("security_opt", []), name
        assert any(str(t).split(":")[0] == "/tmp" for t in s.get("tmpfs", [])), name
        assert s["command"] == [f"partsim.services.{name}"]
        env = _env(s)
        prefix = f"PARTSIM_{name.upper()}_"
        assert _port_of(env[prefix + "ADDRESS"]) == grpc_port
        assert int(env[prefix + "METRICS_PORT"]) == metrics_port
        test = s["healthcheck"]["test"]
        assert test[:3] == ["CMD", "partsim", "health"], name
        assert test[3] == f"localhost:{grpc_port}", name
        assert test[test.index("--service") + 1] == health_name, name


def test_depends_on_waits_for_health():
    services = _load(COMPOSE)["services"]
    for name, s in services.items():
        deps = s.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, cond in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond.get("condition") == "service_healthy", f"{name} -> {dep}"
            assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no healthcheck"
    assert set(services["gateway"]["depends_on"]) == {"embedder", "searcher", "separator", "redis"}
    assert "milvus" in services["searcher"]["depends_on"]


def test_environment_names_are_real_config_fields():
    fields = _config_fields()
    for path in (COMPOSE, COMPOSE_GPU):
        for name, s in _load(path)["services"].items():
            if name not in SERVICES:
                continue
            for key in _env(s):
                prefix = f"PARTSIM_{name.upper()}_"
                assert key.startswith(prefix), f"{path.name} {name}: {key} is not {prefix}<FIELD>"
                assert key[len(prefix):].lower() in fields[name], f"{path.name} {name}: no config field for {key}"


def test_gateway_and_searcher_are_wired_to_the_right_services():
    services = _load(COMPOSE)["services"]
    env = _env(services["gateway"])
    for dep in ("embedder", "searcher", "separator"):
        target = env[f"PARTSIM_GATEWAY_{dep.upper()}"]
        host, port = target.removeprefix("dns:///").rsplit(":", 1)
        assert host == dep and int(port) == SERVICES[dep][0]
    assert env["PARTSIM_GATEWAY_REDIS_URL"] == "redis://redis:6379/0" and "redis" in services
    assert _env(services["searcher"])["PARTSIM_SEARCHER_MILVUS_URI"] == "http://milvus:19530"
    assert "milvus" in services


def test_only_gateway_grafana_prometheus_publish_on_localhost():
    services = _interpolate(_load(COMPOSE)["services"])
    published = {}
    for name, s in services.items():
        for p in s.get("ports", []):
            parts = str(p).split(":")
            assert len(parts) == 3, f"{name}: {p} must name the host address"
            published[name] = int(parts[2])
            assert parts[0] == "127.0.0.1", f"{name}: {p} is not bound to 127.0.0.1 by default"
    assert published == PUBLISHED


def test_images_are_pinned_and_volumes_exist():
    doc = _load(COMPOSE)
    named = set(doc.get("volumes", {}))
    for path in (COMPOSE, COMPOSE_GPU):
        for name, s in _load(path)["services"].items():
            assert _exact_tag(s["image"]), f"{path.name} {name}: image {s['image']} is not pinned to a release"
            for v in s.get("volumes", []):
                source = str(v).split(":")[0] if isinstance(v, str) else v.get("source", "")
                if source.startswith((".", "/", "~")):
                    assert not source.startswith(("/", "~")), f"{name}: absolute bind mount {source}"
                    assert (DEPLOY / source).exists(), f"{name}: bind-mounted {source} does not exist"
                else:
                    assert source in named, f"{name}: volume {source} is not declared"


def test_gpu_override():
    merged = _merged()
    for name in SERVICES:
        assert merged["services"][name]["image"] == IMAGE + "-gpu"
        assert merged["services"][name]["build"]["dockerfile"] == "deploy/Dockerfile.gpu"
    for name, var in (("embedder", "PARTSIM_EMBEDDER_DEVICE"), ("separator", "PARTSIM_SEPARATOR_DEVICE")):
        s = merged["services"][name]
        assert _env(s)[var] == "cuda"
        assert _env(s)[f"PARTSIM_{name.upper()}_ADDRESS"]  # the base file's environment is kept
        devices = s["deploy"]["resources"]["reservations"]["devices"]
        assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_prometheus_scrapes_every_service_on_its_metrics_port():
    config = DEPLOY / "prometheus" / "prometheus.yml"
    if not config.exists():
        pytest.skip("deploy/prometheus/prometheus.yml not written yet")
    services = _load(COMPOSE)["services"]
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    prom = yaml.safe_load(config.read_text())
    for rule_file in prom.get("rule_files", []):
        assert (config.parent / rule_file).exists(), rule_file
    jobs = {j["job_name"]: [t for sc in j.get("static_configs", []) for t in sc["targets"]]
            for j in prom["scrape_configs"]}
    for name, (_, metrics_port, _) in SERVICES.items():
        targets = jobs.get(f"partsim-{name}")
        assert targets, f"no scrape job partsim-{name}"
        for target in targets:
            host, port = target.rsplit(":", 1)
            assert host == name and host in services, target
            assert int(port) == metrics_port == int(_env(services[name])[f"PARTSIM_{name.upper()}_METRICS_PORT"])


def test_grafana_provisioning():
    services = _load(COMPOSE)["services"]
    mounts = dict(str(v).split(":")[:2] for v in services["grafana"]["volumes"] if str(v).startswith("./"))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["uid"] == "prometheus" and source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090" and "prometheus" in services
    boards = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/partsim.yml").read_text())
    (provider,) = boards["providers"]
    assert provider["type"] == "file"
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    dashboard = DEPLOY / "grafana" / "dashboards" / "partsim.json"
    if dashboard.exists():
        uids = set(re.findall(r'"datasource"\s*:\s*\{[^}]*"uid"\s*:\s*"([^"]+)"', dashboard.read_text()))
        assert uids <= {"prometheus", "-- Grafana --", "grafana", "${datasource}", "${DS_PROMETHEUS}"}, uids


# --------------------------------------------------------------------------- Dockerfiles

def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        instr, _, args = buf.strip().partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    return out


def _stages(path: Path) -> list[tuple[str, str | None, list[tuple[str, str]]]]:
    stages = []
    for instr, args in _instructions(path):
        if instr == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append((words[0], alias, []))
        elif stages:
            stages[-1][2].append((instr, args))
    return stages


def _dockerignore_excludes(rel: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents wins."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        parts = rel.strip("/").split("/")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_dockerignore_matcher():
    assert _dockerignore_excludes(".venv/bin/python")
    assert _dockerignore_excludes(".git/HEAD")
    assert _dockerignore_excludes("partsim-data/tracks.sqlite")
    assert _dockerignore_excludes("tests/test_deploy.py")
    assert _dockerignore_excludes("src/partsim/__pycache__/cli.cpython-311.pyc")
    assert not _dockerignore_excludes("src/partsim/cli/__init__.py")
    assert not _dockerignore_excludes("src/partsim/assets/models/csn-v2/csn.onnx")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile(path):
    stages = _stages(path)
    aliases = {alias for _, alias, _ in stages if alias}
    assert len(stages) >= 2, "multi-stage build expected"
    for image, _, _ in stages:
        if image not in aliases:
            assert _exact_tag(image), f"FROM {image} is not pinned to an exact version"
    final_image, _, final = stages[-1]
    users = [args for instr, args in final if instr == "USER"]
    assert users and users[-1].split(":")[0] == UID, "the final stage must run as uid 10001"
    runs = " ".join(args for instr, args in final if instr == "RUN")
    for tool in ("build-essential", "gcc", "g++", "python3-dev", "git ", "curl "):
        assert tool not in runs, f"final stage installs {tool.strip()}"
    assert any(instr == "COPY" and "--from=builder" in args and "/opt/venv" in args for instr, args in final)
    env = " ".join(args for instr, args in final if instr == "ENV")
    for var in ("HOME=/tmp", "XDG_CACHE_HOME=/tmp/", "MPLCONFIGDIR=/tmp/", "TORCH_HOME=/tmp/", "HF_HUB_OFFLINE=1"):
        assert var in env, var
    exposed = {int(p.split("/")[0]) for instr, args in final if instr == "EXPOSE" for p in args.split()}
    assert exposed >= {p for ports in SERVICES.values() for p in ports[:2]}
    assert any(instr in ("ENTRYPOINT", "CMD") for instr, _ in final)
    # every COPY from the build context exists and is not excluded by .dockerignore
    locks = []
    for _, _, body in stages:
        for instr, args in body:
            if instr not in ("COPY", "ADD") or "--from=" in args:
                continue
            words = [w for w in args.split() if not w.startswith("--")]
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not _dockerignore_excludes(source), f"COPY {source}: excluded by .dockerignore"
                if source.startswith("deploy/requirements/"):
                    locks.append(ROOT / source)
    assert locks and all(lock in LOCKS.values() for lock in locks)


# --------------------------------------------------------------------------- requirement locks

def _lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    entries: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n", " ", path.read_text())
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert m, f"{path.name}: not 'name==version --hash=sha256:...': {line[:120]}"
        name = canonicalize_name(m.group(1))
        assert name not in entries, f"{path.name}: {name} twice"
        entries[name] = (m.group(2), re.findall(r"sha256:([0-9a-f]{64})", m.group(3)))
    return entries


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("kind", sorted(LOCKS))
def test_lock_is_pinned_hashed_and_covers_pyproject(kind):
    path = LOCKS[kind]
    head = path.read_text().splitlines()[:8]
    assert any("deploy/requirements/lock.sh" in line for line in head)
    assert any(re.search(r"\d{4}-\d{2}-\d{2}", line) for line in head)
    lock = _lock(path)
    project = _pyproject()
    deps = [Requirement(r) for r in project["dependencies"]]
    if kind == "gpu":
        deps = [r for r in deps if canonicalize_name(r.name) != "onnxruntime"]
        deps += [Requirement(r) for r in project["optional-dependencies"]["gpu"]]
        assert "onnxruntime" not in lock, "onnxruntime and onnxruntime-gpu would overwrite each other's module"
    for req in deps:
        name = canonicalize_name(req.name)
        assert name in lock, f"{path.name}: {name} is a runtime dependency but is not locked"
        version = Version(lock[name][0])
        assert SpecifierSet(str(req.specifier)).contains(version, prereleases=True), \
            f"{path.name}: {name} {version} does not satisfy {req.specifier}"
    for test_dep in project["optional-dependencies"]["test"]:
        assert canonicalize_name(Requirement(test_dep).name) not in lock, f"{path.name}: test dependency locked"
    torch = Version(lock["torch"][0])
    if kind == "cpu":
        assert torch.local == "cpu", "the CPU image needs the +cpu build of torch"
        assert not any(n.startswith(("nvidia-", "triton", "cuda-")) for n in lock), "CUDA packages in the CPU lock"
        script = (DEPLOY / "requirements" / "lock.sh").read_text()
        pinned = re.search(r"TORCH_CPU_SHA256=([0-9a-f]{64})", script).group(1)
        assert lock["torch"][1] == [pinned]
    else:
        assert torch.local is None, "the GPU image takes PyPI's (CUDA) torch"
