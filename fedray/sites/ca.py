"""The federation's certificate authority: `fedray ca init DIR` and `fedray ca issue NAME --role ROLE`.

One CA per federation, held by whoever runs the federation (its key never leaves
that machine). Each party gets a certificate whose common name and DNS SAN are
its name (a site's name in `federation.sites`, or the server's) and whose
organisational unit is its role (`server` or `site`): a site's certificate cannot
stand in for the server's, and the server checks a site's name against the site
it dialled. Keys are ECDSA P-256, certificates valid for `days` days.
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

ROLES = ("server", "site")
CA_CERT, CA_KEY = "ca.pem", "ca.key"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
"""A DNS label: a party's name is also its certificate's DNS name (what TLS checks)."""


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a party (it must be a lower-case DNS label), or None."""
    if not _NAME.match(name or ""):
        return f"{name!r} is not a party name: use lower-case letters, digits and '-' (a DNS label)"
    return None


def init_ca(folder: str | os.PathLike, days: int = 3650) -> Path:
    """A new CA in `folder` (ca.pem, ca.key); refuses to overwrite one. Returns ca.pem's path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = Path(folder)
    if (folder / CA_KEY).exists():
        raise ValueError(f"{folder / CA_KEY} exists: a federation has one CA (issue certificates from it)")
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _subject("fedray federation CA", "ca")
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(folder / CA_KEY, _key_pem(key), private=True)
    _write(folder / CA_CERT, _cert_pem(cert))
    return folder / CA_CERT


def issue(ca_folder: str | os.PathLike, name: str, role: str, out: str | os.PathLike | None = None,
          days: int = 825) -> tuple[Path, Path]:
    """A certificate and key for party `name` in `role`, signed by the CA in `ca_folder`,
    written to `out` (default: the CA folder) as NAME.pem and NAME.key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    if role not in ROLES:
        raise ValueError(f"--role must be one of {list(ROLES)}, got {role!r}")
    ca_folder = Path(ca_folder)
    try:
        ca_cert = x509.load_pem_x509_certificate((ca_folder / CA_CERT).read_bytes())
        ca_key = serialization.load_pem_private_key((ca_folder / CA_KEY).read_bytes(), password=None)
    except (OSError, ValueError) as err:
        raise ValueError(f"no federation CA in {ca_folder} ({err}); create one with `fedray ca init {ca_folder}`") \
            from None
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_subject(name, role)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = Path(out) if out is not None else ca_folder
    out.mkdir(parents=True, exist_ok=True)
    _write(out / f"{name}.key", _key_pem(key), private=True)
    _write(out / f"{name}.pem", _cert_pem(cert))
    return out / f"{name}.pem", out / f"{name}.key"


def identity(pem: bytes) -> tuple[str, str]:
    """(name, role) a certificate states: its common name and organisational unit."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(pem)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return (str(cn[0].value) if cn else ""), (str(ou[0].value) if ou else "")


def _subject(name: str, role: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedray federation"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                      x509.NameAttribute(NameOID.COMMON_NAME, name)])


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Written whole; a private key readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
