"""The Kubernetes components, in every render that has them (or lacks them): gpu (embedder and
separator on CUDA), network-policies (default deny; the gateway open on gRPC only; Milvus for the
searcher only), monitoring (one PodMonitor per partsim pod, the job labels the dashboard and
alerts use, fresh copies of deploy/'s alerts and dashboard), ingest-worker (the catalog read-only,
scaled on queue lag), audio-store (a shared volume; the gateway Deployment stays API-only), and
the Milvus Helm values."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from .k8s_objects import by_kind, component, matches, pod_env, workloads
from .k8s_render import IMAGE, K8S, RENDER_NAMES, ROOT, SERVICES, components_of, renders_with
from .util import run_script

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("name", RENDER_NAMES)
def test_gateway_is_api_only_and_stores_audio_only_with_the_audio_store(k8s_renders, name):
    check_gateway_modes(k8s_renders[name], components_of(name))


@pytest.mark.parametrize("name", RENDER_NAMES)
def test_gpu_component_runs_embedder_and_separator_on_cuda(k8s_renders, name):
    check_gpu(k8s_renders[name], components_of(name))


@pytest.mark.parametrize("name", renders_with("network-policies"))
def test_network_policies_deny_by_default_and_admit_only_their_peers(k8s_renders, name):
    check_network_policies(k8s_renders[name])


@pytest.mark.parametrize("name", [n for n in RENDER_NAMES if "network-policies" not in components_of(n)])
def test_without_the_component_there_is_no_network_policy(k8s_renders, name):
    assert not by_kind(k8s_renders[name], "NetworkPolicy")


@pytest.mark.parametrize("name", renders_with("monitoring"))
def test_monitoring_scrapes_each_partsim_pod_once_under_its_job(k8s_renders, name):
    check_monitoring(k8s_renders[name])


@pytest.mark.parametrize("name", renders_with("ingest-worker"))
def test_ingest_workers_read_the_catalog_and_scale_on_queue_lag(k8s_renders, name):
    check_ingest_worker(k8s_renders[name])


def check_gateway_modes(objs: list[dict], comps: set[str]) -> None:
    cms, deps, pvcs = by_kind(objs, "ConfigMap"), by_kind(objs, "Deployment"), by_kind(objs, "PersistentVolumeClaim")
    gw = pod_env(deps["partsim-gateway"], objs)
    assert gw["PARTSIM_GATEWAY_INGEST_WORKERS"] == "0", "the gateway Deployment is API-only"
    stores = ["partsim-gateway"] + (["partsim-ingest-worker"] if "ingest-worker" in comps else [])
    for d in stores:
        env = pod_env(deps[d], objs)
        mounts = {
            m["mountPath"]: m["name"] for m in deps[d]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        }
        vols = {v["name"]: v for v in deps[d]["spec"]["template"]["spec"]["volumes"]}
        if "audio-store" in comps:
            assert env["PARTSIM_GATEWAY_STORE_AUDIO"] == "true" and env["PARTSIM_GATEWAY_AUDIO_DIR"] == "/data/audio", d
            assert vols[mounts["/data/audio"]]["persistentVolumeClaim"]["claimName"] == "partsim-audio", d
            assert pvcs["partsim-audio"]["spec"]["accessModes"] == ["ReadWriteMany"]
        else:
            assert env["PARTSIM_GATEWAY_STORE_AUDIO"] == "false", d
            assert "/data/audio" not in mounts and "partsim-audio" not in pvcs, d
    assert ("audio-store" in comps) == ("partsim-audio" in pvcs)
    assert all(
        cm["data"].get("PARTSIM_GATEWAY_REDIS_URL")
        for n, cm in cms.items()
        if any(k.startswith("PARTSIM_GATEWAY_") for k in cm.get("data") or {})
    ), "gateway processes need Redis (no DATA_DIR is configured)"


def check_gpu(objs: list[dict], comps: set[str]) -> None:
    deps = by_kind(objs, "Deployment")
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
    others = [deps["partsim-gateway"], deps["partsim-searcher"]] + (
        [deps["partsim-ingest-worker"]] if "partsim-ingest-worker" in deps else []
    )
    for w in others:
        c = w["spec"]["template"]["spec"]["containers"][0]
        assert c["image"] == f"{IMAGE}:0.1.0" and "nvidia.com/gpu" not in c["resources"]["limits"]


def _peer_is_in_namespace(peer: dict) -> bool:
    return "ipBlock" not in peer and "namespaceSelector" not in peer


def _peer_is_monitoring(peer: dict) -> bool:
    return set(peer) == {"namespaceSelector"} and peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
    }


def check_network_policies(objs: list[dict]) -> None:
    pols = list(by_kind(objs, "NetworkPolicy").values())
    pods = {component(w): w["spec"]["template"]["metadata"]["labels"] for w in workloads(objs)}
    gateway_labels = pods["gateway"]
    searcher_labels = pods["searcher"]
    milvus_labels = {
        "app.kubernetes.io/name": "milvus",
        "app.kubernetes.io/instance": "partsim-milvus",
        "component": "standalone",
    }
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
                assert not any(matches(p["spec"]["podSelector"], lab) for c, lab in pods.items() if c != "gateway")
                assert not matches(p["spec"]["podSelector"], milvus_labels)
                assert ports == [50051, 8080], f"{pname}: the gateway admits outside traffic on gRPC and HTTP only"
                continue
            for peer in peers:
                if _peer_is_in_namespace(peer):
                    continue
                assert _peer_is_monitoring(peer), f"{pname}: admits other namespaces: {peer}"
                assert ports and all(x in ("metrics", 9091, 9092, 9093, 9094) for x in ports), (
                    f"{pname}: the monitoring namespace may reach metrics ports only, got {ports}"
                )
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
        inns = [
            peer
            for p in pols
            if matches(p["spec"]["podSelector"], pods[comp])
            for rule in p["spec"].get("ingress") or []
            for peer in rule.get("from") or []
            if _peer_is_in_namespace(peer)
        ]
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
            meta = {
                "job": "default",
                **{"__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k): v for k, v in labels.items()},
            }
            for r in ep.get("relabelings") or []:
                meta = _relabel(r, meta)
            assert meta["job"] == f"partsim-{comp}", f"{comp}: job label {meta['job']}"
            jobs.add(meta["job"])
    # the jobs the dashboard and the alerts select exist
    alerts = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    dash = (ROOT / "deploy" / "grafana" / "dashboards" / "partsim.json").read_text()
    prefix = next(v for v in json.loads(dash)["templating"]["list"] if v["name"] == "job_prefix")["query"]
    resolved = dash.replace("${job_prefix}", prefix)  # the dashboard's jobs, as its default prefix makes them
    used = set(re.findall(r'job=\\?"(partsim-[a-z-]+)\\?"', alerts + resolved))
    assert {"partsim-gateway"} <= used <= jobs | {"partsim-ingest-worker"}, (
        f"jobs used but never scraped: {used - jobs}"
    )
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
    proc = run_script("gen-k8s-monitoring.py", "--check")
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_gen_k8s_monitoring_check_detects_staleness(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_k8s_monitoring", ROOT / "scripts" / "gen-k8s-monitoring.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    alerts = tmp_path / "alerts.yml"
    alerts.write_text(
        (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text() + "\n  - name: extra\n    rules: []\n"
    )
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
