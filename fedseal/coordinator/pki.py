"""The federation's PKI: a CA, the SuperLink's TLS certificate, and SuperNode auth keys.

- :func:`init_pki` makes ``ca.crt``, ``ca.key`` (the CA's key, 0600), ``server.pem`` (the
  SuperLink's certificate, signed by the CA, with the given DNS names / IP addresses as
  subjectAltNames) and ``server.key`` (0600). Flower takes them as
  ``flower-superlink --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key``
  and ``flower-supernode --root-certificates ca.crt``. Existing files are kept, never overwritten.
- :func:`make_site_auth_key` makes an ECDSA P-384 key pair in OpenSSH format: the private key is
  what ``flower-supernode --auth-supernode-private-key`` loads (``load_ssh_private_key``), the
  public key (``.pub``) what ``flwr supernode register`` loads (``load_ssh_public_key``).

All keys are ECDSA P-384 and are written with mode 0600 from the start (never world-readable).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedseal.contract.node_auth_key import NodeAuthKeyError, make_node_auth_key, public_key_path
from fedseal.coordinator.errors import CoordinatorError

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "DEFAULT_SERVER_NAMES",
    "SERVER_CERT",
    "SERVER_KEY",
    "PkiError",
    "PkiResult",
    "init_pki",
    "make_site_auth_key",
    "subject_alt_names",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1", "superlink")
_CURVE = ec.SECP384R1


class PkiError(CoordinatorError, ValueError):
    """A PKI folder or key file that cannot be made or used (the message is one line)."""


@dataclass
class PkiResult:
    """What :func:`init_pki` / :func:`make_site_auth_key` did: files made and files kept."""

    made: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def subject_alt_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses as x509 subjectAltName entries (IPs are recognised)."""
    entries: list[x509.GeneralName] = []
    for raw in names:
        name = raw.strip()
        if not name:
            raise PkiError("a --superlink-host value is empty")
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            try:
                entries.append(x509.DNSName(name.encode("idna").decode("ascii")))
            except UnicodeError:
                raise PkiError(f"{name!r} is neither an IP address nor a DNS name") from None
    return entries


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a file that must not exist yet, with ``mode`` from the moment it is created."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, mode)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_pem_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path} is not an ECDSA key")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM certificate: {exc}") from None


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """What a certificate's ECDSA key may do: sign, and then sign certificates and CRLs (the
    CA) or agree TLS session keys (the SuperLink)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _make_ca(days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(_CURVE())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedseal federation CA")])
    start, end = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def _make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    server_key: ec.EllipticCurvePrivateKey,
    names: Sequence[str],
    days: int,
) -> x509.Certificate:
    sans = subject_alt_names(names)
    common = names[0][:64]
    start, end = _validity(days)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(end, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )


def init_pki(out: Path, names: Sequence[str] = DEFAULT_SERVER_NAMES, days: int = 365) -> PkiResult:
    """Make the CA and the SuperLink's certificate in ``out``; files already there are kept.

    A CA is made only when neither ``ca.crt`` nor ``ca.key`` exists; the server certificate only
    when neither ``server.pem`` nor ``server.key`` exists (and then the CA's key must be there
    to sign it). Half a pair is an error, never silently replaced.
    """
    if days < 1:
        raise PkiError("--days must be at least 1")
    if not names:
        raise PkiError("give at least one --superlink-host")
    subject_alt_names(names)  # validate before writing anything
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PkiError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    result = PkiResult()
    ca_cert_path, ca_key_path = out / CA_CERT, out / CA_KEY
    server_cert_path, server_key_path = out / SERVER_CERT, out / SERVER_KEY

    ca_present = [p for p in (ca_cert_path, ca_key_path) if p.exists()]
    server_present = [p for p in (server_cert_path, server_key_path) if p.exists()]
    if len(server_present) == 1:
        raise PkiError(
            f"{server_present[0]} exists without its pair; move it away or restore the other file"
        )
    if len(ca_present) == 2:
        ca_cert = _load_cert(ca_cert_path)
        ca_key: ec.EllipticCurvePrivateKey | None = _load_pem_key(ca_key_path)
        result.kept += [ca_cert_path, ca_key_path]
    elif len(ca_present) == 1:
        if ca_present[0] == ca_cert_path and len(server_present) == 2:
            # the CA key was moved offline on purpose: fine as long as nothing must be signed
            ca_cert, ca_key = _load_cert(ca_cert_path), None
            result.kept.append(ca_cert_path)
        else:
            raise PkiError(
                f"{ca_present[0]} exists without its pair; move it away or restore the other file"
            )
    else:
        if server_present:
            raise PkiError(
                f"{server_cert_path} exists but there is no CA in {out}; "
                "move the server files away to start a new PKI"
            )
        ca_key, ca_cert = _make_ca(days)
        _write_new(ca_key_path, _private_pem(ca_key), 0o600)
        _write_new(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        result.made += [ca_cert_path, ca_key_path]

    if server_present:
        server_cert = _load_cert(server_cert_path)
        try:
            server_cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise PkiError(f"{server_cert_path} was not issued by {ca_cert_path}: {exc}") from None
        result.kept += [server_cert_path, server_key_path]
    else:
        assert ca_key is not None
        server_key = ec.generate_private_key(_CURVE())
        cert = _make_server_cert(ca_key, ca_cert, server_key, list(names), days)
        _write_new(server_key_path, _private_pem(server_key), 0o600)
        _write_new(server_cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        result.made += [server_cert_path, server_key_path]
    return result


def make_site_auth_key(path: Path) -> PkiResult:
    """An ECDSA P-384 key pair for Flower's SuperNode authentication, in OpenSSH format.

    ``path`` gets the private key (0600), ``path.pub`` the public key. If both exist and hold a
    matching P-384 pair they are kept; half a pair, or something else, is an error.
    """
    path = Path(path)
    pair = [path, public_key_path(path)]
    try:
        made = make_node_auth_key(path)
    except NodeAuthKeyError as exc:
        raise PkiError(str(exc)) from None
    return PkiResult(made=pair) if made else PkiResult(kept=pair)
