"""Service-account keys for the simulator, tests and the dev stack (RSA 2048, Google's JSON shape)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def generate_service_account(
    client_email: str = "broker@sim-project.iam.gserviceaccount.com",
    token_uri: str | None = None,
) -> tuple[dict[str, Any], str]:
    """A new key: (the service-account JSON document, the matching public key as PEM)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    doc: dict[str, Any] = {
        "type": "service_account",
        "project_id": "sim-project",
        "private_key_id": uuid.uuid4().hex,
        "private_key": private_pem,
        "client_email": client_email,
        "client_id": str(uuid.uuid4().int)[:21],
        "token_uri": token_uri or "https://oauth2.googleapis.com/token",
    }
    return doc, public_pem_of(private_pem)


def public_pem_of(private_pem: str) -> str:
    """The public key (SubjectPublicKeyInfo PEM) of a PEM private key."""
    private = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def write_service_account(path: Path, doc: dict[str, Any]) -> None:
    """Write the key file readable by its owner only (it holds a private key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    path.chmod(0o600)


def read_service_account(path: Path) -> tuple[str, str]:
    """(client_email, public key PEM) of an existing key file."""
    doc = orjson.loads(path.read_bytes())
    return str(doc["client_email"]), public_pem_of(str(doc["private_key"]))
