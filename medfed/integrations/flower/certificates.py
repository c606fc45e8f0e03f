"""TLS certificates and SuperNode authentication keys for a Flower deployment (``medfed flower-certs``).

What ``flower-superlink --ssl-ca-certfile/--ssl-certfile/--ssl-keyfile --enable-supernode-auth`` and
``flower-supernode --root-certificates/--auth-supernode-private-key`` expect (flwr 1.42):

* ``ca.crt``, ``ca.key``: a self-signed certificate authority (EC P-384, 10 years). Give ``ca.crt`` to every
  hospital and to the operator's ``flwr`` connection (``root-certificates``); keep ``ca.key`` offline.
* ``server.pem``, ``server.key``: the SuperLink's certificate, signed by the CA, valid for the given host
  names and IP addresses and always for ``localhost``, ``127.0.0.1`` and ``::1`` (subject alternative names;
  a SuperNode checks the name it dials against them, and the SuperLink's own SuperExec dials it on loopback).
* ``keys/<node>``, ``keys/<node>.pub`` (only with ``nodes``): one EC P-384 key pair per node in OpenSSH
  format (what ``ssh-keygen -t ecdsa -b 384`` writes). For a real federation each hospital should make its
  own pair with ``ssh-keygen`` and send only the ``.pub``, so no one else ever holds its identity; central
  key pairs suit a trial inside one organisation and the tests. The operator registers each public key with
  ``flwr supernode register <node>.pub <connection>``.

Built with ``cryptography`` (a dependency of flwr), the same steps as Flower's example ``generate.sh``
(openssl) and ``ssh-keygen``. Private keys are written with mode 0600 (also when overwriting).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from medfed.errors import ConfigError

_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_DNS_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9*]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*\.?")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MAX_DAYS = 36500


@dataclass(frozen=True)
class DeploymentCredentials:
    """Paths of the files :func:`write_credentials` wrote."""

    ca_certificate: Path
    ca_key: Path
    server_certificate: Path
    server_key: Path
    node_keys: dict[str, Path] = field(default_factory=dict)  # node -> private key; public key: same + ".pub"

    def public_key(self, node: str) -> Path:
        return self.node_keys[node].with_name(self.node_keys[node].name + ".pub")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only, whatever mode an overwritten file had."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _subject_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _host_problem(host: str) -> str | None:
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if not host.isascii() or not _DNS_NAME.fullmatch(host):
        return (f"host {host!r}: give a DNS name (ASCII; IDNA-encode others) or an IP address, without scheme, "
                "port or brackets")
    return None


def check_request(hosts: list[str], nodes: list[str], days: int = 3650) -> None:
    """Every problem with the requested names and validity at once, as one :class:`ConfigError`."""
    problems = []
    if not hosts:
        problems.append("no SuperLink host name or address (--host): SuperNodes check the name they dial")
    problems += [p for p in map(_host_problem, hosts) if p]
    bad = [n for n in nodes if not _NODE_NAME.fullmatch(n) or n.endswith(".pub")]
    if bad:
        problems.append(f"node names {bad}: use letters, digits, '.', '_' and '-', not ending in .pub "
                        "(they become key file names)")
    if not 1 <= days <= MAX_DAYS:
        problems.append(f"validity {days} days: give 1 to {MAX_DAYS}")
    duplicates = sorted({n for n in nodes if nodes.count(n) > 1})
    if duplicates:
        problems.append(f"node names {duplicates} appear more than once")
    if problems:
        raise ConfigError("flower-certs: " + "; ".join(problems))


def write_credentials(out: Path | str, hosts: list[str], nodes: list[str], *, days: int = 3650,
                      overwrite: bool = False) -> DeploymentCredentials:
    """Write a CA, the SuperLink's certificate for ``hosts`` and one key pair per node under ``out``.

    Refuses to overwrite existing files unless ``overwrite``: a new CA invalidates every hospital's copy.
    """
    check_request(hosts, nodes, days)
    out = Path(out).resolve()  # flwr wants absolute certificate paths
    files = DeploymentCredentials(out / "ca.crt", out / "ca.key", out / "server.pem", out / "server.key",
                                  {n: out / "keys" / n for n in nodes})
    existing = [p for p in (files.ca_certificate, files.ca_key, files.server_certificate, files.server_key,
                            *files.node_keys.values()) if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"flower-certs: {', '.join(map(str, existing))} already exist; "
                          "pass --overwrite to replace them (every hospital then needs the new ca.crt)")
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    not_before, not_after = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "medfed Flower deployment CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                    hosts[0] if len(hosts[0]) <= 64 else "medfed SuperLink")]))
        .issuer_name(ca_name).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(_subject_names(list(dict.fromkeys([*hosts, *LOOPBACK_NAMES])))),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    files.ca_certificate.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.ca_key, _pem_key(ca_key))
    files.server_certificate.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.server_key, _pem_key(server_key))
    for node, path in files.node_keys.items():
        key = ec.generate_private_key(ec.SECP384R1())
        _write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()))
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        files.public_key(node).write_bytes(public + f" {node}\n".encode())
    return files
