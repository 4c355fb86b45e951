"""The rendered Kubernetes objects validate offline: built-in kinds against the Kubernetes
OpenAPI schemas (kubernetes-validate, strict), the Prometheus Operator's PodMonitor and
PrometheusRule against their CRD schemas (tests/data/crds) made strict, so a typo in a key fails; the same
for cert-manager's Certificate and Issuer (components/tls) against hand-written schemas."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

CRDS = Path(__file__).resolve().parent / "data" / "crds"
K8S_VERSION = "1.30.0"

pytestmark = pytest.mark.timeout(300)


@functools.cache
def crd_validator(kind: str):
    import jsonschema

    files = {
        "PodMonitor": "monitoring.coreos.com_podmonitors.v1.json",
        "PrometheusRule": "monitoring.coreos.com_prometheusrules.v1.json",
        "Certificate": "cert-manager.io_certificates.v1.json",  # hand-written (tests/data/crds/README.md)
        "Issuer": "cert-manager.io_issuers.v1.json",
    }
    if kind not in files:
        return None
    doc = json.loads((CRDS / files[kind]).read_text())
    schema = doc["schema"]

    def strict(node, top=False):
        # the API server prunes unknown fields; here they are errors (a typo in a key must fail)
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
                and not top
            ):
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
        group = "cert-manager.io" if obj["kind"] in ("Certificate", "Issuer") else "monitoring.coreos.com"
        assert obj["apiVersion"] == f"{group}/v1", obj["apiVersion"]
        errors = sorted(v.iter_errors(obj), key=lambda e: list(e.path))
        assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: " + "; ".join(
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5]
        )
        return
    # built-in kinds; an unknown kind raises SchemaNotFoundError and fails the test
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.slow
def test_every_rendered_object_validates(k8s_renders):
    seen: dict[str, dict] = {}
    for objs in k8s_renders.values():
        for o in objs:
            seen.setdefault(json.dumps(o, sort_keys=True), o)
    failures = []
    for o in seen.values():
        try:
            validate_object(o)
        except Exception as exc:  # noqa: BLE001 - collect every object's failure: one report
            failures.append(f"{o.get('kind')}/{o.get('metadata', {}).get('name')}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures[:20])
    kinds = {o["kind"] for o in seen.values()}
    assert {
        "PodMonitor",
        "PrometheusRule",
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
        "StatefulSet",
        "Deployment",
        "PodDisruptionBudget",
        "Certificate",
        "Issuer",
    } <= kinds


def test_validation_rejects_unknown_kinds_and_fields():
    import kubernetes_validate

    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate_object({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x"}})
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dataa": {}})
    with pytest.raises(AssertionError):
        validate_object(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PodMonitor",
                "metadata": {"name": "x"},
                "spec": {"selector": {}, "podMetricsEndpoint": []},
            }
        )
