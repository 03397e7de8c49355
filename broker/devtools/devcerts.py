"""Throwaway PKI for a local secured Kafka: a CA, a server certificate and client certificates.

For tests and ``mdm-broker dev --secure`` only: EC P-256 keys, unencrypted PKCS#8 PEM (what Kafka's
PEM key store accepts), short validity. Never use these files for anything real.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ORGANIZATION = "mdm-test"

#: A leaf certificate's validity window: current, ended yesterday, or starting tomorrow.
CertValidity = Literal["valid", "expired", "not_yet_valid"]


@dataclass(frozen=True)
class CertFiles:
    """PEM paths of one certificate: ``cert`` (leaf), ``key`` (PKCS#8), ``chain`` (key+leaf+CA)."""

    cert: Path
    key: Path
    chain: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class DevCA:
    """A self-signed CA that issues server and client certificates into ``folder``."""

    def __init__(self, folder: Path, name: str = "mdm-test-ca", valid_days: int = 30) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = _write(
            folder / f"{name}.crt", self._cert.public_bytes(serialization.Encoding.PEM)
        )

    def issue(
        self,
        stem: str,
        common_name: str,
        *,
        server_names: tuple[str, ...] = (),
        client: bool = True,
        valid_days: int = 30,
        validity: CertValidity = "valid",
        not_after: datetime.datetime | None = None,
    ) -> CertFiles:
        """Issue a leaf certificate. ``server_names`` (DNS names or IPs) make it a server cert.

        ``validity`` other than ``"valid"`` issues one that expired yesterday or becomes valid
        tomorrow (to test those failures). ``not_after`` (a valid one only) ends its validity
        then instead of after ``valid_days`` (a certificate that expires while a client runs).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        day = datetime.timedelta(days=1)
        if validity == "expired":
            start, end = now - 30 * day, now - day
        elif validity == "not_yet_valid":
            start, end = now + day, now + 30 * day
        else:
            start = now - datetime.timedelta(minutes=5)
            end = not_after or now + datetime.timedelta(days=valid_days)
        usages = []
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if server_names:
            alt: list[x509.GeneralName] = []
            for name in server_names:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    alt.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        ca_pem = self._cert.public_bytes(serialization.Encoding.PEM)
        key_pem = _key_pem(key)
        return CertFiles(
            cert=_write(self.folder / f"{stem}.crt", cert_pem + ca_pem),
            key=_write(self.folder / f"{stem}.key", key_pem, private=True),
            chain=_write(self.folder / f"{stem}.keystore.pem", key_pem + cert_pem + ca_pem, True),
        )


def principal_of(common_name: str) -> str:
    """The Kafka principal of a client certificate issued by :class:`DevCA` (RFC 2253 order)."""
    return f"User:CN={common_name},O={ORGANIZATION}"
