"""The Kubernetes manifests (k8s/): rendered with the real kustomize (``kubectl kustomize``),
validated offline against the Kubernetes OpenAPI schemas (kubernetes-validate, strict) and the
Prometheus Operator CRD schemas (tests/data/crds), and checked for the properties the cluster
relies on: hardened pods, gRPC probes, PDBs, headless Services behind dns:/// targets, real
config field names, the single-replica searcher, GPU/HPA/NetworkPolicy/monitoring/ingest/audio
components. Renders the base, both overlays and all 64 combinations of the six components.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from .util import service_configs

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
CRDS = Path(__file__).resolve().parent / "data" / "crds"
K8S_VERSION = "1.30.0"
IMAGE = "ghcr.io/partsim/partsim"
# canonical order: ingest-worker before audio-store (audio-store patches the ingest workers)
COMPONENTS = ["gpu", "hpa", "network-policies", "monitoring", "ingest-worker", "audio-store"]
SERVICES = {  # component -> (gRPC port, metrics port, env prefix)
    "gateway": (50051, 9091, "PARTSIM_GATEWAY"),
    "embedder": (50052, 9092, "PARTSIM_EMBEDDER"),
    "searcher": (50053, 9093, "PARTSIM_SEARCHER"),
    "separator": (50054, 9094, "PARTSIM_SEPARATOR"),
    "ingest-worker": (50051, 9091, "PARTSIM_GATEWAY"),
}
HEADLESS = {"embedder": "partsim-embedder", "searcher": "partsim-searcher", "separator": "partsim-separator"}
KUBECTL = shutil.which("kubectl")

pytestmark = pytest.mark.timeout(300)


# ----------------------------------------------------------------------------- rendering

def _kustomize(path: Path) -> list[dict]:
    proc = subprocess.run([KUBECTL, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(path)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def renders() -> dict[str, list[dict]]:
    """name -> rendered objects, for base, overlays/cpu, overlays/gpu and every component subset."""
    if KUBECTL is None:
        pytest.skip("kubectl (with its embedded kustomize) is not installed: cannot render k8s/")
    jobs: dict[str, Path] = {"base": K8S / "base", "overlay-cpu": K8S / "overlays" / "cpu",
                             "overlay-gpu": K8S / "overlays" / "gpu"}
    with tempfile.TemporaryDirectory(prefix="partsim-k8s-") as tmp:
        for n in range(1, len(COMPONENTS) + 1):
            for combo in itertools.combinations(COMPONENTS, n):
                d = Path(tmp) / "+".join(combo)
                d.mkdir()
                rel = os.path.relpath(K8S, d)
                doc = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                       "namespace": "partsim-test", "resources": [f"{rel}/base"],
                       "components": [f"{rel}/components/{c}" for c in combo]}
                (d / "kustomization.yaml").write_text(yaml.safe_dump(doc))
                jobs["+".join(combo)] = d
        with ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 2))) as pool:
            out = dict(zip(jobs, pool.map(_kustomize, jobs.values())))
    assert len(out) == 3 + 2 ** len(COMPONENTS) - 1
    return out


def components_of(name: str) -> set[str]:
    if name == "base":
        return set()
    if name == "overlay-cpu":
        return {"hpa", "network-policies", "monitoring", "ingest-worker", "audio-store"}
    if name == "overlay-gpu":
        return {"gpu", "hpa", "network-policies", "monitoring", "ingest-worker", "audio-store"}
    return set(name.split("+"))


RENDER_NAMES = (["base", "overlay-cpu", "overlay-gpu"]
                + ["+".join(c) for n in range(1, len(COMPONENTS) + 1) for c in itertools.combinations(COMPONENTS, n)])


# ----------------------------------------------------------------------------- helpers

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


# ----------------------------------------------------------------------------- schema validation

@functools.lru_cache(maxsize=None)
def crd_validator(kind: str):
    import jsonschema

    files = {"PodMonitor": "monitoring.coreos.com_podmonitors.v1.json",
             "PrometheusRule": "monitoring.coreos.com_prometheusrules.v1.json"}
    if kind not in files:
        return None
    doc = json.loads((CRDS / files[kind]).read_text())
    schema = doc["schema"]

    def strict(node, top=False):
        # the API server prunes unknown fields; here they are errors (a typo in a key must fail)
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields") and not top):
                node["additionalProperties"] = False
            for k, v in node.items():
                if k == "properties":
                    for name, sub in v.items():
                        strict(sub, top=(top and name == "metadata"))
                else:
                    strict(v)
        elif isinstance(node, list):
            for v in node:
                strict(v)

    strict(schema)
    schema["additionalProperties"] = False
    return jsonschema.Draft7Validator(schema)


def validate_object(obj: dict) -> None:
    import kubernetes_validate

    v = crd_validator(obj.get("kind", ""))
    if v is not None:
        assert obj["apiVersion"] == "monitoring.coreos.com/v1", obj["apiVersion"]
        errors = sorted(v.iter_errors(obj), key=lambda e: list(e.path))
        assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: " + "; ".join(
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
        return
    # built-in kinds; an unknown kind raises SchemaNotFoundError and fails the test
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_every_rendered_object_validates(renders):
    seen: dict[str, dict] = {}
    for objs in renders.values():
        for o in objs:
            seen.setdefault(json.dumps(o, sort_keys=True), o)
    failures = []
    for o in seen.values():
        try:
            validate_object(o)
        except Exception as exc:  # collect them all: one report
            failures.append(f"{o.get('kind')}/{o.get('metadata', {}).get('name')}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures[:20])
    kinds = {o["kind"] for o in seen.values()}
    assert {"PodMonitor", "PrometheusRule", "NetworkPolicy", "HorizontalPodAutoscaler",
            "StatefulSet", "Deployment", "PodDisruptionBudget"} <= kinds


def test_validation_rejects_unknown_kinds_and_fields():
    import kubernetes_validate

    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate_object({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x"}})
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dataa": {}})
    with pytest.raises(AssertionError):
        validate_object({"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
                         "metadata": {"name": "x"}, "spec": {"selector": {}, "podMetricsEndpoint": []}})


# ----------------------------------------------------------------------------- per-render checks

@pytest.mark.parametrize("name", RENDER_NAMES)
def test_render_is_consistent_and_hardened(renders, name):
    objs = renders[name]
    comps = components_of(name)
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), "duplicate objects"
    ns = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
    if name != "base":
        assert len(ns) == 1 and None not in ns, f"one namespace for everything, got {ns}"
    else:
        assert ns == {None}, "base must stay namespace-agnostic"
    for o in objs:
        labels = o["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/name") == "partsim", f"{o['kind']}/{o['metadata']['name']}"
        assert labels.get("app.kubernetes.io/part-of") == "partsim", f"{o['kind']}/{o['metadata']['name']}"

    sas, svcs = by_kind(objs, "ServiceAccount"), by_kind(objs, "Service")
    pvcs, pdbs, hpas = by_kind(objs, "PersistentVolumeClaim"), by_kind(objs, "PodDisruptionBudget"), \
        by_kind(objs, "HorizontalPodAutoscaler")
    wls = workloads(objs)
    wl_comps = {component(w) for w in wls}
    expected = {"gateway", "embedder", "searcher", "separator", "redis"} | (
        {"ingest-worker"} if "ingest-worker" in comps else set())
    assert wl_comps == expected

    for w in wls:
        wname, comp = w["metadata"]["name"], component(w)
        tpl = w["spec"]["template"]
        pod = tpl["spec"]
        plabels = tpl["metadata"]["labels"]
        assert matches(w["spec"]["selector"], plabels), f"{wname}: selector does not select its pods"
        assert plabels.get("app.kubernetes.io/part-of") == "partsim", f"{wname}: default-deny would miss it"
        # service account, no token
        assert pod.get("serviceAccountName") in sas, f"{wname}: its ServiceAccount is missing"
        assert sas[pod["serviceAccountName"]].get("automountServiceAccountToken") is False
        assert pod.get("automountServiceAccountToken") is False
        # pod security
        psc = pod["securityContext"]
        assert psc.get("runAsNonRoot") is True and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert psc.get("runAsUser") and psc.get("fsGroup"), wname
        # a PDB selects it, and cannot block a drain of a single replica forever
        covering = [p for p in pdbs.values() if matches(p["spec"]["selector"], plabels)]
        assert len(covering) == 1, f"{wname}: {len(covering)} PDBs select it"
        if w["spec"].get("replicas", 1) == 1 and "maxUnavailable" not in covering[0]["spec"]:
            assert covering[0]["spec"].get("minAvailable") in (0, "0%"), f"{wname}: PDB blocks drains"
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for vct in w["spec"].get("volumeClaimTemplates") or []:
            volumes[vct["metadata"]["name"]] = {"name": vct["metadata"]["name"], "claimTemplate": True}
        for v in volumes.values():
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and claim != "partsim-catalog":  # partsim-catalog: provided by the operator
                assert claim in pvcs, f"{wname}: PVC {claim} is not rendered"
        for c in pod["containers"]:
            where = f"{wname}/{c['name']}"
            res = c.get("resources") or {}
            for k in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(k) or {}), f"{where}: resources.{k} cpu+memory"
            csc = c.get("securityContext") or {}
            assert csc.get("allowPrivilegeEscalation") is False, where
            assert csc.get("readOnlyRootFilesystem") is True, where
            assert csc.get("capabilities", {}).get("drop") == ["ALL"], where
            for m in c.get("volumeMounts") or []:
                assert m["name"] in volumes, f"{where}: mounts unknown volume {m['name']}"
            tmp = [m for m in c.get("volumeMounts") or [] if m["mountPath"] == "/tmp"]
            assert tmp and "sizeLimit" in (volumes[tmp[0]["name"]].get("emptyDir") or {}), \
                f"{where}: /tmp must be an emptyDir with a sizeLimit"
            assert c.get("readinessProbe") and c.get("livenessProbe"), where
            if comp == "redis":
                continue
            # partsim containers: the project image, gRPC probes on the grpc port, metrics port
            assert c["image"].startswith(IMAGE + ":0.1.0"), f"{where}: image {c['image']}"
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            grpc_port, metrics_port, prefix = SERVICES[comp]
            assert ports == {"grpc": grpc_port, "metrics": metrics_port}, f"{where}: ports {ports}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert c[probe].get("grpc", {}).get("port") == grpc_port, f"{where}: {probe} must be gRPC"
            startup = c["startupProbe"]
            assert startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) >= 60, \
                f"{where}: the startupProbe must allow at least a minute for model loading"
            env = pod_env(w, objs)
            for k, v in {"HOME": "/tmp", "XDG_CACHE_HOME": "/tmp/.cache", "MPLCONFIGDIR": "/tmp/matplotlib",
                         "TORCH_HOME": "/tmp/torch", "HF_HUB_OFFLINE": "1"}.items():
                assert env.get(k) == v, f"{where}: {k}"
            assert env.get(f"{prefix}_ADDRESS") == f"0.0.0.0:{grpc_port}"
            assert env.get(f"{prefix}_METRICS_PORT") == str(metrics_port)
            assert env.get(f"{prefix}_MAX_CONNECTION_AGE_SECONDS") == "300", where
            grace = float(env.get(f"{prefix}_GRACE_SECONDS", "10"))
            assert pod["terminationGracePeriodSeconds"] > grace, f"{where}: termination grace <= service grace"
            if comp in ("gateway", "ingest-worker"):
                for backend, svc in HEADLESS.items():
                    target = env[f"PARTSIM_GATEWAY_{backend.upper()}"]
                    m = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", target)
                    assert m, f"{where}: {backend} target {target!r} is not dns:///name:port"
                    assert m.group(1) == svc and m.group(1) in svcs, f"{where}: {target} names no Service"
                    assert svcs[svc]["spec"].get("clusterIP") == "None", f"{svc} must be headless"
                    assert int(m.group(2)) in [p["port"] for p in svcs[svc]["spec"]["ports"]]
                assert env.get("PARTSIM_GATEWAY_LB_POLICY") == "round_robin"
                assert env.get("PARTSIM_GATEWAY_REDIS_URL") == "redis://partsim-redis:6379/0"
                assert "partsim-redis" in svcs and 6379 in [p["port"] for p in svcs["partsim-redis"]["spec"]["ports"]]
            if comp == "searcher":
                assert w["kind"] == "StatefulSet" and w["spec"]["replicas"] == 1, "searcher: 1-replica StatefulSet"
                data = [m for m in c["volumeMounts"] if m["mountPath"] == "/data"]
                assert data and volumes[data[0]["name"]].get("claimTemplate"), "searcher: /data must be a PVC"
                assert env["PARTSIM_SEARCHER_DATA_DIR"] == "/data"
                assert env["PARTSIM_SEARCHER_MILVUS_URI"] == "http://partsim-milvus:19530"

    # Services select existing pods and name ports those pods have
    for s in svcs.values():
        sel = s["spec"]["selector"]
        targets = [w for w in wls if matches({"matchLabels": sel}, w["spec"]["template"]["metadata"]["labels"])]
        assert targets, f"Service {s['metadata']['name']} selects no pods"
        for w in targets:
            pnames = {p["name"] for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
            for p in s["spec"]["ports"]:
                assert p["targetPort"] in pnames, f"Service {s['metadata']['name']}: targetPort {p['targetPort']}"
    assert svcs["partsim-gateway"]["spec"].get("clusterIP") != "None"
    assert svcs["partsim-gateway"]["spec"].get("type", "ClusterIP") == "ClusterIP"
    for svc in HEADLESS.values():
        assert svcs[svc]["spec"].get("clusterIP") == "None", f"{svc} must be headless"
    assert not any(matches({"matchLabels": s["spec"]["selector"]}, {"app.kubernetes.io/name": "partsim",
                                                                     "app.kubernetes.io/component": "ingest-worker"})
                   for s in svcs.values()), "the ingest workers get no Service"
    # PDBs select something
    for p in pdbs.values():
        assert any(matches(p["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"]) for w in wls), \
            f"PDB {p['metadata']['name']} selects no workload"

    # Redis: durable stream
    redis = by_kind(objs, "StatefulSet")["partsim-redis"]
    rc = redis["spec"]["template"]["spec"]["containers"][0]
    args = rc.get("args") or []
    assert "--appendonly" in args and args[args.index("--appendonly") + 1] == "yes"
    assert re.fullmatch(r"redis:7\.2(\.\d+)?", rc["image"]), rc["image"]
    assert redis["spec"]["volumeClaimTemplates"], "Redis needs a PVC for its AOF"

    # HPAs: existing targets, never the searcher, Deployment replicas left to the HPA
    deps = by_kind(objs, "Deployment")
    for h in hpas.values():
        ref = h["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in deps, f"HPA {h['metadata']['name']}: no target"
        assert "replicas" not in deps[ref["name"]]["spec"], f"{ref['name']}: replicas fights its HPA"
    assert not any(h["spec"]["scaleTargetRef"]["name"] == "partsim-searcher" for h in hpas.values())
    assert ("hpa" in comps) == ({"partsim-gateway", "partsim-embedder", "partsim-separator"} <= set(hpas))

    check_config_names(objs)
    check_gateway_modes(objs, comps)
    check_gpu(objs, comps)
    if "network-policies" in comps:
        check_network_policies(objs)
    else:
        assert not by_kind(objs, "NetworkPolicy")
    if "monitoring" in comps:
        check_monitoring(objs)
    if "ingest-worker" in comps:
        check_ingest_worker(objs)


def check_config_names(objs: list[dict]) -> None:
    """PARTSIM_<SVC>_<FIELD> names are real config fields, and their values parse as that field's type."""
    from partsim.services.config import _kind, _parse

    classes = config_classes()
    envs: list[tuple[str, str, str]] = []
    for cm in by_kind(objs, "ConfigMap").values():
        for k, v in (cm.get("data") or {}).items():
            envs.append((f"ConfigMap/{cm['metadata']['name']}", k, v))
    for w in workloads(objs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env") or []:
                envs.append((w["metadata"]["name"], e["name"], e.get("value")))
    for where, k, v in envs:
        if not k.startswith("PARTSIM_"):
            continue
        prefix = next((p for p in classes if k.startswith(p + "_")), None)
        assert prefix, f"{where}: {k} belongs to no service"
        fields = {f.name: f for f in dataclasses.fields(classes[prefix])}
        fname = k[len(prefix) + 1:].lower()
        assert fname in fields, f"{where}: {k} is not a field of {classes[prefix].__name__}"
        if v is not None:
            _parse(_kind(fields[fname]), v, k)  # raises InvalidArgument on a mistyped value
    # each service's whole configuration passes its own validate() as the pod would run it
    # (ALLOWED_ROOTS names folders that exist only in the pod: checked by check_ingest_worker)
    from partsim.services.config import parse

    for w in workloads(objs):
        comp = component(w)
        if comp == "redis":
            continue
        prefix = SERVICES[comp][2]
        env = {k: v for k, v in pod_env(w, objs).items() if k != "PARTSIM_GATEWAY_ALLOWED_ROOTS"}
        parse(classes[prefix], prefix, argv=[], environ=env)


def check_gateway_modes(objs: list[dict], comps: set[str]) -> None:
    cms, deps, pvcs = by_kind(objs, "ConfigMap"), by_kind(objs, "Deployment"), by_kind(objs, "PersistentVolumeClaim")
    gw = pod_env(deps["partsim-gateway"], objs)
    assert gw["PARTSIM_GATEWAY_INGEST_WORKERS"] == "0", "the gateway Deployment is API-only"
    stores = ["partsim-gateway"] + (["partsim-ingest-worker"] if "ingest-worker" in comps else [])
    for d in stores:
        env = pod_env(deps[d], objs)
        mounts = {m["mountPath"]: m["name"] for m in deps[d]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
        vols = {v["name"]: v for v in deps[d]["spec"]["template"]["spec"]["volumes"]}
        if "audio-store" in comps:
            assert env["PARTSIM_GATEWAY_STORE_AUDIO"] == "true" and env["PARTSIM_GATEWAY_AUDIO_DIR"] == "/data/audio", d
            assert vols[mounts["/data/audio"]]["persistentVolumeClaim"]["claimName"] == "partsim-audio", d
            assert pvcs["partsim-audio"]["spec"]["accessModes"] == ["ReadWriteMany"]
        else:
            assert env["PARTSIM_GATEWAY_STORE_AUDIO"] == "false", d
            assert "/data/audio" not in mounts and "partsim-audio" not in pvcs, d
    assert ("audio-store" in comps) == ("partsim-audio" in pvcs)
    assert all(cm["data"].get("PARTSIM_GATEWAY_REDIS_URL") for n, cm in cms.items()
               if any(k.startswith("PARTSIM_GATEWAY_") for k in cm.get("data") or {})), \
        "gateway processes need Redis (no DATA_DIR is configured)"


def check_gpu(objs: list[dict], comps: set[str]) -> None:
    deps = by_kind(objs, "Deployment")
    sts = by_kind(objs, "StatefulSet")
    for name in ("partsim-embedder", "partsim-separator"):
        pod = deps[name]["spec"]["template"]["spec"]
        c = pod["containers"][0]
        env = pod_env(deps[name], objs)
        prefix = SERVICES[name.removeprefix("partsim-")][2]
        gpus = c["resources"]["limits"].get("nvidia.com/gpu")
        if "gpu" in comps:
            assert gpus == 1 and c["resources"]["requests"].get("nvidia.com/gpu") == 1, name
            assert env[f"{prefix}_DEVICE"] == "cuda", name
            assert c["image"] == f"{IMAGE}:0.1.0-gpu", name
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        else:
            assert gpus is None and env[f"{prefix}_DEVICE"] == "cpu" and c["image"] == f"{IMAGE}:0.1.0", name
    others = [deps["partsim-gateway"], sts["partsim-searcher"]] + (
        [deps["partsim-ingest-worker"]] if "partsim-ingest-worker" in deps else [])
    for w in others:
        c = w["spec"]["template"]["spec"]["containers"][0]
        assert c["image"] == f"{IMAGE}:0.1.0" and "nvidia.com/gpu" not in c["resources"]["limits"]


def _peer_is_in_namespace(peer: dict) -> bool:
    return "ipBlock" not in peer and "namespaceSelector" not in peer


def _peer_is_monitoring(peer: dict) -> bool:
    return (set(peer) == {"namespaceSelector"}
            and peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}})


def check_network_policies(objs: list[dict]) -> None:
    pols = list(by_kind(objs, "NetworkPolicy").values())
    pods = {component(w): w["spec"]["template"]["metadata"]["labels"] for w in workloads(objs)}
    gateway_labels = pods["gateway"]
    searcher_labels = pods["searcher"]
    milvus_labels = {"app.kubernetes.io/name": "milvus", "app.kubernetes.io/instance": "partsim-milvus",
                     "component": "standalone"}
    # default deny: a policy with no ingress rules selects every partsim pod
    deny = [p for p in pols if p["spec"]["policyTypes"] == ["Ingress"] and not p["spec"].get("ingress")]
    for comp, labels in pods.items():
        assert any(matches(p["spec"]["podSelector"], labels) for p in deny), f"{comp} is not default-denied"
    for p in pols:
        pname = p["metadata"]["name"]
        for rule in p["spec"].get("ingress") or []:
            ports = [x["port"] for x in rule.get("ports") or []]
            peers = rule.get("from")
            if peers is None:  # from anywhere: only the gateway's gRPC port
                assert matches(p["spec"]["podSelector"], gateway_labels), f"{pname}: opens a non-gateway pod"
                assert not any(matches(p["spec"]["podSelector"], l) for c, l in pods.items() if c != "gateway")
                assert not matches(p["spec"]["podSelector"], milvus_labels)
                assert ports == [50051], f"{pname}: the gateway admits outside traffic on gRPC only"
                continue
            for peer in peers:
                if _peer_is_in_namespace(peer):
                    continue
                assert _peer_is_monitoring(peer), f"{pname}: admits other namespaces: {peer}"
                assert ports and all(x in ("metrics", 9091, 9092, 9093, 9094) for x in ports), \
                    f"{pname}: the monitoring namespace may reach metrics ports only, got {ports}"
    # Milvus's API port: only the searcher (and Milvus's own pods) may reach it
    mpols = [p for p in pols if matches(p["spec"]["podSelector"], milvus_labels)]
    assert mpols, "no policy selects the Milvus pods of release partsim-milvus"
    api_sources = []
    for p in mpols:
        for rule in p["spec"].get("ingress") or []:
            ports = [x["port"] for x in rule.get("ports") or []]
            if ports and 19530 not in ports:
                continue
            api_sources += rule["from"]
    assert any(matches(peer.get("podSelector"), searcher_labels) for peer in api_sources)
    for peer in api_sources:
        assert _peer_is_in_namespace(peer), peer
        for comp, labels in pods.items():
            if comp != "searcher":
                assert not matches(peer.get("podSelector"), labels), f"Milvus admits {comp} on 19530"
    # the internal services admit the gateway (and ingest workers), not each other
    for comp in ("embedder", "searcher", "separator", "redis"):
        inns = [peer for p in pols if matches(p["spec"]["podSelector"], pods[comp])
                for rule in p["spec"].get("ingress") or [] for peer in rule.get("from") or []
                if _peer_is_in_namespace(peer)]
        assert any(matches(s.get("podSelector"), gateway_labels) for s in inns), f"{comp} refuses the gateway"
        for other in ("embedder", "searcher", "separator", "redis"):
            assert not any(matches(s.get("podSelector"), pods[other]) for s in inns), f"{comp} admits {other}"


def _relabel(rule: dict, labels: dict[str, str]) -> dict[str, str]:
    """Prometheus `replace` relabeling (the only action the PodMonitor uses)."""
    assert rule.get("action", "replace") == "replace"
    value = rule.get("separator", ";").join(labels.get(s, "") for s in rule["sourceLabels"])
    m = re.fullmatch(rule.get("regex", "(.*)"), value)
    if m:
        labels = dict(labels, **{rule["targetLabel"]: m.expand(rule.get("replacement", "$1").replace("$", "\\"))})
    return labels


def check_monitoring(objs: list[dict]) -> None:
    pms = list(by_kind(objs, "PodMonitor").values())
    jobs = set()
    for w in workloads(objs):
        comp, labels = component(w), w["spec"]["template"]["metadata"]["labels"]
        scraping = [pm for pm in pms if matches(pm["spec"]["selector"], labels)]
        if comp == "redis":
            assert not scraping
            continue
        assert len(scraping) == 1, f"{comp}: scraped by {len(scraping)} PodMonitors"
        for ep in scraping[0]["spec"]["podMetricsEndpoints"]:
            assert ep["port"] == "metrics"
            meta = {"job": "default", **{"__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k): v
                                         for k, v in labels.items()}}
            for r in ep.get("relabelings") or []:
                meta = _relabel(r, meta)
            assert meta["job"] == f"partsim-{comp}", f"{comp}: job label {meta['job']}"
            jobs.add(meta["job"])
    # the jobs the dashboard and the alerts select exist
    alerts = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    dash = (ROOT / "deploy" / "grafana" / "dashboards" / "partsim.json").read_text()
    used = set(re.findall(r'job=\\?"(partsim-[a-z-]+)\\?"', alerts + dash))
    assert used <= jobs | {"partsim-ingest-worker"}, f"jobs used but never scraped: {used - jobs}"
    rule = by_kind(objs, "PrometheusRule")["partsim"]
    assert rule["spec"]["groups"] == yaml.safe_load(alerts)["groups"]
    cm = by_kind(objs, "ConfigMap")["partsim-grafana-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["partsim.json"]) == json.loads(dash)


def check_ingest_worker(objs: list[dict]) -> None:
    w = by_kind(objs, "Deployment")["partsim-ingest-worker"]
    c = w["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["python", "-m", "partsim.services.gateway"]
    env = pod_env(w, objs)
    assert int(env["PARTSIM_GATEWAY_INGEST_WORKERS"]) > 0
    assert env["PARTSIM_GATEWAY_ALLOWED_ROOTS"] == "/catalog"
    consumer = [e for e in c["env"] if e["name"] == "PARTSIM_GATEWAY_CONSUMER"][0]
    assert consumer["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    cat = [m for m in c["volumeMounts"] if m["mountPath"] == "/catalog"][0]
    assert cat.get("readOnly") is True
    vol = [v for v in w["spec"]["template"]["spec"]["volumes"] if v["name"] == cat["name"]][0]
    assert vol["persistentVolumeClaim"]["claimName"] == "partsim-catalog"
    hpa = by_kind(objs, "HorizontalPodAutoscaler")["partsim-ingest-worker"]
    metrics = hpa["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["External"]
    assert metrics[0]["external"]["metric"]["name"] == "partsim_ingest_queue_lag_seconds"
    sa = w["spec"]["template"]["spec"]["serviceAccountName"]
    assert sa == "partsim-ingest-worker"


# ----------------------------------------------------------------------------- files beside the renders

def test_monitoring_copies_are_fresh():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-k8s-monitoring.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_gen_k8s_monitoring_check_detects_staleness(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_k8s_monitoring", ROOT / "scripts" / "gen-k8s-monitoring.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    alerts = tmp_path / "alerts.yml"
    alerts.write_text((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text() + "\n  - name: extra\n    rules: []\n")
    monkeypatch.setattr(mod, "ALERTS", alerts)
    assert mod.main(["--check"]) == 1


def test_milvus_values_match_the_manifests():
    values = yaml.safe_load((K8S / "milvus" / "values.yaml").read_text())
    text = (K8S / "milvus" / "values.yaml").read_text()
    assert re.search(r"helm install partsim-milvus milvus/milvus --version \d+\.\d+\.\d+", text)
    assert values["service"]["port"] == 19530
    assert values["image"]["all"]["tag"].startswith("v2.")
    from partsim.assets import default_manifest

    manifest = json.loads(default_manifest().read_text())
    assert f"subspace_dim {manifest['subspace_dim']}" in text and f"{len(manifest['parts'])} parts" in text
    for part in manifest["parts"]:
        assert f"partsim_{part}" in text
    assert (K8S / "components" / "ingest-worker" / "prometheus-adapter-values.yaml").is_file()
    adapter = yaml.safe_load((K8S / "components" / "ingest-worker" / "prometheus-adapter-values.yaml").read_text())
    assert adapter["rules"]["external"][0]["name"]["as"] == "partsim_ingest_queue_lag_seconds"
