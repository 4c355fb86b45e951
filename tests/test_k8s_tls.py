"""components/tls (cert-manager) in every render that has it: one CA, a certificate per service mounted
where its TLS settings point, the gateway's client certificate the only identity the embedder, searcher
and separator admit (they require client certificates of the CA), probes that speak TLS; and in every
render without it: no certificates and no TLS settings."""

from __future__ import annotations

import re

import pytest

from .k8s_objects import by_kind, component, health_port, pod_env, workloads
from .k8s_render import RENDER_NAMES, SERVICES, components_of, renders_with

pytestmark = pytest.mark.timeout(300)
INTERNAL = ("embedder", "searcher", "separator")


@pytest.mark.parametrize("name", renders_with("tls"))
def test_with_tls_every_internal_service_requires_the_gateways_client_certificate(k8s_renders, name):
    check_tls(k8s_renders[name])


@pytest.mark.parametrize("name", [n for n in RENDER_NAMES if "tls" not in components_of(n)])
def test_without_the_component_there_is_no_certificate_and_no_tls_setting(k8s_renders, name):
    objs = k8s_renders[name]
    assert not by_kind(objs, "Certificate") and not by_kind(objs, "Issuer")
    for w in workloads(objs):
        assert not [k for k in pod_env(w, objs) if "_TLS_" in k], w["metadata"]["name"]


class Pod:
    """A workload's container as its files are: which Certificate's Secret each mounted path comes from."""

    def __init__(self, w: dict, certs: dict[str, dict]):
        pod = w["spec"]["template"]["spec"]
        self.c = pod["containers"][0]
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes") or [] if "secret" in v}
        self.mounts = {
            m["mountPath"]: secrets[m["name"]] for m in self.c.get("volumeMounts") or [] if m["name"] in secrets
        }
        self.certs = certs

    def file(self, path: str) -> tuple[dict, str]:
        """(the Certificate whose Secret holds ``path``, the file: tls.crt, tls.key or ca.crt)."""
        folder, _, name = path.rpartition("/")
        assert folder in self.mounts, f"{path} is not in a mounted Secret ({sorted(self.mounts)})"
        secret = self.mounts[folder]
        assert secret in self.certs, f"{path}: Secret {secret} is no Certificate's"
        assert name in ("tls.crt", "tls.key", "ca.crt"), path
        return self.certs[secret], name

    def pair(self, cert_path: str, key_path: str) -> dict:
        """The Certificate of a certificate and key that must come from one Secret."""
        (cert, f1), (key, f2) = self.file(cert_path), self.file(key_path)
        assert cert is key and (f1, f2) == ("tls.crt", "tls.key"), (cert_path, key_path)
        return cert


def check_tls(objs: list[dict]) -> None:
    issuers = by_kind(objs, "Issuer")
    certs = {c["spec"]["secretName"]: c for c in by_kind(objs, "Certificate").values()}
    # the chain: a self-signed issuer signs the CA certificate, whose Secret the CA issuer signs with
    (ca_issuer,) = [i for i in issuers.values() if "ca" in i["spec"]]
    ca_cert = certs[ca_issuer["spec"]["ca"]["secretName"]]
    assert ca_cert["spec"]["isCA"] is True
    assert "selfSigned" in issuers[ca_cert["spec"]["issuerRef"]["name"]]["spec"]
    leaves = [c for c in certs.values() if c is not ca_cert]
    for c in leaves:
        ref = c["spec"]["issuerRef"]
        assert ref["name"] == ca_issuer["metadata"]["name"] and ref.get("kind", "Issuer") == "Issuer", c
        assert c["spec"]["privateKey"]["rotationPolicy"] == "Always"

    pods = {component(w): (w, Pod(w, certs)) for w in workloads(objs) if component(w) != "redis"}
    (client,) = [c for c in leaves if "server auth" not in c["spec"]["usages"]]
    assert client["spec"]["usages"] == ["digital signature", "client auth"]
    client_name = client["spec"]["commonName"]
    assert client["spec"]["dnsNames"] == [client_name]
    mounted = set()
    for comp, (w, pod) in pods.items():
        env, prefix = pod_env(w, objs), SERVICES[comp][2]
        server = pod.pair(env[f"{prefix}_TLS_CERT"], env[f"{prefix}_TLS_KEY"])
        assert env[f"{prefix}_INSECURE"] == "false", f"{comp}: with TLS no pod serves plaintext"
        mounted.add(server["spec"]["secretName"])
        own = f"partsim-{'gateway' if comp == 'ingest-worker' else comp}"
        assert {own, "localhost"} <= set(server["spec"]["dnsNames"]) and "127.0.0.1" in server["spec"]["ipAddresses"]
        assert "server auth" in server["spec"]["usages"], comp
        probe_args = []
        if comp in INTERNAL:
            # mTLS: a client certificate of the CA at the handshake, the gateway's alone beyond health
            assert pod.file(env[f"{prefix}_TLS_CLIENT_CA"])[1] == "ca.crt", comp
            assert env[f"{prefix}_TLS_CLIENT_NAMES"] == client_name, comp
            assert "client auth" in server["spec"]["usages"], f"{comp}: its probe presents its own certificate"
            probe_args = ["--tls-cert", env[f"{prefix}_TLS_CERT"], "--tls-key", env[f"{prefix}_TLS_KEY"]]
        else:  # the gateway and the ingest workers: the client certificate to every backend
            assert "PARTSIM_GATEWAY_TLS_CLIENT_CA" not in env, "callers of the gateway present tokens"
            assert pod.pair(env["PARTSIM_GATEWAY_BACKEND_TLS_CERT"], env["PARTSIM_GATEWAY_BACKEND_TLS_KEY"]) is client
            assert pod.file(env["PARTSIM_GATEWAY_BACKEND_TLS_CA"])[1] == "ca.crt"
            mounted.add(client["spec"]["secretName"])
            for backend in INTERNAL:  # the name it dials is in that backend's certificate
                host = re.fullmatch(r"dns:///([a-z0-9-]+):\d+", env[f"PARTSIM_GATEWAY_{backend.upper()}"]).group(1)
                backend_env = pod_env(pods[backend][0], objs)
                backend_cert = pods[backend][1].file(backend_env[f"PARTSIM_{backend.upper()}_TLS_CERT"])[0]
                assert host in backend_cert["spec"]["dnsNames"], (comp, backend, host)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = pod.c[kind]
            command = probe["exec"]["command"]
            assert health_port(probe) == SERVICES[comp][0], (comp, kind)
            assert pod.file(command[command.index("--tls-ca") + 1])[1] == "ca.crt", (comp, kind)
            assert [a for a in command if a in ("--tls-cert", "--tls-key")] == probe_args[::2], (comp, kind)
            for flag, value in zip(probe_args[::2], probe_args[1::2], strict=True):
                assert command[command.index(flag) + 1] == value, (comp, kind)
            assert probe["timeoutSeconds"] > float(command[command.index("--timeout") + 1]), (comp, kind)
            # the gateway's liveness asks for its process alone (``liveness``), as the base's gRPC probe does
            service = command[command.index("--service") + 1] if "--service" in command else ""
            gateway_liveness = comp in ("gateway", "ingest-worker") and kind == "livenessProbe"
            assert service == ("liveness" if gateway_liveness else ""), (comp, kind)
    assert mounted == {c["spec"]["secretName"] for c in leaves}, "a certificate no pod mounts"
