"""fl-coordinator's PKI: the CA, the SuperLink's certificate and SuperNode auth keys."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedseal.coordinator.pki import (
    CA_CERT,
    CA_KEY,
    SERVER_CERT,
    SERVER_KEY,
    PkiError,
    init_pki,
    make_site_auth_key,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_pki_makes_a_ca_and_a_server_cert_with_the_requested_names(tmp_path: Path) -> None:
    result = init_pki(tmp_path / "pki", ["superlink.example", "10.1.2.3", "localhost"], days=30)
    out = tmp_path / "pki"
    assert sorted(p.name for p in result.made) == sorted([CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY])
    assert result.kept == []
    ca, server = _cert(out / CA_CERT), _cert(out / SERVER_CERT)
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["superlink.example", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    days = (server.not_valid_after_utc - server.not_valid_before_utc).days
    assert 29 <= days <= 30
    key = serialization.load_pem_private_key((out / SERVER_KEY).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP384R1)
    assert key.public_key() == server.public_key()
    assert _mode(out / SERVER_KEY) == 0o600
    assert _mode(out / CA_KEY) == 0o600


def test_init_pki_keeps_existing_files(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    init_pki(out)
    before = {
        name: (out / name).read_bytes() for name in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY)
    }
    again = init_pki(out, ["other.example"])
    assert again.made == []
    assert sorted(p.name for p in again.kept) == sorted(before)
    assert {name: (out / name).read_bytes() for name in before} == before


def test_init_pki_refuses_half_a_pair_and_bad_names(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    init_pki(out)
    (out / SERVER_KEY).unlink()
    with pytest.raises(PkiError, match="without its pair"):
        init_pki(out)
    with pytest.raises(PkiError, match="empty"):
        init_pki(tmp_path / "other", [" "])
    assert not (tmp_path / "other" / CA_CERT).exists()


def test_site_auth_key_is_an_openssh_p384_pair(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    result = make_site_auth_key(path)
    assert [p.name for p in result.made] == ["site.key", "site.key.pub"]
    private = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    public = serialization.load_ssh_public_key((tmp_path / "site.key.pub").read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP384R1)
    assert private.public_key() == public
    assert (tmp_path / "site.key.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
    assert _mode(path) == 0o600
    kept = make_site_auth_key(path)
    assert kept.made == [] and len(kept.kept) == 2
    (tmp_path / "site.key.pub").unlink()
    with pytest.raises(PkiError, match="without its pair"):
        make_site_auth_key(path)
