"""A demo EHR token issuer: local keys, a config trusting them, and a token signer.

``tonle demo`` calls :func:`ensure_demo_issuer` to create ``.tonle/demo-issuer/``
(private keys readable by the owner only, the public JWKS and an allowed-issuers
YAML trusting it). The UI's demo EHR, tests and benchmarks sign CDS Hooks tokens
with :func:`sign_token`. Never trust this issuer outside a demo.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "DEMO_ISSUER",
    "DEMO_ISSUER_DIR",
    "ISSUERS_FILE",
    "ensure_demo_issuer",
    "sign_token",
]

DEMO_ISSUER = "https://demo-ehr.tonle.example"
DEMO_ISSUER_DIR = Path(".tonle/demo-issuer")
ISSUERS_FILE = "allowed-issuers.yaml"
_KIDS = {"ES384": "demo-es384", "RS384": "demo-rs384"}


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def ensure_demo_issuer(
    directory: Path = DEMO_ISSUER_DIR,
    *,
    fhir_servers: list[str] | None = None,
    tenant: str | None = "demo",
) -> Path:
    """Create (or reuse) the demo issuer's keys and an allowed-issuers YAML trusting it.

    Args:
        directory: where keys, ``jwks.json`` and the YAML go.
        fhir_servers: FHIR base URLs the demo issuer may ask Tonle to query.
        tenant: tenant of the demo issuer.

    Returns:
        Path of the allowed-issuers YAML (set ``TONLE_ALLOWED_ISSUERS`` to it).
    """
    directory.mkdir(parents=True, exist_ok=True)
    public_keys = []
    for alg, kid in _KIDS.items():
        pem_path = directory / f"{kid}.pem"
        if not pem_path.exists():
            private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
                ec.generate_private_key(ec.SECP384R1())
                if alg == "ES384"
                else rsa.generate_private_key(public_exponent=65537, key_size=2048)
            )
            pem = private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write_private(pem_path, pem)
        public = _private_key(str(pem_path)).public_key()
        algorithm = jwt.algorithms.ECAlgorithm if alg == "ES384" else jwt.algorithms.RSAAlgorithm
        jwk = json.loads(algorithm.to_jwk(public))
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        public_keys.append(jwk)
    (directory / "jwks.json").write_text(json.dumps({"keys": public_keys}, indent=2) + "\n")
    issuer: dict[str, Any] = {"jwks_file": "jwks.json", "fhir_servers": list(fhir_servers or [])}
    if tenant is not None:
        issuer["tenant"] = tenant
    path = directory / ISSUERS_FILE
    path.write_text(
        "# Written by tonle demo: trusts the local demo EHR issuer. Demo only.\n"
        + yaml.safe_dump({"issuers": {DEMO_ISSUER: issuer}}, sort_keys=True),
        encoding="utf-8",
    )
    return path


@lru_cache(maxsize=8)
def _private_key(pem_path: str) -> Any:
    return serialization.load_pem_private_key(Path(pem_path).read_bytes(), password=None)


def sign_token(
    aud: str,
    *,
    directory: Path = DEMO_ISSUER_DIR,
    alg: str = "ES384",
    lifetime_s: int = 120,
    jti: str | None = None,
    sub: str | None = "demo-ehr",
    tenant: str | None = None,
    issuer: str = DEMO_ISSUER,
    now: float | None = None,
    extra_claims: dict[str, Any] | None = None,
    extra_headers: dict[str, Any] | None = None,
) -> str:
    """A CDS Hooks JWT from the demo issuer for the endpoint URL ``aud``.

    Args:
        aud: the exact endpoint URL (public base URL + path).
        directory: the demo issuer folder made by :func:`ensure_demo_issuer`.
        alg: ``ES384`` or ``RS384``.
        lifetime_s: seconds from ``iat`` to ``exp``.
        jti: token id (a fresh uuid by default; reuse one to test replays).
        sub: the client id.
        tenant: optional ``tenant`` claim.
        issuer: the ``iss`` claim.
        now: ``iat`` in seconds since the epoch (default: now).
        extra_claims: claims to add or override (``None`` values remove a claim).
        extra_headers: header parameters to add.
    """
    if alg not in _KIDS:
        raise ValueError(f"alg {alg!r}: the demo issuer signs ES384 or RS384")
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": aud,
        "iat": issued,
        "exp": issued + lifetime_s,
        "jti": jti or str(uuid.uuid4()),
    }
    if sub is not None:
        claims["sub"] = sub
    if tenant is not None:
        claims["tenant"] = tenant
    for name, value in (extra_claims or {}).items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    headers = {"kid": _KIDS[alg], "typ": "JWT", **(extra_headers or {})}
    key = _private_key(str((directory / f"{_KIDS[alg]}.pem").resolve()))
    return jwt.encode(claims, key, algorithm=alg, headers=headers)
