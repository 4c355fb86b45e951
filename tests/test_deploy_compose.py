"""The compose stack: deploy/docker-compose*.yml against the Compose Specification's JSON schema
and the services' real configuration, the Prometheus scrape configuration and the Grafana
provisioning. No container engine is needed: ``docker compose config`` also runs where the docker
CLI and its compose plugin are installed, and is skipped (saying which is missing) elsewhere."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from .deploy_files import DEPLOY, IMAGE, ROOT, SERVICES, UID, exact_tag
from .util import service_configs

COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_GPU = DEPLOY / "docker-compose.gpu.yml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
PUBLISHED = {"gateway": [50051, 8080], "grafana": [3000], "prometheus": [9090]}  # gateway: gRPC, HTTP/JSON API


def _interpolate(value, env: dict[str, str] | None = None):
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR:?msg} with only the variables of ``env`` set
    (the env file scripts/compose-secrets.sh writes, say)."""
    env = env or {}
    if isinstance(value, str):

        def sub(m):
            expr = m.group(1)
            if "?" in expr:
                name = expr.split("?", 1)[0].rstrip(":")
                if name not in env:
                    pytest.fail(f"compose needs variable {name} to be set")
                return env[name]
            for op in (":-", "-"):
                if op in expr:
                    return env.get(expr.split(op, 1)[0], expr.split(op, 1)[1])
            return env.get(expr, "")

        return re.sub(r"\$\{([^}]+)\}", sub, value)
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def secrets(tmp_path_factory) -> dict[str, str]:
    """The variables scripts/compose-secrets.sh writes (into a temporary env file)."""
    path = tmp_path_factory.mktemp("compose") / ".env"
    proc = subprocess.run([str(ROOT / "scripts" / "compose-secrets.sh"), str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


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


def test_docker_compose_config():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("this machine has no docker CLI: `docker compose config` cannot run here")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("this machine's docker has no compose plugin (`docker compose version` failed)")
    for files in (["-f", str(COMPOSE)], ["-f", str(COMPOSE), "-f", str(COMPOSE_GPU)]):
        proc = subprocess.run([docker, "compose", *files, "config", "-q"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def validator():
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
    doc["services"]["gateway"]["healthcheck"]["intervall"] = "10s"  # a typo
    doc["services"]["redis"]["imagee"] = "redis:7"  # an unknown service key
    doc["services"]["embedder"]["cap_drop"] = "ALL"  # a string where a list goes
    assert len(list(validator.iter_errors(doc))) >= 3


def test_partsim_services_are_hardened_and_health_checked(secrets):
    services = _interpolate(_load(COMPOSE)["services"], secrets)
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
                assert key[len(prefix) :].lower() in fields[name], f"{path.name} {name}: no config field for {key}"


def test_gateway_and_searcher_are_wired_to_the_right_services():
    services = _load(COMPOSE)["services"]
    env = _env(services["gateway"])
    for dep in ("embedder", "searcher", "separator"):
        target = env[f"PARTSIM_GATEWAY_{dep.upper()}"]
        host, port = target.removeprefix("dns:///").rsplit(":", 1)
        assert host == dep and int(port) == SERVICES[dep][0]
    assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD:\?[^}]+\}@redis:6379/0", env["PARTSIM_GATEWAY_REDIS_URL"])
    assert "redis" in services
    assert _env(services["searcher"])["PARTSIM_SEARCHER_MILVUS_URI"] == "http://milvus:19530"
    assert "milvus" in services


def test_only_gateway_grafana_prometheus_publish_on_localhost(secrets):
    services = _interpolate(_load(COMPOSE)["services"], secrets)
    published = {}
    for name, s in services.items():
        for p in s.get("ports", []):
            parts = str(p).split(":")
            assert len(parts) == 3, f"{name}: {p} must name the host address"
            published.setdefault(name, []).append(int(parts[2]))
            assert parts[0] == "127.0.0.1", f"{name}: {p} is not bound to 127.0.0.1 by default"
    assert published == PUBLISHED


def test_images_are_pinned_and_volumes_exist():
    doc = _load(COMPOSE)
    named = set(doc.get("volumes", {}))
    for path in (COMPOSE, COMPOSE_GPU):
        for name, s in _load(path)["services"].items():
            assert exact_tag(s["image"]), f"{path.name} {name}: image {s['image']} is not pinned to a release"
            for v in s.get("volumes", []):
                source = str(v).split(":")[0] if isinstance(v, str) else v.get("source", "")
                if source.startswith("./certs/"):  # scripts/dev-certs.py deploy/certs writes them (git-ignored)
                    continue  # tests/test_security_tls.py checks that it writes each one mounted
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
    assert config.is_file(), f"{config} is shipped with the compose stack"
    services = _load(COMPOSE)["services"]
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    prom = yaml.safe_load(config.read_text())
    for rule_file in prom.get("rule_files", []):
        assert (config.parent / rule_file).exists(), rule_file
    jobs = {
        j["job_name"]: [t for sc in j.get("static_configs", []) for t in sc["targets"]] for j in prom["scrape_configs"]
    }
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
    assert dashboard.is_file(), f"{dashboard} is shipped (scripts/gen-dashboard.py writes it)"
    uids = set(re.findall(r'"datasource"\s*:\s*\{[^}]*"uid"\s*:\s*"([^"]+)"', dashboard.read_text()))
    assert uids <= {"prometheus", "-- Grafana --", "grafana", "${datasource}", "${DS_PROMETHEUS}"}, uids
