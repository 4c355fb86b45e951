"""Reading rendered Kubernetes objects as the cluster would: objects by kind, the partsim workloads
and their component label, label-selector semantics, and a container's environment as its pod
sees it (ConfigMaps via envFrom, then env)."""

from __future__ import annotations

from .util import service_configs


def by_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def workloads(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


def component(o: dict) -> str:
    return o["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component", "")


def matches(selector: dict | None, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels + matchExpressions); {} selects all."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def health_port(probe: dict) -> int | None:
    """The port whose grpc.health.v1 a probe checks: the kubelet's own gRPC probe, or (components/tls:
    the kubelet speaks no TLS) an exec of ``partsim health 127.0.0.1:PORT``; None for anything else."""
    if "grpc" in probe:
        return probe["grpc"].get("port")
    command = (probe.get("exec") or {}).get("command") or []
    if command[:2] == ["partsim", "health"] and command[2].startswith("127.0.0.1:"):
        return int(command[2].rsplit(":", 1)[1])
    return None


def config_classes() -> dict[str, type]:
    return {f"PARTSIM_{name.upper()}": cls for name, cls in service_configs().items()}


def pod_env(o: dict, objs: list[dict]) -> dict[str, str]:
    """The container's environment as the pod would see it (ConfigMaps via envFrom, then env)."""
    cms = by_kind(objs, "ConfigMap")
    c = o["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for src in c.get("envFrom") or []:
        name = src["configMapRef"]["name"]
        assert name in cms, f"{o['metadata']['name']}: envFrom ConfigMap {name} is not rendered"
        env.update(cms[name].get("data") or {})
    for e in c.get("env") or []:
        env[e["name"]] = e.get("value", "<valueFrom>")
    return env
