"""The allowed-issuers file (``TONLE_ALLOWED_ISSUERS``): which EHRs may call, with which keys.

Example (YAML; paths are relative to the file)::

    issuers:
      "https://ehr.example.org":          # exact ``iss`` claim
        jwks_file: ehr-jwks.json          # or `jwks: {keys: [...]}` inline
        jku:                              # optional allowlisted JWKS URLs (https only)
          - "https://ehr.example.org/.well-known/jwks.json"
        fhir_servers:                     # fhirServer base URLs Tonle may call back
          - "https://fhir.example.org/r4"
        tenant: site-a                    # optional; a token's `tenant` must match it

Keys come only from here: keys embedded in a token are never used.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.config import load_config

__all__ = [
    "ALLOWED_ALGORITHMS",
    "AllowedIssuers",
    "IssuerConfig",
    "JwksError",
    "VerifyKey",
    "check_jku_url",
    "is_public_address",
    "load_allowed_issuers",
    "parse_jwks",
]

ALLOWED_ALGORITHMS = frozenset({"ES384", "RS384"})
_MIN_RSA_BITS = 2048
_MAX_KEYS = 50


class JwksError(ValueError):
    """A JWKS document is malformed or holds a key we refuse."""


@dataclass(frozen=True)
class VerifyKey:
    """One public key from a configured JWKS, with the one algorithm it may verify."""

    kid: str
    alg: str
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address (not private, loopback, link-local...)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_jku_url(url: str) -> str:
    """Validate a ``jku`` URL for the allowlist: https, a host name or public IP, no userinfo.

    Raises:
        ValueError: naming the URL and the rule it breaks.
    """
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError(f"jku {url!r}: only https URLs are allowed")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise ValueError(f"jku {url!r}: needs a host and no user:password")
    if parts.fragment:
        raise ValueError(f"jku {url!r}: must not have a fragment")
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        host = parts.hostname.rstrip(".").lower()
        if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
            raise ValueError(f"jku {url!r}: host {host!r} is not public") from None
        return url
    if not is_public_address(parts.hostname):
        raise ValueError(f"jku {url!r}: address {parts.hostname} is not a public address")
    return url


def _key_from_jwk(entry: dict[str, Any]) -> VerifyKey:
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JwksError("every key needs a non-empty string 'kid'")
    if "d" in entry or "p" in entry:
        raise JwksError(f"key {kid!r} holds private key material; publish public keys only")
    if entry.get("use", "sig") != "sig":
        raise JwksError(f"key {kid!r}: use={entry.get('use')!r}, expected 'sig'")
    kty = entry.get("kty")
    text = json.dumps(entry)
    try:
        if kty == "EC":
            if entry.get("crv") != "P-384":
                raise JwksError(f"key {kid!r}: EC keys must be on P-384 for ES384")
            key: Any = jwt.algorithms.ECAlgorithm.from_jwk(text)
            alg = "ES384"
        elif kty == "RSA":
            key = jwt.algorithms.RSAAlgorithm.from_jwk(text)
            alg = "RS384"
            if key.key_size < _MIN_RSA_BITS:
                raise JwksError(f"key {kid!r}: RSA keys need at least {_MIN_RSA_BITS} bits")
        else:
            raise JwksError(f"key {kid!r}: kty={kty!r}; only EC (P-384) and RSA are allowed")
    except jwt.exceptions.InvalidKeyError as exc:
        raise JwksError(f"key {kid!r} is not a valid {kty} public key") from exc
    if entry.get("alg", alg) != alg:
        raise JwksError(f"key {kid!r}: alg={entry.get('alg')!r}, expected {alg}")
    return VerifyKey(kid=kid, alg=alg, key=key)


def parse_jwks(document: Any) -> tuple[VerifyKey, ...]:
    """Public keys from a JWKS object ``{"keys": [...]}``.

    Keys sharing a ``kid`` are kept: a token naming that ``kid`` is refused as ambiguous.

    Raises:
        JwksError: the document or one of its keys is unacceptable.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError("a JWKS must be an object with a 'keys' list")
    entries = document["keys"]
    if not entries or len(entries) > _MAX_KEYS:
        raise JwksError(f"a JWKS must hold 1 to {_MAX_KEYS} keys, not {len(entries)}")
    if not all(isinstance(entry, dict) for entry in entries):
        raise JwksError("every JWKS key must be an object")
    return tuple(_key_from_jwk(entry) for entry in entries)


def _normalise_base(url: str) -> str:
    return url.rstrip("/")


class IssuerConfig(BaseModel):
    """How to verify one issuer's tokens, and what it may ask Tonle to do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jwks: dict[str, Any] | None = Field(default=None, description="Inline JWKS {keys: [...]}.")
    jwks_file: Path | None = Field(default=None, description="JWKS file, relative to this YAML.")
    jku: tuple[str, ...] = Field(default=(), description="Allowlisted JWKS URLs (https).")
    fhir_servers: tuple[str, ...] = Field(
        default=(), description="FHIR base URLs Tonle may query with this issuer's token."
    )
    tenant: str | None = Field(default=None, description="Tenant this issuer belongs to.")

    @field_validator("jku")
    @classmethod
    def _jku_safe(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_jku_url(url) for url in value)

    @field_validator("fhir_servers")
    @classmethod
    def _fhir_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise ValueError(f"fhir_servers {url!r}: needs an http(s) URL with a host")
            if parts.query or parts.fragment or parts.username is not None:
                raise ValueError(f"fhir_servers {url!r}: a base URL has no query, fragment or user")
        return tuple(_normalise_base(url) for url in value)

    @model_validator(mode="after")
    def _some_keys(self) -> IssuerConfig:
        if self.jwks is None and self.jwks_file is None and not self.jku:
            raise ValueError("give the issuer's keys: jwks, jwks_file or jku")
        if self.jwks is not None and self.jwks_file is not None:
            raise ValueError("give jwks or jwks_file, not both")
        if self.jwks is not None:
            parse_jwks(self.jwks)
        return self


class AllowedIssuers(BaseModel):
    """The whole allowed-issuers file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuers: dict[str, IssuerConfig] = Field(default_factory=dict)

    def keys_for(self, issuer: str, base_dir: Path | None = None) -> tuple[VerifyKey, ...]:
        """The configured (non-jku) keys of ``issuer``; empty if it has none.

        Raises:
            JwksError: the issuer's JWKS file is missing or invalid.
        """
        config = self.issuers[issuer]
        if config.jwks is not None:
            return parse_jwks(config.jwks)
        if config.jwks_file is None:
            return ()
        path = config.jwks_file
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise JwksError(f"JWKS file {path} for issuer {issuer!r} is unreadable") from exc
        return parse_jwks(document)


def load_allowed_issuers(path: Path) -> tuple[AllowedIssuers, dict[str, tuple[VerifyKey, ...]]]:
    """Read the allowed-issuers YAML and every issuer's configured keys, once.

    Returns:
        The parsed file and, per issuer, its keys from ``jwks`` / ``jwks_file``.

    Raises:
        models.config.ConfigError: the YAML is invalid.
        JwksError: a JWKS file is missing or invalid.
    """
    issuers = load_config(path, AllowedIssuers)
    keys = {name: issuers.keys_for(name, path.parent) for name in issuers.issuers}
    return issuers, keys
