"""The Kubernetes manifests (k8s/), every render (the base, both overlays, all 128 combinations of
the seven components): consistent and hardened pods, gRPC health probes, PDBs, headless Services behind
dns:/// targets, the searchers scaled out (a stateless Deployment on Milvus under an HPA and a PDB), Redis
with its AOF, HPAs that own their targets' replicas, and environment names that are real config fields whose
values parse. The components'
own properties are in test_k8s_components.py, schema validation in test_k8s_schemas.py."""

from __future__ import annotations

import dataclasses
import re

import pytest

from .k8s_objects import by_kind, component, config_classes, health_port, matches, pod_env, workloads
from .k8s_render import HEADLESS, IMAGE, RENDER_NAMES, SERVICES, components_of

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("name", RENDER_NAMES)
def test_render_is_consistent_and_hardened(k8s_renders, name):
    objs = k8s_renders[name]
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
    pvcs, pdbs, hpas = (
        by_kind(objs, "PersistentVolumeClaim"),
        by_kind(objs, "PodDisruptionBudget"),
        by_kind(objs, "HorizontalPodAutoscaler"),
    )
    wls = workloads(objs)
    wl_comps = {component(w) for w in wls}
    expected = {"gateway", "embedder", "searcher", "separator", "redis"} | (
        {"ingest-worker"} if "ingest-worker" in comps else set()
    )
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
            assert tmp and "sizeLimit" in (volumes[tmp[0]["name"]].get("emptyDir") or {}), (
                f"{where}: /tmp must be an emptyDir with a sizeLimit"
            )
            assert c.get("readinessProbe") and c.get("livenessProbe"), where
            if comp == "redis":
                continue
            # partsim containers: the project image, gRPC probes on the grpc port, metrics port
            assert c["image"].startswith(IMAGE + ":0.1.0"), f"{where}: image {c['image']}"
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            grpc_port, metrics_port, prefix = SERVICES[comp]
            http = {"http": 8080} if comp == "gateway" else {}  # the HTTP/JSON API and web app, same process
            assert ports == {"grpc": grpc_port, "metrics": metrics_port, **http}, f"{where}: ports {ports}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert health_port(c[probe]) == grpc_port, f"{where}: {probe} must check gRPC health"
            startup = c["startupProbe"]
            assert startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) >= 60, (
                f"{where}: the startupProbe must allow at least a minute for model loading"
            )
            env = pod_env(w, objs)
            for k, v in {
                "HOME": "/tmp",
                "XDG_CACHE_HOME": "/tmp/.cache",
                "MPLCONFIGDIR": "/tmp/matplotlib",
                "TORCH_HOME": "/tmp/torch",
                "HF_HUB_OFFLINE": "1",
            }.items():
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
    assert not any(
        matches(
            {"matchLabels": s["spec"]["selector"]},
            {"app.kubernetes.io/name": "partsim", "app.kubernetes.io/component": "ingest-worker"},
        )
        for s in svcs.values()
    ), "the ingest workers get no Service"
    # PDBs select something
    for p in pdbs.values():
        assert any(matches(p["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"]) for w in wls), (
            f"PDB {p['metadata']['name']} selects no workload"
        )

    # Redis: durable stream
    redis = by_kind(objs, "StatefulSet")["partsim-redis"]
    rc = redis["spec"]["template"]["spec"]["containers"][0]
    args = rc.get("args") or []
    assert "--appendonly" in args and args[args.index("--appendonly") + 1] == "yes"
    assert re.fullmatch(r"redis:7\.2(\.\d+)?", rc["image"]), rc["image"]
    assert redis["spec"]["volumeClaimTemplates"], "Redis needs a PVC for its AOF"

    # HPAs: existing targets, Deployment replicas left to the HPA
    deps = by_kind(objs, "Deployment")
    for h in hpas.values():
        ref = h["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in deps, f"HPA {h['metadata']['name']}: no target"
        assert "replicas" not in deps[ref["name"]]["spec"], f"{ref['name']}: replicas fights its HPA"
    scaled = {"partsim-gateway", "partsim-embedder", "partsim-searcher", "partsim-separator"}
    assert ("hpa" in comps) == (scaled <= set(hpas))


@pytest.mark.parametrize("name", RENDER_NAMES)
def test_searchers_scale_out_statelessly_behind_the_gateway(k8s_renders, name):
    """Issue 15: the searcher keeps nothing on its disk (the catalog is in the Milvus server), so it is a
    Deployment of two or more replicas with no PVC, rolled without losing one, spread over nodes, under a PDB
    that never blocks a drain, autoscaled from at least two, behind a headless Service the gateway balances."""
    check_searcher_scales_out(k8s_renders[name], components_of(name))


def check_searcher_scales_out(objs: list[dict], comps: set[str]) -> None:
    searchers = [w for w in workloads(objs) if component(w) == "searcher"]
    assert [w["kind"] for w in searchers] == ["Deployment"], "the searcher: one Deployment, no StatefulSet"
    (w,) = searchers
    spec, pod = w["spec"], w["spec"]["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    # no state on the pod: no claim of any kind, /data an emptyDir, the catalog in the Milvus server
    assert "volumeClaimTemplates" not in spec and "persistentVolumeClaimRetentionPolicy" not in spec
    volumes = {v["name"]: v for v in pod["volumes"]}
    kept = {n: v for n, v in volumes.items() if not {"emptyDir", "secret"} & set(v)}  # secret: components/tls
    assert not kept, f"the searcher keeps nothing across restarts, but mounts {kept}"
    for p in by_kind(objs, "PersistentVolumeClaim").values():
        assert (p["metadata"].get("labels") or {}).get("app.kubernetes.io/component") != "searcher", p
    (c,) = pod["containers"]
    data = [m for m in c["volumeMounts"] if m["mountPath"] == "/data"]
    assert data and "sizeLimit" in volumes[data[0]["name"]]["emptyDir"], "searcher: /data must be a bounded emptyDir"
    env = pod_env(w, objs)
    assert env["PARTSIM_SEARCHER_DATA_DIR"] == "/data"
    assert env["PARTSIM_SEARCHER_MILVUS_URI"] == "http://partsim-milvus:19530", "replicas share a Milvus server"
    # the mirror (a cache) fits in the memory limit, with 2 GiB beside it for the process and the mirror's fill
    limit = c["resources"]["limits"]["memory"]
    assert limit.endswith("Gi") and int(env["PARTSIM_SEARCHER_MIRROR_BYTES"]) + (2 << 30) <= int(limit[:-2]) << 30
    # replicas: two without an HPA, the HPA's (2..N) with one
    hpas = [
        h
        for h in by_kind(objs, "HorizontalPodAutoscaler").values()
        if h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "partsim-searcher"}
    ]
    if "hpa" in comps:
        (h,) = hpas
        assert "replicas" not in spec, "replicas fights the HPA"
        assert h["spec"]["minReplicas"] >= 2 and h["spec"]["maxReplicas"] > h["spec"]["minReplicas"]
        assert [m["resource"]["name"] for m in h["spec"]["metrics"] if m["type"] == "Resource"] == ["cpu"]
        assert h["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
        assert all(pol["value"] <= 2 for pol in h["spec"]["behavior"]["scaleUp"]["policies"]), "gentle scale-up"
        assert h["spec"]["behavior"]["scaleUp"].get("selectPolicy", "Max") != "Disabled"
    else:
        assert not hpas and spec["replicas"] >= 2, "without the HPA: two replicas"
    # a rollout never drops below the wanted count: a new pod first (maxSurge), none unavailable
    strategy = spec["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0 and strategy["rollingUpdate"]["maxSurge"] == 1
    # spread over nodes, as a preference (a one-node cluster still schedules them)
    spread = [t for t in pod.get("topologySpreadConstraints") or [] if t["topologyKey"] == "kubernetes.io/hostname"]
    assert spread and spread[0]["whenUnsatisfiable"] == "ScheduleAnyway" and matches(spread[0]["labelSelector"], labels)
    # readiness stays grpc.health.v1 on the gRPC port (the gateway's round_robin leaves a NOT_SERVING pod out)
    assert health_port(c["readinessProbe"]) == SERVICES["searcher"][0]
    # a PDB that keeps all but one serving and never blocks a drain
    pdbs = [p for p in by_kind(objs, "PodDisruptionBudget").values() if matches(p["spec"]["selector"], labels)]
    assert len(pdbs) == 1 and pdbs[0]["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdbs[0]["spec"]
    # the Service: headless, so the gateway's round_robin sees every replica, and what the gateway dials
    svc = by_kind(objs, "Service")["partsim-searcher"]
    assert svc["spec"].get("clusterIP") == "None" and svc["spec"]["selector"].items() <= labels.items()
    assert 50053 in [p["port"] for p in svc["spec"]["ports"]]
    gateway = by_kind(objs, "Deployment")["partsim-gateway"]
    assert pod_env(gateway, objs)["PARTSIM_GATEWAY_SEARCHER"] == "dns:///partsim-searcher:50053"
    assert pod_env(gateway, objs)["PARTSIM_GATEWAY_LB_POLICY"] == "round_robin"


@pytest.mark.parametrize("name", RENDER_NAMES)
def test_environment_names_are_config_fields_and_values_parse(k8s_renders, name, tmp_path):
    """PARTSIM_<SVC>_<FIELD> names are real config fields, and their values parse as that field's type."""
    from partsim.services.config import _kind, _parse

    objs = k8s_renders[name]
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
        fname = k[len(prefix) + 1 :].lower()
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
        # TLS files exist only in the pod (mounted Secrets: tests/test_k8s_tls.py); any file stands in here
        env = {k: __file__ if re.search(r"_TLS_(CERT|KEY|CA|CLIENT_CA)$", k) else v for k, v in env.items()}
        if "PARTSIM_GATEWAY_AUTH_KEYS_FILE" in env:  # the API keys, likewise a Secret: a keys file stands in
            from partsim.services.gateway.auth.keys import KeysFile

            keys = tmp_path / "keys.json"
            if not keys.exists():
                KeysFile(keys).create("k8s-test", "reader")
            env["PARTSIM_GATEWAY_AUTH_KEYS_FILE"] = str(keys)
        parse(classes[prefix], prefix, argv=[], environ=env)
