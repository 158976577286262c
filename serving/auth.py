"""Who is calling: CDS Hooks JWTs (EHRs) and API keys (REST clients).

CDS Hooks tokens are checked per the CDS Hooks security rules (see
``docs/standards.md``): ES384/RS384 only; keys only from the allowed-issuers file or an
allowlisted ``jku``; keys embedded in the token refused; ``aud`` equal to the exact
endpoint URL; ``exp``/``iat`` within 60 s of skew and a lifetime of at most 5 minutes;
every ``jti`` accepted once (a durable replay store that survives restarts).

Every refusal raises :class:`AuthError`; the web layer answers all of them with the
same 401 body (:func:`unauthorized_response`). The reason is logged as a short code;
tokens, claims and key material are never logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import jwt
from starlette.responses import Response

from serving.http.caller import Caller
from serving.issuers import ALLOWED_ALGORITHMS, AllowedIssuers, VerifyKey, load_allowed_issuers
from serving.jwks import JkuFetcher

__all__ = [
    "CLOCK_SKEW_S",
    "MAX_LIFETIME_S",
    "MAX_TOKEN_CHARS",
    "UNAUTHORIZED_BODY",
    "ApiKeyAuthenticator",
    "AuthError",
    "AuthUnavailable",
    "Caller",
    "CdsAuthenticator",
    "ReplayStore",
    "api_key_from_headers",
    "build_authenticators",
    "unauthorized_response",
]

logger = logging.getLogger(__name__)

CLOCK_SKEW_S = 60
MAX_LIFETIME_S = 300
MAX_TOKEN_CHARS = 8192
MAX_API_KEY_CHARS = 256
UNAUTHORIZED_BODY = b'{"error":"unauthorized"}'
# Header parameters that carry or point to keys; keys come only from configuration.
_KEY_BEARING_HEADERS = frozenset({"jwk", "x5c", "x5u", "x5t", "x5t#S256"})
# Extensions we do not implement (RFC 7515 `crit`, RFC 7797 unencoded payloads).
_UNSUPPORTED_HEADERS = frozenset({"crit", "b64"})
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class AuthError(Exception):
    """Authentication failed. ``reason`` is a short code for logs; callers always get 401."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AuthUnavailable(AuthError):
    """The replay or key store could not be reached: refused, and the web layer should
    answer 503 (a caller that only catches :class:`AuthError` still fails closed)."""


class ReplayStore(Protocol):
    """Durable, atomic memory of token ids (``AuditStore`` implements it)."""

    async def remember_jti_async(self, issuer: str, jti: str, expires: datetime) -> bool: ...


def unauthorized_response() -> Response:
    """The one 401 answer for every authentication failure."""
    return Response(
        UNAUTHORIZED_BODY,
        status_code=401,
        media_type="application/json",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _refuse(reason: str) -> AuthError:
    # Debug only: anyone can send refused calls; the web layer counts them and logs
    # at most one line a minute (serving.http.identify).
    logger.debug("caller refused: %s", reason)
    return AuthError(reason)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate member")
        result[key] = value
    return result


def _segment(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw, object_pairs_hook=_no_duplicates)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise _refuse(f"malformed-{what}") from None
    if not isinstance(value, dict):
        raise _refuse(f"malformed-{what}")
    return value


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(f"claim-{name}")
    return float(value)


class CdsAuthenticator:
    """Verifies CDS Hooks bearer JWTs against the allowed-issuers configuration.

    Args:
        issuers: the allowed-issuers file.
        keys: per issuer, its configured (non-``jku``) public keys.
        replay: durable ``jti`` store; a token id is accepted once.
        jku_fetcher: fetches allowlisted ``jku`` URLs (default: a real, bounded fetcher).
        clock: seconds since the epoch (tests move time).
    """

    def __init__(
        self,
        issuers: AllowedIssuers,
        keys: Mapping[str, tuple[VerifyKey, ...]],
        replay: ReplayStore,
        *,
        jku_fetcher: JkuFetcher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuers = issuers
        self._keys = dict(keys)
        self._replay = replay
        self._jku = jku_fetcher or JkuFetcher()
        self._clock = clock

    @classmethod
    def from_file(cls, path: Path, replay: ReplayStore, **kwargs: Any) -> CdsAuthenticator:
        """Build from an allowed-issuers YAML (see :mod:`serving.issuers`).

        Raises:
            models.config.ConfigError: the file is invalid.
            serving.issuers.JwksError: a JWKS file is missing or invalid.
        """
        issuers, keys = load_allowed_issuers(path)
        return cls(issuers, keys, replay, **kwargs)

    async def authenticate(self, authorization: str | None, endpoint_url: str) -> Caller:
        """Check the ``Authorization`` header of a call to ``endpoint_url``.

        Args:
            authorization: the raw header value (``Bearer <JWT>``) or None.
            endpoint_url: the exact URL called: public base URL + request path.

        Returns:
            The caller (``kind="jwt"``).

        Raises:
            AuthError: for every kind of invalid, forged or replayed token.
            AuthUnavailable: (an AuthError) the replay store is down; answer 503.
        """
        token = self._bearer(authorization)
        head_b64, body_b64, _ = token.split(".")
        header = _segment(head_b64, "header")
        unverified = _segment(body_b64, "payload")

        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise _refuse("alg")
        typ = header.get("typ", "JWT")
        if not isinstance(typ, str) or typ.upper() != "JWT":
            raise _refuse("typ")
        if _KEY_BEARING_HEADERS & header.keys():
            raise _refuse("embedded-key")
        if _UNSUPPORTED_HEADERS & header.keys():
            raise _refuse("header-param")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refuse("kid-missing")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or issuer not in self.issuers.issuers:
            raise _refuse("issuer")

        key = await self._key(issuer, header, kid, str(alg))
        now = self._clock()
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.alg],
                issuer=issuer,
                leeway=CLOCK_SKEW_S,
                options={
                    "require": ["iss", "aud", "exp", "iat", "jti"],
                    "verify_aud": False,  # checked below: exact string equality only
                    "verify_exp": False,  # checked below against our clock
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise _refuse(f"jwt-{type(exc).__name__}") from None
        self._check_claims(claims, endpoint_url, now)
        return await self._admit(issuer, claims)

    def _bearer(self, authorization: str | None) -> str:
        if not authorization:
            raise _refuse("no-token")
        if len(authorization) > MAX_TOKEN_CHARS + 16:
            raise _refuse("too-large")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _refuse("not-bearer")
        if len(token) > MAX_TOKEN_CHARS:
            raise _refuse("too-large")
        if not _COMPACT_JWS.fullmatch(token):
            raise _refuse("malformed")
        return token

    async def _key(self, issuer: str, header: Mapping[str, Any], kid: str, alg: str) -> VerifyKey:
        config = self.issuers.issuers[issuer]
        jku = header.get("jku")
        if jku is not None:
            if not isinstance(jku, str) or jku not in config.jku:
                raise _refuse("jku")
            candidates = [k for k in await self._jku.keys(jku) if k.kid == kid]
            if not candidates:
                candidates = [k for k in await self._jku.keys(jku, refresh=True) if k.kid == kid]
        else:
            candidates = [k for k in self._keys.get(issuer, ()) if k.kid == kid]
        if not candidates:
            raise _refuse("kid-unknown")
        if len(candidates) > 1:
            raise _refuse("kid-ambiguous")
        if candidates[0].alg != alg:
            raise _refuse("alg-key-mismatch")
        return candidates[0]

    def _check_claims(self, claims: Mapping[str, Any], endpoint_url: str, now: float) -> None:
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) == 1:
            aud = aud[0]  # RFC 7519 allows an array; it must name only this endpoint
        if not isinstance(aud, str) or aud != endpoint_url:
            raise _refuse("aud")
        exp = _number(claims, "exp")
        iat = _number(claims, "iat")
        if exp < now - CLOCK_SKEW_S:
            raise _refuse("expired")
        if iat > now + CLOCK_SKEW_S:
            raise _refuse("iat-future")
        if not 0 < exp - iat <= MAX_LIFETIME_S:
            raise _refuse("lifetime")
        if "nbf" in claims and _number(claims, "nbf") > now + CLOCK_SKEW_S:
            raise _refuse("nbf")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= 256:
            raise _refuse("claim-jti")
        sub = claims.get("sub")
        if sub is not None and not isinstance(sub, str):
            raise _refuse("claim-sub")

    async def _admit(self, issuer: str, claims: Mapping[str, Any]) -> Caller:
        configured = self.issuers.issuers[issuer].tenant
        claimed = claims.get("tenant")
        # The tenant comes from configuration only; a token naming any other (or one
        # where its issuer has none configured) is refused, never believed.
        if claimed is not None and claimed != configured:
            raise _refuse("tenant")
        expires = datetime.fromtimestamp(_number(claims, "exp") + CLOCK_SKEW_S, UTC)
        try:
            fresh = await self._replay.remember_jti_async(issuer, str(claims["jti"]), expires)
        except Exception as exc:  # any store failure: never admit an unchecked jti
            logger.error("replay store unavailable: %s", type(exc).__name__)
            raise AuthUnavailable("replay-store-unavailable") from None
        if not fresh:
            raise _refuse("replay")
        return Caller(iss=issuer, sub=claims.get("sub"), tenant=configured, kind="jwt")

    def fhir_server_allowed(self, caller: Caller, fhir_server: str) -> bool:
        """Whether Tonle may send ``caller``'s FHIR token to ``fhir_server``.

        Only base URLs on the caller's issuer allowlist (exact match, trailing slash
        ignored) are allowed; never a URL the caller alone chose.
        """
        if caller.kind != "jwt" or caller.iss not in self.issuers.issuers:
            return False
        allowed = self.issuers.issuers[caller.iss].fhir_servers
        return fhir_server.rstrip("/") in allowed


def api_key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The API key from ``X-API-Key`` or ``Authorization: ApiKey <key>``, if any."""
    value = headers.get("x-api-key")
    if value:
        return value
    authorization = headers.get("authorization", "")
    scheme, _, rest = authorization.partition(" ")
    if scheme.lower() == "apikey" and rest.strip():
        return rest.strip()
    return None


class _ApiKeyStore(Protocol):
    def check_api_key(self, key: str) -> Any: ...


class ApiKeyAuthenticator:
    """Checks API keys for the REST endpoints against their hashes in the store."""

    def __init__(self, store: _ApiKeyStore) -> None:
        self._store = store

    def authenticate(self, header_value: str | None) -> Caller:
        """Check an API key (the ``X-API-Key`` value, or ``ApiKey <key>``).

        Raises:
            AuthError: missing, malformed, unknown or revoked key.
            AuthUnavailable: (an AuthError) the key store is down; answer 503.
        """
        if not header_value:
            raise _refuse("no-api-key")
        value = header_value.strip()
        if value[:7].lower() == "apikey ":
            value = value[7:].strip()
        if len(value) > MAX_API_KEY_CHARS or not value.isascii():
            raise _refuse("api-key-malformed")
        try:
            info = self._store.check_api_key(value)
        except Exception as exc:  # any store failure: refuse
            logger.error("API key store unavailable: %s", type(exc).__name__)
            raise AuthUnavailable("key-store-unavailable") from None
        if info is None:
            raise _refuse("api-key-unknown")
        return Caller(iss="api-key", sub=info.key_id, tenant=info.tenant, kind="api-key")


def build_authenticators(
    settings: Any, store: Any | None = None
) -> tuple[CdsAuthenticator, ApiKeyAuthenticator]:
    """Both authenticators from :class:`serving.settings.Settings`.

    Args:
        settings: the service settings (``allowed_issuers``, ``database_url``).
        store: the open :class:`serving.audit.AuditStore` (replay store and API keys);
            opened from ``settings.database_url`` when not given.

    Without ``TONLE_ALLOWED_ISSUERS`` no CDS Hooks caller is trusted (every token 401).
    """
    if store is None:
        from serving.audit import AuditStore

        store = AuditStore.open(settings.database_url.get_secret_value())
    if settings.allowed_issuers is None:
        logger.warning("TONLE_ALLOWED_ISSUERS is not set: every CDS Hooks call will be refused")
        cds = CdsAuthenticator(AllowedIssuers(), {}, store)
    else:
        cds = CdsAuthenticator.from_file(Path(settings.allowed_issuers), store)
        logger.info("trusting %d CDS Hooks issuer(s)", len(cds.issuers.issuers))
    return cds, ApiKeyAuthenticator(store)
