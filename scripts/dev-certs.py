#!/usr/bin/env python3
"""Development certificates for partsim's TLS: one CA, a server certificate per service and the gateway's
client certificate (mTLS to the internal services), laid out as cert-manager lays out its Secrets, so the
same paths work in compose and in Kubernetes::

    OUT_DIR/ca.crt, ca.key                 the CA (reused when present: rerunning reissues the leaves only,
                                           a rotation the services pick up without a restart)
    OUT_DIR/<name>/tls.crt, tls.key, ca.crt for gateway, embedder, searcher, separator (server and client
                                           auth: a service's healthcheck presents its own certificate) and
                                           gateway-client (client auth only: the gateway's identity)

Server certificates name localhost, 127.0.0.1, ::1, the compose service (``searcher``) and the Kubernetes
Service (``partsim-searcher``, ``partsim-searcher.NAMESPACE``, ``....svc``, ``....svc.cluster.local``).

    scripts/dev-certs.py deploy/certs                  # then: docker compose -f deploy/docker-compose.yml up
    scripts/dev-certs.py deploy/certs --new-ca         # replace the CA too (clients need the new ca.crt)

Keys are readable by all (mode 0644) so the containers' user (10001) can read the bind-mounted files; OUT_DIR
itself is 0700. These are DEVELOPMENT certificates: in production use cert-manager (k8s/components/tls).
Needs ``cryptography`` (installed with partsim: its pyjwt[crypto] dependency brings it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICES = ("gateway", "embedder", "searcher", "separator")
CLIENT = "gateway-client"  # the gateway's client certificate: its name is the identity the internal services admit
CLIENT_NAME = "partsim-gateway-client"


def server_names(service: str, namespace: str) -> list[str]:
    """DNS names of a service's server certificate: localhost, the compose name, the Kubernetes Service names."""
    k8s = f"partsim-{service}"
    return [
        "localhost",
        service,
        k8s,
        f"{k8s}.{namespace}",
        f"{k8s}.{namespace}.svc",
        f"{k8s}.{namespace}.svc.cluster.local",
    ]


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "partsim (development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(subject: x509.Name, issuer: x509.Name, key, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def make_ca(days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    name = _name("partsim development CA")
    cert = (
        _builder(name, name, key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(
    ca: x509.Certificate, ca_key, cn: str, dns: list[str], server: bool, days: int
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate signed by ``ca``: server and client auth (``server``), or client auth only."""
    key = _key()
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    if server:
        sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    usages = (
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if server
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    cert = (
        _builder(_name(cn), ca.subject, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` atomically (a service reloading meanwhile sees the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)


def load_or_make_ca(out: Path, new: bool, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, key = out / "ca.crt", out / "ca.key"
    if crt.is_file() and key.is_file() and not new:
        ca_key = serialization.load_pem_private_key(key.read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(crt.read_bytes()), ca_key
    cert, ca_key = make_ca(days)
    _write(key, _key_pem(ca_key), 0o600)  # the CA key stays private: only this script reads it
    _write(crt, _pem(cert))
    return cert, ca_key


def generate(out: Path, namespace: str = "partsim", days: int = 365, new_ca: bool = False) -> list[Path]:
    """Write the CA (unless one is there) and every leaf under ``out``; the folders written."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    ca, ca_key = load_or_make_ca(out, new_ca, days * 5)
    written = []
    for name in (*SERVICES, CLIENT):
        server = name != CLIENT
        cn = f"partsim-{name}"
        dns = server_names(name, namespace) if server else [CLIENT_NAME]
        cert, key = make_leaf(ca, ca_key, cn, dns, server, days)
        folder = out / name
        folder.mkdir(exist_ok=True)
        folder.chmod(0o755)
        _write(folder / "ca.crt", _pem(ca))
        _write(folder / "tls.key", _key_pem(key))
        _write(folder / "tls.crt", _pem(cert))  # last: a watcher sees the key before the certificate changes
        written.append(folder)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("out", type=Path, metavar="OUT_DIR", help="folder to write (created)")
    p.add_argument("--namespace", default="partsim", help="Kubernetes namespace named in the SANs (default partsim)")
    p.add_argument("--days", type=int, default=365, help="validity of the leaf certificates (default 365; the CA: 5x)")
    p.add_argument("--new-ca", action="store_true", help="replace an existing CA in OUT_DIR")
    args = p.parse_args(argv)
    if args.days < 1:
        p.error(f"--days must be 1 or more, got {args.days}")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"{args.out} is not a folder")
    for folder in generate(args.out, args.namespace, args.days, args.new_ca):
        print(f"wrote {folder}/tls.crt, tls.key, ca.crt")
    print(f"CA: {args.out / 'ca.crt'} (give it to clients: --tls-ca or PARTSIM_TLS_CA)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
