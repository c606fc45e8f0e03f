"""`medfed flower-certs`: the CA, the SuperLink's certificate and the hospitals' keys a secured Flower
deployment needs (their use by real Flower processes: tests/test_flower_local_cluster.py)."""

from __future__ import annotations

import ipaddress
import stat

import pytest

pytest.importorskip("cryptography")

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from medfed.cli import main
from medfed.errors import ConfigError
from medfed.integrations.flower.certificates import write_credentials


def test_the_server_certificate_is_signed_by_the_ca_for_the_named_hosts(tmp_path):
    files = write_credentials(tmp_path, ["superlink.example.org", "10.1.2.3"], ["hospital-a", "hospital-b"])
    ca = x509.load_pem_x509_certificate(files.ca_certificate.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_certificate.read_bytes())
    server.verify_directly_issued_by(ca)  # raises when the signature or issuer does not match
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # the names asked for, and loopback: the SuperLink's own SuperExec dials it on 127.0.0.1 over TLS
    assert names.get_values_for_type(x509.DNSName) == ["superlink.example.org", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(a) for a in ("10.1.2.3", "127.0.0.1", "::1")]
    assert files.ca_certificate.is_absolute()  # flwr's connection wants an absolute root-certificates path
    key = serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()  # the key matches


def test_node_keys_are_p384_openssh_pairs_and_private_files_are_owner_only(tmp_path):
    files = write_credentials(tmp_path, ["127.0.0.1"], ["hospital-a"])
    private = serialization.load_ssh_private_key(files.node_keys["hospital-a"].read_bytes(), password=None)
    public_text = files.public_key("hospital-a").read_text()
    assert public_text.startswith("ecdsa-sha2-nistp384 ") and public_text.rstrip().endswith(" hospital-a")
    public = serialization.load_ssh_public_key(public_text.encode())
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert private.public_key().public_numbers() == public.public_numbers()
    for path in (files.ca_key, files.server_key, files.node_keys["hospital-a"]):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_existing_credentials_are_kept_unless_overwrite(tmp_path):
    first = write_credentials(tmp_path, ["127.0.0.1"], ["a"])
    ca = first.ca_certificate.read_bytes()
    first.ca_key.chmod(0o644)  # someone loosened it; an overwrite must tighten it again
    with pytest.raises(ConfigError, match="already exist.*--overwrite"):
        write_credentials(tmp_path, ["127.0.0.1"], ["a"])
    assert first.ca_certificate.read_bytes() == ca
    write_credentials(tmp_path, ["127.0.0.1"], ["a"], overwrite=True)
    assert first.ca_certificate.read_bytes() != ca  # a new CA
    assert stat.S_IMODE(first.ca_key.stat().st_mode) == 0o600


def test_bad_requests_list_every_problem_at_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        write_credentials(tmp_path, [], ["../escape", "a", "a", "b.pub"], days=0)
    message = str(err.value)
    assert "no SuperLink host" in message and "'../escape'" in message and "['a'] appear more than once" in message
    assert "'b.pub'" in message and "validity 0 days" in message  # b.pub would overwrite b's public key
    with pytest.raises(ConfigError) as err:
        write_credentials(tmp_path, ["superlink:8000", "[::1]", "https://x.org", "bücher.de", ""], ["a"])
    assert str(err.value).count("give a DNS name") == 5
    assert not any(tmp_path.iterdir())


def test_the_command_writes_the_files_and_prints_the_flags(tmp_path, capsys):
    assert main(["flower-certs", str(tmp_path / "c"), "--host", "127.0.0.1", "--node", "h1", "--node", "h2"]) == 0
    out = capsys.readouterr().out
    assert "--enable-supernode-auth" in out and "flwr supernode register" in out
    assert {p.name for p in (tmp_path / "c" / "keys").iterdir()} == {"h1", "h1.pub", "h2", "h2.pub"}
    assert main(["flower-certs", str(tmp_path / "c"), "--host", "127.0.0.1", "--node", "h1"]) == 2  # kept
