"""CDS Hooks JWT and API-key authentication through a tiny ASGI app.

Covers the whole forged-token list of docs/reliability.md: every case must be answered
401 with one identical body, never reach the handler (no model call) and never make
an outbound request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from models.config import ConfigError
from serving.audit import AuditStore, AuditUnavailable
from serving.auth import (
    UNAUTHORIZED_BODY,
    ApiKeyAuthenticator,
    AuthError,
    AuthUnavailable,
    Caller,
    CdsAuthenticator,
    api_key_from_headers,
)
from serving.demo_issuer import DEMO_ISSUER, ensure_demo_issuer, sign_token
from serving.issuers import load_allowed_issuers
from serving.jwks import JkuFetcher
from tests.serving.db_fixtures import postgres_database

PUBLIC = "https://tonle.example.org"
PATH = "/cds-services/ncd-cvd-risk"
ENDPOINT = PUBLIC + PATH
JKU = "https://demo-ehr.tonle.example/.well-known/jwks.json"
FHIR = "https://fhir.example.org/r4"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_token(header: str, claims: dict[str, Any], key: Any, alg: str = "ES384") -> str:
    """Sign exactly the header text given (so duplicate members survive)."""
    signing_input = f"{_b64(header.encode())}.{_b64(json.dumps(claims).encode())}"
    signature = jwt.algorithms.get_default_algorithms()[alg].sign(signing_input.encode(), key)
    return f"{signing_input}.{_b64(signature)}"


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": DEMO_ISSUER,
        "aud": ENDPOINT,
        "iat": now,
        "exp": now + 120,
        "jti": str(uuid.uuid4()),
        "sub": "ehr-client",
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


class Recorder(httpx.AsyncBaseTransport):
    """An httpx transport that records every outbound request and serves one JWKS."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.requests: list[str] = []
        self.jwks = jwks

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sni = request.extensions.get("sni_hostname")
        self.requests.append(f"{request.url} host={request.headers['host']} sni={sni}")
        return httpx.Response(200, json=self.jwks)


class World:
    """An issuer folder, a replay store, a recording network, and the ASGI app."""

    def __init__(self, directory: Path, db_url: str, store: AuditStore | None = None) -> None:
        self.directory = directory
        self.db_url = db_url
        self.jwks = json.loads((directory / "jwks.json").read_text())
        self.network = Recorder(self.jwks)
        self.resolved: list[str] = []
        self.handled = 0
        self.store = store or AuditStore.open(db_url)
        self.auth = self.make_auth(self.store)

    def make_auth(self, store: AuditStore) -> CdsAuthenticator:
        def resolver(host: str, port: int) -> list[str]:
            self.resolved.append(host)
            return ["93.184.216.34"]

        fetcher = JkuFetcher(transport=self.network, resolver=resolver)
        return CdsAuthenticator.from_file(
            self.directory / "allowed-issuers.yaml", store, jku_fetcher=fetcher
        )

    def app(self) -> Starlette:
        async def handler(request: Request) -> Response:
            try:
                caller = await self.auth.authenticate(
                    request.headers.get("authorization"), PUBLIC + request.url.path
                )
            except AuthError:
                return Response(UNAUTHORIZED_BODY, status_code=401, media_type="application/json")
            self.handled += 1  # stands in for the model call
            return JSONResponse(caller.model_dump())

        return Starlette(routes=[Route("/cds-services/{service}", handler, methods=["POST"])])

    def call(self, *authorizations: str | None, path: str = PATH) -> list[httpx.Response]:
        async def go() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=self.app())
            async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            path, json={}, headers={"Authorization": a} if a is not None else {}
                        )
                        for a in authorizations
                    )
                )

        return asyncio.run(go())

    def sign(self, **kwargs: Any) -> str:
        kwargs.setdefault("aud", ENDPOINT)
        return sign_token(directory=self.directory, **kwargs)

    def private(self, alg: str = "ES384") -> Any:
        name = "demo-es384.pem" if alg == "ES384" else "demo-rs384.pem"
        return serialization.load_pem_private_key(
            (self.directory / name).read_bytes(), password=None
        )


@pytest.fixture(scope="module")
def issuer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("issuer")
    ensure_demo_issuer(directory, fhir_servers=[FHIR + "/"], tenant="demo")
    # Trust an allowlisted jku too, and a JWKS with a duplicated kid.
    config = (directory / "allowed-issuers.yaml").read_text()
    config += f"    jku: ['{JKU}']\n"
    dup = json.loads((directory / "jwks.json").read_text())
    twin = ec.generate_private_key(ec.SECP384R1())
    twin_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(twin.public_key()))
    first = dict(dup["keys"][0], kid="dup")
    (directory / "dup.json").write_text(json.dumps({"keys": [first, dict(twin_jwk, kid="dup")]}))
    config += "  https://dup.example.org:\n    jwks_file: dup.json\n"
    config += "  https://other.example.org:\n    jwks_file: jwks.json\n"
    config += "    fhir_servers: ['https://fhir.other.example.org']\n"
    (directory / "allowed-issuers.yaml").write_text(config)
    return directory


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, AuditStore]]:
    """One replay store for the module (every token has a fresh jti): saves a migration
    per test. Tests that close or replace the store use their own (``own_world``)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('auth') / 'auth.db'}"
    store = AuditStore.open(url)
    yield url, store
    store.close()


@pytest.fixture
def world(issuer_dir: Path, shared_db: tuple[str, AuditStore]) -> World:
    url, store = shared_db
    return World(issuer_dir, url, store)


@pytest.fixture
def own_world(issuer_dir: Path, tmp_path: Path) -> Iterator[World]:
    made = World(issuer_dir, f"sqlite:///{tmp_path / 'auth.db'}")
    yield made
    made.store.close()


def _assert_refused(world: World, responses: list[httpx.Response]) -> None:
    for response in responses:
        assert response.status_code == 401
        assert response.content == UNAUTHORIZED_BODY
    assert world.handled == 0
    assert world.network.requests == []
    assert world.resolved == []


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_valid_tokens_are_accepted(world: World, alg: str) -> None:
    (response,) = world.call(f"Bearer {world.sign(alg=alg, sub='client-9')}")
    assert response.status_code == 200
    assert response.json() == {
        "iss": DEMO_ISSUER,
        "sub": "client-9",
        "tenant": "demo",
        "kind": "jwt",
    }
    assert world.network.requests == []


def test_aud_as_a_one_element_array_is_accepted(world: World) -> None:
    (response,) = world.call(f"Bearer {world.sign(extra_claims={'aud': [ENDPOINT]})}")
    assert response.status_code == 200


def test_lower_case_typ_is_accepted(world: World) -> None:
    (response,) = world.call(f"Bearer {world.sign(extra_headers={'typ': 'jwt'})}")
    assert response.status_code == 200


def test_token_within_clock_skew_is_accepted(world: World) -> None:
    now = time.time()
    (response,) = world.call(f"Bearer {world.sign(now=now - 150, lifetime_s=120)}")
    assert response.status_code == 200


def test_allowlisted_jku_is_fetched_once_and_cached(world: World) -> None:
    first = world.sign(extra_headers={"jku": JKU})
    second = world.sign(extra_headers={"jku": JKU})
    responses = world.call(f"Bearer {first}") + world.call(f"Bearer {second}")
    assert [r.status_code for r in responses] == [200, 200]
    # Connected to the checked address, with the host name for HTTP and TLS.
    pinned = JKU.replace("demo-ehr.tonle.example", "93.184.216.34")
    assert world.network.requests == [
        f"{pinned} host=demo-ehr.tonle.example sni=demo-ehr.tonle.example"
    ]


def _forgeries(world: World) -> dict[str, str | None]:
    """Authorization header values, one per forged-token case."""
    es_key = world.private("ES384")
    attacker = ec.generate_private_key(ec.SECP384R1())
    attacker_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(attacker.public_key()))
    public_pem = es_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def hmac_token(alg: str) -> str:
        header = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": "demo-es384"}).encode())
        body = _b64(json.dumps(_claims()).encode())
        digest = hashlib.sha256 if alg == "HS256" else hashlib.sha384
        mac = hmac.new(public_pem, f"{header}.{body}".encode(), digest).digest()
        return f"{header}.{body}.{_b64(mac)}"

    none_head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "demo-es384"}).encode())
    none_body = _b64(json.dumps(_claims()).encode())
    valid = world.sign()
    head, body, sig = valid.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(body + "=="))
    tampered["sub"] = "admin"

    def signed(claims: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(
            claims, es_key, algorithm="ES384", headers={"kid": "demo-es384", **headers}
        )

    def with_jku(url: str) -> str:
        return "Bearer " + signed(_claims(), jku=url)

    now = int(time.time())
    p256 = ec.generate_private_key(ec.SECP256R1())
    return {
        "alg-none-empty-signature": f"Bearer {none_head}.{none_body}.",
        "alg-none-with-signature": f"Bearer {none_head}.{none_body}.{sig}",
        "hs256-with-public-key": "Bearer " + hmac_token("HS256"),
        "hs384-with-public-key": "Bearer " + hmac_token("HS384"),
        "es256-alg": "Bearer "
        + jwt.encode(_claims(), p256, algorithm="ES256", headers={"kid": "demo-es384"}),
        "rs384-alg-with-es-kid": "Bearer "
        + jwt.encode(
            _claims(), world.private("RS384"), algorithm="RS384", headers={"kid": "demo-es384"}
        ),
        "unknown-kid": "Bearer " + signed(_claims(), kid="no-such-key"),
        "missing-kid": "Bearer " + jwt.encode(_claims(), es_key, algorithm="ES384"),
        "duplicate-kid-in-jwks": "Bearer "
        + jwt.encode(
            _claims(iss="https://dup.example.org"),
            es_key,
            algorithm="ES384",
            headers={"kid": "dup"},
        ),
        "duplicate-kid-member": "Bearer "
        + _raw_token(
            '{"alg":"ES384","typ":"JWT","kid":"nope","kid":"demo-es384"}', _claims(), es_key
        ),
        "embedded-jwk": "Bearer "
        + jwt.encode(
            _claims(),
            attacker,
            algorithm="ES384",
            headers={"kid": "demo-es384", "jwk": attacker_jwk},
        ),
        "embedded-jwk-real-key": "Bearer " + signed(_claims(), jwk=world.jwks["keys"][0]),
        "embedded-x5c": "Bearer " + signed(_claims(), x5c=["MIIB"]),
        "embedded-x5u": "Bearer " + signed(_claims(), x5u="https://evil.example/cert.pem"),
        "crit-header": "Bearer " + signed(_claims(), crit=["exp"]),
        "b64-false-header": "Bearer "
        + _raw_token(
            '{"alg":"ES384","typ":"JWT","kid":"demo-es384","b64":false}', _claims(), es_key
        ),
        "attacker-key-known-kid": "Bearer "
        + jwt.encode(_claims(), attacker, algorithm="ES384", headers={"kid": "demo-es384"}),
        "jku-not-allowlisted": with_jku("https://evil.example/jwks.json"),
        "jku-file": with_jku("file:///etc/passwd"),
        "jku-http": with_jku("http://demo-ehr.tonle.example/.well-known/jwks.json"),
        "jku-link-local": with_jku("https://169.254.169.254/latest/meta-data"),
        "jku-link-local-v6": with_jku("https://[fe80::1]/jwks.json"),
        "jku-loopback": with_jku("https://127.0.0.1/jwks.json"),
        "jku-prefix-of-allowlisted": with_jku(JKU + ".evil"),
        "missing-iss": "Bearer " + signed(_claims(iss=None)),
        "missing-aud": "Bearer " + signed(_claims(aud=None)),
        "missing-exp": "Bearer " + signed(_claims(exp=None)),
        "missing-iat": "Bearer " + signed(_claims(iat=None)),
        "missing-jti": "Bearer " + signed(_claims(jti=None)),
        "empty-jti": "Bearer " + signed(_claims(jti="")),
        "string-exp": "Bearer " + signed(_claims(exp=str(now + 60))),
        "expired-beyond-skew": "Bearer " + signed(_claims(iat=now - 200, exp=now - 61)),
        "iat-in-future": "Bearer " + signed(_claims(iat=now + 120, exp=now + 200)),
        "lifetime-over-5-min": "Bearer " + signed(_claims(iat=now, exp=now + 301)),
        "exp-before-iat": "Bearer " + signed(_claims(iat=now, exp=now - 1)),
        "nbf-in-future": "Bearer " + signed(_claims(nbf=now + 200)),
        "aud-other-service": "Bearer "
        + signed(_claims(aud=PUBLIC + "/cds-services/ncd-diabetes-risk")),
        "aud-trailing-slash": "Bearer " + signed(_claims(aud=ENDPOINT + "/")),
        "aud-http-not-https": "Bearer " + signed(_claims(aud=ENDPOINT.replace("https", "http"))),
        "aud-base-only": "Bearer " + signed(_claims(aud=PUBLIC)),
        "aud-list": "Bearer " + signed(_claims(aud=[ENDPOINT, "https://x.example"])),
        "iss-prefix-match": "Bearer " + signed(_claims(iss=DEMO_ISSUER + ".evil.com")),
        "iss-prefix-of-allowed": "Bearer " + signed(_claims(iss=DEMO_ISSUER[:-3])),
        "iss-trailing-slash": "Bearer " + signed(_claims(iss=DEMO_ISSUER + "/")),
        "iss-unknown-own-key": "Bearer "
        + jwt.encode(
            _claims(iss="https://evil.example"), attacker, algorithm="ES384", headers={"kid": "a"}
        ),
        "tenant-mismatch": "Bearer " + signed(_claims(tenant="other-hospital")),
        "typ-not-jwt": "Bearer " + signed(_claims(), typ="JWE"),
        "tampered-payload": f"Bearer {head}.{_b64(json.dumps(tampered).encode())}.{sig}",
        "truncated-signature": f"Bearer {head}.{body}.{sig[:-8]}",
        "no-header": None,
        "empty-header": "",
        "bearer-no-token": "Bearer ",
        "basic-scheme": "Basic " + base64.b64encode(b"user:pass").decode(),
        "two-segments": f"Bearer {head}.{body}",
        "four-segments": f"Bearer {valid}.{sig}",
        "not-base64": "Bearer @@@.###.$$$",
        "header-not-json": f"Bearer {_b64(b'not json')}.{body}.{sig}",
        "header-json-array": f"Bearer {_b64(b'[1,2]')}.{body}.{sig}",
        "payload-not-json": f"Bearer {head}.{_b64(b'{')}.{sig}",
        "deeply-nested-header": f"Bearer {_b64(b'[' * 2000 + b']' * 2000)}.{body}.{sig}",
        "64kb-token": "Bearer " + signed(_claims(pad="x" * 65536)),
        "64kb-garbage": "Bearer " + "A" * 65536,
    }


# Each forged case and the reason code it must be refused for (not an earlier, generic one).
FORGERY_CASES = {
    "alg-none-empty-signature": "malformed",
    "alg-none-with-signature": "alg",
    "hs256-with-public-key": "alg",
    "hs384-with-public-key": "alg",
    "es256-alg": "alg",
    "rs384-alg-with-es-kid": "alg-key-mismatch",
    "unknown-kid": "kid-unknown",
    "missing-kid": "kid-missing",
    "duplicate-kid-in-jwks": "kid-ambiguous",
    "duplicate-kid-member": "malformed-header",
    "embedded-jwk": "embedded-key",
    "embedded-jwk-real-key": "embedded-key",
    "embedded-x5c": "embedded-key",
    "embedded-x5u": "embedded-key",
    "crit-header": "header-param",
    "b64-false-header": "header-param",
    "attacker-key-known-kid": "jwt-InvalidSignatureError",
    "jku-not-allowlisted": "jku",
    "jku-file": "jku",
    "jku-http": "jku",
    "jku-link-local": "jku",
    "jku-link-local-v6": "jku",
    "jku-loopback": "jku",
    "jku-prefix-of-allowlisted": "jku",
    "missing-iss": "issuer",
    "missing-aud": "jwt-MissingRequiredClaimError",
    "missing-exp": "jwt-MissingRequiredClaimError",
    "missing-iat": "jwt-MissingRequiredClaimError",
    "missing-jti": "jwt-MissingRequiredClaimError",
    "empty-jti": "claim-jti",
    "string-exp": "claim-exp",
    "expired-beyond-skew": "expired",
    "iat-in-future": "iat-future",
    "lifetime-over-5-min": "lifetime",
    "exp-before-iat": "lifetime",
    "nbf-in-future": "nbf",
    "aud-other-service": "aud",
    "aud-trailing-slash": "aud",
    "aud-http-not-https": "aud",
    "aud-base-only": "aud",
    "aud-list": "aud",
    "iss-prefix-match": "issuer",
    "iss-prefix-of-allowed": "issuer",
    "iss-trailing-slash": "issuer",
    "iss-unknown-own-key": "issuer",
    "tenant-mismatch": "tenant",
    "typ-not-jwt": "typ",
    "tampered-payload": "jwt-InvalidSignatureError",
    "truncated-signature": "jwt-InvalidSignatureError",
    "no-header": "no-token",
    "empty-header": "no-token",
    "bearer-no-token": "not-bearer",
    "basic-scheme": "not-bearer",
    "two-segments": "malformed",
    "four-segments": "malformed",
    "not-base64": "malformed",
    "header-not-json": "malformed-header",
    "header-json-array": "malformed-header",
    "payload-not-json": "malformed-payload",
    "deeply-nested-header": "malformed-header",
    "64kb-token": "too-large",
    "64kb-garbage": "too-large",
}


def test_forgery_table_is_complete(world: World) -> None:
    assert sorted(_forgeries(world)) == sorted(FORGERY_CASES)


@pytest.mark.parametrize("case", sorted(FORGERY_CASES))
def test_forged_token_is_refused(world: World, case: str, caplog: pytest.LogCaptureFixture) -> None:
    authorization = _forgeries(world)[case]
    caplog.set_level("DEBUG", logger="serving.auth")
    _assert_refused(world, world.call(authorization))
    reasons = [r.getMessage() for r in caplog.records if r.name == "serving.auth"]
    assert reasons == [f"caller refused: {FORGERY_CASES[case]}"]


def test_replayed_token_is_refused(world: World) -> None:
    token = f"Bearer {world.sign()}"
    first = world.call(token)
    second = world.call(token)
    assert [first[0].status_code, second[0].status_code] == [200, 401]
    assert second[0].content == UNAUTHORIZED_BODY


def test_50_parallel_copies_exactly_one_accepted(world: World) -> None:
    token = f"Bearer {world.sign()}"
    statuses = sorted(r.status_code for r in world.call(*[token] * 50))
    assert statuses == [200] + [401] * 49
    assert world.handled == 1


def test_replay_still_refused_after_restart(own_world: World) -> None:
    world = own_world
    token = f"Bearer {world.sign()}"
    assert world.call(token)[0].status_code == 200
    world.store.close()
    world.store = AuditStore.open(world.db_url)  # a new process would do exactly this
    world.auth = world.make_auth(world.store)
    (again,) = world.call(token)
    assert again.status_code == 401
    assert world.call(f"Bearer {world.sign()}")[0].status_code == 200


def test_same_jti_for_another_endpoint_is_still_a_replay(world: World) -> None:
    jti = str(uuid.uuid4())
    assert world.call(f"Bearer {world.sign(jti=jti)}")[0].status_code == 200
    other = "/cds-services/ncd-diabetes-risk"
    second = world.call(f"Bearer {world.sign(jti=jti, aud=PUBLIC + other)}", path=other)
    assert second[0].status_code == 401


def test_tokens_are_never_logged(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    good = world.sign()
    bad = world.sign(aud=PUBLIC)
    world.call(f"Bearer {good}", f"Bearer {bad}")
    for token in (good, bad):
        for part in token.split("."):
            assert part not in caplog.text


def test_jku_resolving_to_private_address_is_not_fetched(world: World) -> None:
    def resolver(host: str, port: int) -> list[str]:
        world.resolved.append(host)
        return ["10.1.2.3"]

    world.auth = CdsAuthenticator.from_file(
        world.directory / "allowed-issuers.yaml",
        world.store,
        jku_fetcher=JkuFetcher(transport=world.network, resolver=resolver),
    )
    (response,) = world.call(f"Bearer {world.sign(extra_headers={'jku': JKU})}")
    assert response.status_code == 401
    assert world.resolved == ["demo-ehr.tonle.example"]
    assert world.network.requests == []


@pytest.mark.parametrize(
    ("answer", "delay"),
    [
        (httpx.Response(302, headers={"Location": "http://169.254.169.254/"}), 0.0),
        (httpx.Response(200, content=b'{"keys":[' + b" " * 70_000 + b"]}"), 0.0),
        (httpx.Response(200, content=b"not json"), 0.0),
        (httpx.Response(200, json={"keys": []}), 5.0),
    ],
    ids=["redirect", "oversize", "not-json", "slow"],
)
def test_bad_jku_answers_are_refused_quickly(
    world: World, answer: httpx.Response, delay: float
) -> None:
    class Bad(httpx.AsyncBaseTransport):
        calls = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            Bad.calls += 1
            await asyncio.sleep(delay)
            return answer

    world.auth = CdsAuthenticator.from_file(
        world.directory / "allowed-issuers.yaml",
        world.store,
        jku_fetcher=JkuFetcher(
            transport=Bad(), resolver=lambda h, p: ["93.184.216.34"], timeout_s=0.3
        ),
    )
    started = time.monotonic()
    responses = world.call(*(f"Bearer {world.sign(extra_headers={'jku': JKU})}" for _ in range(3)))
    assert [r.status_code for r in responses] == [401] * 3
    assert time.monotonic() - started < 2.0
    assert Bad.calls == 1  # the failure is cached: no retry storm
    assert world.handled == 0


def test_fhir_server_allowlist_is_per_issuer_and_exact(world: World) -> None:
    ehr = Caller(iss=DEMO_ISSUER, sub="x", tenant="demo", kind="jwt")
    other = Caller(iss="https://other.example.org", sub=None, tenant=None, kind="jwt")
    allowed = world.auth.fhir_server_allowed
    assert allowed(ehr, FHIR)
    assert allowed(ehr, FHIR + "/")
    assert not allowed(ehr, "https://fhir.example.org")
    assert not allowed(ehr, "https://fhir.example.org/r4.evil.com")
    assert not allowed(ehr, "https://fhir.example.org.evil.com/r4")
    assert not allowed(ehr, "http://fhir.example.org/r4")
    assert not allowed(ehr, "https://fhir.other.example.org")
    assert allowed(other, "https://fhir.other.example.org")
    assert not allowed(other, FHIR)
    assert not allowed(Caller(iss="api-key", sub="k", tenant="t", kind="api-key"), FHIR)
    assert not allowed(Caller(iss="dev", sub=None, tenant=None, kind="dev"), FHIR)
    assert not allowed(
        Caller(iss="https://unknown.example", sub=None, tenant=None, kind="jwt"), FHIR
    )


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("jku: ['http://ehr.example.org/jwks.json']", "only https"),
        ("jku: ['file:///etc/jwks.json']", "only https"),
        ("jku: ['https://169.254.169.254/jwks']", "not a public address"),
        ("jku: ['https://10.0.0.8/jwks']", "not a public address"),
        ("jku: ['https://[::1]/jwks']", "not a public address"),
        ("jku: ['https://localhost/jwks']", "not public"),
        ("jku: ['https://user:pw@ehr.example.org/jwks']", "no user"),
        ("fhir_servers: ['ftp://fhir.example.org']", "http(s)"),
        ("unknown_key: 1", "Extra inputs"),
    ],
)
def test_issuer_config_refuses_unsafe_entries(tmp_path: Path, snippet: str, message: str) -> None:
    path = tmp_path / "issuers.yaml"
    path.write_text(
        f"issuers:\n  https://ehr.example.org:\n    jwks: {{keys: []}}\n    {snippet}\n"
        if "jwks" in snippet
        else f"issuers:\n  https://ehr.example.org:\n    jku: ['https://ehr.example.org/k']\n"
        f"    {snippet}\n"
    )
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_allowed_issuers(path)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "P-384"),
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "2048"),
        ("private", "private key material"),
    ],
    ids=["p256", "rsa1024", "private"],
)
def test_jwks_refuses_weak_or_private_keys(tmp_path: Path, key: Any, message: str) -> None:
    if key == "private":
        private = ec.generate_private_key(ec.SECP384R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private))
    elif isinstance(key, rsa.RSAPrivateKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    else:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    path = tmp_path / "issuers.yaml"
    path.write_text(
        "issuers:\n  https://ehr.example.org:\n    jwks: "
        + json.dumps({"keys": [dict(jwk, kid="k1")]})
        + "\n"
    )
    with pytest.raises(ConfigError, match=message):
        load_allowed_issuers(path)


def test_no_allowed_issuers_refuses_everyone(world: World) -> None:
    from serving.auth import build_authenticators
    from serving.settings import Settings

    settings = Settings(database_url=world.db_url, allowed_issuers=None)
    world.auth, _ = build_authenticators(settings, world.store)
    _assert_refused(world, world.call(f"Bearer {world.sign()}"))


def test_api_keys(world: World) -> None:
    info, key = world.store.create_api_key("site-a", "lab")
    auth = ApiKeyAuthenticator(world.store)
    assert auth.authenticate(key) == Caller(
        iss="api-key", sub=info.key_id, tenant="site-a", kind="api-key"
    )
    assert auth.authenticate(f"ApiKey {key}").tenant == "site-a"
    assert api_key_from_headers({"x-api-key": key}) == key
    assert api_key_from_headers({"authorization": f"ApiKey {key}"}) == key
    assert api_key_from_headers({"authorization": f"Bearer {key}"}) is None
    for bad in [None, "", key + "x", "tonle_" + "a" * 300, "tönle_x_y", "Bearer " + key]:
        with pytest.raises(AuthError):
            auth.authenticate(bad)
    world.store.revoke_api_key(info.key_id)
    with pytest.raises(AuthError):
        auth.authenticate(key)


def test_demo_issuer_keeps_its_keys_private_and_stable(issuer_dir: Path, tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    ensure_demo_issuer(directory)
    jwks = (directory / "jwks.json").read_text()
    ensure_demo_issuer(directory)
    assert (directory / "jwks.json").read_text() == jwks
    assert (directory / "demo-es384.pem").stat().st_mode & 0o077 == 0
    assert '"d"' not in jwks
    issuers, keys = load_allowed_issuers(directory / "allowed-issuers.yaml")
    assert {k.alg for k in keys[DEMO_ISSUER]} == {"ES384", "RS384"}
    assert issuers.issuers[DEMO_ISSUER].tenant == "demo"


def test_replay_store_down_refuses_as_unavailable(world: World) -> None:
    class Down:
        async def remember_jti_async(self, issuer: str, jti: str, expires: Any) -> bool:
            raise AuditUnavailable("database is down")

    world.auth = CdsAuthenticator.from_file(world.directory / "allowed-issuers.yaml", Down())
    with pytest.raises(AuthUnavailable):
        asyncio.run(world.auth.authenticate(f"Bearer {world.sign()}", ENDPOINT))
    _assert_refused(world, world.call(f"Bearer {world.sign()}"))


def test_50_parallel_copies_on_postgres(issuer_dir: Path) -> None:
    with postgres_database() as url:
        world = World(issuer_dir, url)
        token = f"Bearer {world.sign()}"
        statuses = sorted(r.status_code for r in world.call(*[token] * 50))
        world.store.close()
    assert statuses == [200] + [401] * 49
    assert world.handled == 1


def test_example_issuers_config_loads() -> None:
    root = Path(__file__).resolve().parents[2]
    issuers, keys = load_allowed_issuers(root / "configs" / "allowed-issuers.example.yaml")
    config = issuers.issuers["https://ehr.example-hospital.org"]
    assert config.tenant == "example-hospital"
    assert config.fhir_servers == ("https://ehr.example-hospital.org/fhir/r4",)
    assert keys == {"https://ehr.example-hospital.org": ()}  # keys come from the jku
