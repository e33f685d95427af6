"""--dev's TLS certificate for the HTTP edge: self-signed, made once in the data directory.

It makes the seed's `curl -k https://localhost:...` commands work on a fresh
machine. It proves nothing about the server (anyone can make one), so it is
for development only, and the log says so at every start.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger("licensing")

DEV_TLS_DIR = "dev-tls"
# long enough never to get in a developer's way; `curl -k` does not look at it anyway
VALIDITY = dt.timedelta(days=10 * 365)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Make (once) and return a self-signed certificate and key (PEM) for localhost,
    `directory`/tls.crt and tls.key (the key readable by its owner only)."""
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        # its own trust anchor, so `curl --cacert tls.crt` works as well as `curl -k`
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def development_certificate(data_dir: Path) -> tuple[Path, Path]:
    """--dev's certificate and key, made once in the data directory; says so, loudly."""
    cert_path, key_path = self_signed_certificate(data_dir / DEV_TLS_DIR)
    log.warning(
        "DEVELOPMENT MODE: the Admin API serves HTTPS with a self-signed certificate made for "
        "localhost (%s): clients must skip verification (curl -k) or trust that file. "
        "Configure --tls-cert and --tls-key in production",
        cert_path,
    )
    return cert_path, key_path
