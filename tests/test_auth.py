"""Production authentication: configured issuers, key sets over real HTTP, claim mappings,
scopes, and a corpus of hostile tokens. Each answer is the NICo envelope, never a 500."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm
from starlette.testclient import TestClient

from nico_api.auth import authenticator as auth
from nico_api.auth.issuers import AuthConfig, AuthConfigError, load_auth_config, parse_auth_config
from nico_api.auth.jwks import KeySet
from nico_api.config import Settings
from nico_api.web.app import create_app
from nico_api.web.framework import NICoApp
from tests.demo import ACME, ACME_SITE, RUNNING_TASK, task_path
from tests.idp import AUDIENCE, ISSUER, Key, KeySetServer, claims
from tests.processes import free_port

KEY_A = Key.rsa("key-a")
KEY_B = Key.rsa("key-b")
EC_KEY = Key.ec("key-ec")
ATTACKER = Key.rsa("key-a")  # same kid as the real key, different key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def idp() -> Iterator[KeySetServer]:
    server = KeySetServer(KEY_A, EC_KEY)
    yield server
    server.stop()


def issuer_config(jwks: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "keycloak",
        "issuer": ISSUER,
        "jwks": jwks,
        "jwksTimeout": "2s",
        "jwksAllowLoopbackHttp": True,
        "audiences": [AUDIENCE],
        "algorithms": ["RS256", "ES256"],
        "claimMappings": [{"orgName": ACME, "orgDisplayName": "Acme", "rolesAttribute": "roles"}],
    }
    config.update(overrides)
    return config


def write_config(tmp_path: Path, *issuers: dict[str, Any], **extra: Any) -> Path:
    path = tmp_path / "auth.yaml"
    path.write_text(yaml.safe_dump({"issuers": list(issuers), **extra}))
    return path


@pytest.fixture(scope="module")
def trusted_idp() -> Iterator[KeySetServer]:
    server = KeySetServer(KEY_A, EC_KEY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served_app(
    settings: Settings, trusted_idp: KeySetServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NICoApp]:
    # The app of this module trusts the test identity provider only.
    config = write_config(tmp_path_factory.mktemp("auth"), issuer_config(trusted_idp.url))
    app = create_app(settings.model_copy(update={"auth_config": config}))
    yield app
    app.runtime.close()


def get_task(client: TestClient, authorization: str | None):
    headers = {} if authorization is None else {"Authorization": authorization}
    return client.get(task_path(RUNNING_TASK), params={"siteId": ACME_SITE}, headers=headers)


def assert_error(response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"source": "nico", "message": message, "data": None}


def authenticator(config: AuthConfig, clock: Clock | None = None) -> auth.Authenticator:
    return auth.Authenticator(config, clock=clock or Clock())


def verify(authn: auth.Authenticator, token: str) -> auth.Caller:
    return asyncio.run(authn.verify(token))


# --- a real provider's token ------------------------------------------------------------------


def test_token_from_a_configured_issuer_is_accepted(client: TestClient) -> None:
    assert get_task(client, f"Bearer {KEY_A.sign(claims())}").status_code == 200
    assert get_task(client, f"Bearer {EC_KEY.sign(claims())}").status_code == 200


def test_development_issuer_is_not_trusted_when_a_configuration_is_given(
    client: TestClient, settings: Settings
) -> None:
    from nico_api.auth.dev_issuer import DevIssuer

    token = DevIssuer(settings).issue(ACME, ["PROVIDER_ADMIN"])
    assert_error(get_task(client, f"Bearer {token}"), 401, auth.INVALID_TOKEN)


# --- key sets over HTTP -----------------------------------------------------------------------


def test_rotated_key_is_picked_up_at_most_once_a_minute(idp: KeySetServer, tmp_path: Path) -> None:
    clock = Clock()
    authn = authenticator(load_auth_config(write_config(tmp_path, issuer_config(idp.url))), clock)
    assert verify(authn, KEY_A.sign(claims())).roles_by_org == {ACME: {"PROVIDER_ADMIN"}}
    assert idp.requests == 1

    idp.publish(KEY_A, KEY_B)
    clock.now += 10
    with pytest.raises(auth.TokenRejectedError) as rejected:
        verify(authn, KEY_B.sign(claims()))
    assert rejected.value.status_code == 401
    assert idp.requests == 1  # the last fetch was under a minute ago

    clock.now += 51
    assert verify(authn, KEY_B.sign(claims())).subject == "user-1"
    assert idp.requests == 2

    clock.now += 10
    with pytest.raises(auth.TokenRejectedError):
        verify(authn, Key.rsa("key-c").sign(claims()))
    assert idp.requests == 2


def test_rotation_is_immediate_on_first_unknown_kid(idp: KeySetServer, tmp_path: Path) -> None:
    clock = Clock()
    authn = authenticator(load_auth_config(write_config(tmp_path, issuer_config(idp.url))), clock)
    verify(authn, KEY_A.sign(claims()))
    idp.publish(KEY_B)
    clock.now += 61
    assert verify(authn, KEY_B.sign(claims())).subject == "user-1"


def test_cached_keys_serve_while_the_provider_is_down(idp: KeySetServer, tmp_path: Path) -> None:
    clock = Clock()
    authn = authenticator(load_auth_config(write_config(tmp_path, issuer_config(idp.url))), clock)
    verify(authn, KEY_A.sign(claims()))
    idp.stop()
    clock.now += 3600
    with pytest.raises(auth.TokenRejectedError) as rejected:
        verify(authn, KEY_B.sign(claims()))  # a refresh is tried, fails, the cache stays
    assert rejected.value.status_code == 401
    assert verify(authn, KEY_A.sign(claims())).subject == "user-1"


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/certs"


def test_never_reachable_provider_is_503(tmp_path: Path) -> None:
    settings = Settings(
        instance_dir=tmp_path / "instance",
        database_url=f"sqlite:///{tmp_path / 'nico.db'}",
        auth_config=write_config(tmp_path, issuer_config(_closed_port_url())),
    )
    with create_app(settings).test_client() as client:
        response = get_task(client, f"Bearer {KEY_A.sign(claims())}")
    assert_error(response, 503, auth.KEYS_UNAVAILABLE)
    assert response.headers["retry-after"] == "5"


@pytest.mark.slow  # waits on the clock
@pytest.mark.parametrize(
    ("slowness", "timeout", "limit"),
    [({"delay": 3.0}, "300ms", 2.5), ({"drip": 0.2}, "1s", 2.0)],
    ids=["slow-to-answer", "a-byte-every-0.2s"],
)
def test_a_slow_provider_is_cut_off_by_the_deadline(
    idp: KeySetServer, tmp_path: Path, slowness: dict[str, float], timeout: str, limit: float
) -> None:
    # Dripping: each read is quick, while the whole document would take minutes.
    for name, value in slowness.items():
        setattr(idp, name, value)
    config = issuer_config(idp.url, jwksTimeout=timeout)
    authn = authenticator(load_auth_config(write_config(tmp_path, config)))
    started = time.monotonic()
    with pytest.raises(auth.TokenRejectedError) as rejected:
        verify(authn, KEY_A.sign(claims()))
    assert rejected.value.status_code == 503
    assert time.monotonic() - started < limit


def _verify_all(authn: auth.Authenticator, tokens: list[str]) -> list[int]:
    """Each token's answer when all are verified at once: 200, or the refusal's status."""

    async def one(token: str) -> int:
        try:
            await authn.verify(token)
        except auth.TokenRejectedError as exc:
            return exc.status_code
        return 200

    async def every() -> list[int]:
        return await asyncio.gather(*(one(token) for token in tokens))

    return asyncio.run(every())


@pytest.mark.slow  # waits on the clock: a fetch's 0.5 s deadline
def test_a_hanging_provider_costs_every_waiter_one_deadline(
    idp: KeySetServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retries due sooner than a fetch's deadline: waiters that took turns would each fetch.
    monkeypatch.setattr(KeySet, "retry_interval", 0.1)
    idp.delay = 5.0
    config = issuer_config(idp.url, jwksTimeout="500ms")
    authn = authenticator(load_auth_config(write_config(tmp_path, config)))
    started = time.monotonic()
    statuses = _verify_all(authn, [KEY_A.sign(claims(sub=f"user-{n}")) for n in range(8)])
    assert statuses == [503] * 8
    # Eight requests share one fetch and its deadline, rather than taking turns.
    assert time.monotonic() - started < 1.5
    assert idp.requests == 1


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "close-delimited"])
def test_a_huge_key_set_is_never_read_whole(
    idp: KeySetServer, tmp_path: Path, declared: bool
) -> None:
    idp.huge = 200 * 2**20
    idp.declare_length = declared
    authn = authenticator(load_auth_config(write_config(tmp_path, issuer_config(idp.url))))
    before = _rss_mb()
    with pytest.raises(auth.TokenRejectedError) as rejected:
        verify(authn, KEY_A.sign(claims()))
    assert rejected.value.status_code == 503
    assert _rss_mb() - before < 40
    assert idp.sent < 50 * 2**20  # the reader stopped long before the end


async def _background_done() -> None:
    """Wait, on this event loop, for what verifying left running (a key set's fetch), if any."""
    await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))


def test_a_removed_key_stops_working_within_the_key_sets_lifetime(
    idp: KeySetServer, tmp_path: Path
) -> None:
    clock = Clock()
    idp.cache_control = "public, max-age=120"
    config = issuer_config(idp.url, jwksMinLifetime="30s", jwksMaxLifetime="10m")
    authn = authenticator(load_auth_config(write_config(tmp_path, config)), clock)

    async def scenario() -> None:
        assert (await authn.verify(KEY_A.sign(claims(sub="first")))).subject == "first"
        idp.publish(KEY_B)  # the provider drops key A
        clock.now += 100
        assert (await authn.verify(KEY_A.sign(claims(sub="second")))).subject == "second"
        assert idp.requests == 1  # still fresh
        clock.now += 21  # past the provider's max-age: the set is fetched again
        # Meanwhile the cached key answers, so a hanging provider would cost no request a wait.
        assert (await authn.verify(KEY_A.sign(claims(sub="third")))).subject == "third"
        await _background_done()
        assert idp.requests == 2
        with pytest.raises(auth.TokenRejectedError) as rejected:
            await authn.verify(KEY_A.sign(claims(sub="fourth")))
        assert rejected.value.status_code == 401

    asyncio.run(scenario())


def test_an_expired_key_set_never_makes_a_request_wait(idp: KeySetServer, tmp_path: Path) -> None:
    clock = Clock()
    config = issuer_config(idp.url, jwksTimeout="2s")
    authn = authenticator(load_auth_config(write_config(tmp_path, config)), clock)

    async def scenario() -> None:
        await authn.verify(KEY_A.sign(claims(sub="first")))
        idp.delay = 5.0  # the provider now hangs
        clock.now += 3600
        started = time.monotonic()
        for n in range(5):
            await authn.verify(KEY_A.sign(claims(sub=f"user-{n}")))
        assert time.monotonic() - started < 0.5

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("cache_control", "lifetime"),
    [("max-age=5", 30), ("max-age=86400", 600), (None, 300), ("no-store", 30)],
)
def test_the_providers_max_age_is_kept_within_the_issuers_bounds(
    idp: KeySetServer, tmp_path: Path, cache_control: str | None, lifetime: int
) -> None:
    clock = Clock()
    idp.cache_control = cache_control
    config = issuer_config(idp.url, jwksMinLifetime="30s", jwksMaxLifetime="10m")
    authn = authenticator(load_auth_config(write_config(tmp_path, config)), clock)

    async def scenario() -> None:
        await authn.verify(KEY_A.sign(claims(sub="first")))
        clock.now += lifetime - 1
        await authn.verify(KEY_A.sign(claims(sub="second")))
        await _background_done()
        assert idp.requests == 1
        clock.now += 1
        await authn.verify(KEY_A.sign(claims(sub="third")))
        await _background_done()
        assert idp.requests == 2

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "odd_key",
    [
        {"kty": "RSA", "kid": "odd", "alg": "none", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "odd", "alg": ["RS256"], "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "kid": "odd", "crv": "P-999", "x": "AA", "y": "AA"},
        {"kid": "odd"},
        "not-a-key",
    ],
    ids=["alg-none", "alg-list", "unknown-curve", "no-kty", "not-an-object"],
)
def test_one_unusable_key_does_not_cost_the_others(
    idp: KeySetServer, tmp_path: Path, odd_key: Any
) -> None:
    idp.document = {"keys": [odd_key, KEY_A.jwk()]}
    authn = authenticator(load_auth_config(write_config(tmp_path, issuer_config(idp.url))))
    assert verify(authn, KEY_A.sign(claims())).subject == "user-1"


@pytest.mark.parametrize("document", [{"keys": "none"}, [1, 2], {"keys": [{"kid": "odd"}]}, "text"])
def test_unusable_key_set_document_is_503_not_500(
    idp: KeySetServer, tmp_path: Path, document: Any
) -> None:
    idp.document = document
    authn = authenticator(load_auth_config(write_config(tmp_path, issuer_config(idp.url))))
    with pytest.raises(auth.TokenRejectedError) as rejected:
        verify(authn, KEY_A.sign(claims()))
    assert rejected.value.status_code == 503


def test_key_set_serves_requests_from_several_event_loops(
    idp: KeySetServer, tmp_path: Path
) -> None:
    clock = Clock()
    authn = authenticator(load_auth_config(write_config(tmp_path, issuer_config(idp.url))), clock)

    async def concurrently() -> list[auth.Caller]:
        return await asyncio.gather(*(authn.verify(KEY_A.sign(claims())) for _ in range(5)))

    for _ in range(3):
        clock.now += 120
        assert len(asyncio.run(concurrently())) == 5


@pytest.mark.slow  # waits on the clock
def test_verified_token_is_cached_until_it_expires(
    idp: KeySetServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    authn = authenticator(load_auth_config(write_config(tmp_path, issuer_config(idp.url))))
    token = KEY_A.sign(claims(exp=int(time.time()) + 2))
    assert verify(authn, token).subject == "user-1"

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise jwt.InvalidTokenError("verification was attempted")

    monkeypatch.setattr(auth.jwt, "decode", refuse)
    assert verify(authn, token).subject == "user-1"  # from the cache
    with pytest.raises(auth.TokenRejectedError):
        verify(authn, KEY_A.sign(claims(sub="someone-else")))  # not cached: verified
    time.sleep(2.1)
    with pytest.raises(auth.TokenRejectedError):
        verify(authn, token)  # expired: out of the cache, verified again


def test_key_set_from_a_local_file(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [KEY_A.jwk()]}))
    authn = authenticator(load_auth_config(write_config(tmp_path, issuer_config(str(path)))))
    assert verify(authn, KEY_A.sign(claims())).roles_by_org == {ACME: {"PROVIDER_ADMIN"}}


# --- claim mappings ---------------------------------------------------------------------------

MAPPINGS = AuthConfig.model_validate(
    {
        "issuers": [
            {
                "name": "corporate",
                "issuer": "https://corp.test",
                "jwks": "unused.json",
                "claimMappings": [
                    {"orgName": "acme-inc", "orgDisplayName": "Acme", "roles": ["PROVIDER_ADMIN"]},
                    {"orgName": "shared", "roles": ["TENANT_ADMIN"]},
                ],
            },
            {
                "name": "keycloak",
                "issuer": "https://kc.test/realms/nico",
                "jwks": "unused.json",
                "claimMappings": [{"orgName": "initech", "rolesAttribute": "realm_access.roles"}],
            },
            {
                "name": "robots",
                "issuer": "https://robots.test",
                "jwks": "unused.json",
                "claimMappings": [{"orgName": "automation", "isServiceAccount": True}],
            },
            {
                "name": "saas",
                "issuer": "https://saas.test",
                "jwks": "unused.json",
                "claimMappings": [
                    {
                        "orgAttribute": "tenant.id",
                        "orgDisplayAttribute": "tenant.name",
                        "rolesAttribute": "nico_roles",
                    }
                ],
            },
        ]
    }
)


def memberships(issuer: str, token_claims: dict[str, Any]) -> dict[str, frozenset[str]]:
    config = MAPPINGS.model_copy()
    authn = authenticator(config)
    return authn._memberships(  # the mapping step alone; verification is tested above
        next(i for i in config.issuers if i.issuer == issuer), token_claims
    )


def test_fixed_org_fixed_roles() -> None:
    assert memberships("https://corp.test", {"roles": ["TENANT_ADMIN"]}) == {
        "acme-inc": {"PROVIDER_ADMIN"},
        "shared": {"TENANT_ADMIN"},
    }


@pytest.mark.parametrize(
    ("realm_access", "roles"),
    [
        ({"roles": ["PROVIDER_ADMIN", "offline_access"]}, {"PROVIDER_ADMIN"}),
        (
            {"roles": "NICO_PROVIDER_ADMIN TENANT_ADMIN uma_authorization"},
            {"NICO_PROVIDER_ADMIN", "TENANT_ADMIN"},
        ),
        ({"roles": "  "}, set()),
        ({"roles": 7}, set()),
        ({}, set()),
    ],
    ids=["array", "space-separated", "blank", "not-roles", "missing"],
)
def test_fixed_org_roles_from_a_nested_claim(realm_access: dict[str, Any], roles: set[str]) -> None:
    result = memberships("https://kc.test/realms/nico", {"realm_access": realm_access})
    assert result == {"initech": roles}


def test_service_account_gets_both_admin_roles() -> None:
    assert memberships("https://robots.test", {}) == {
        "automation": {"PROVIDER_ADMIN", "TENANT_ADMIN"}
    }


def test_org_and_roles_from_claims() -> None:
    token_claims = {"tenant": {"id": "globex", "name": "Globex"}, "nico_roles": "PROVIDER_ADMIN"}
    assert memberships("https://saas.test", token_claims) == {"globex": {"PROVIDER_ADMIN"}}


def test_org_from_claims_cannot_take_a_configured_org() -> None:
    token_claims = {"tenant": {"id": "acme-inc"}, "nico_roles": ["PROVIDER_ADMIN"]}
    assert memberships("https://saas.test", token_claims) == {}


def test_org_claim_that_is_not_text_maps_to_nothing() -> None:
    assert memberships("https://saas.test", {"tenant": {"id": ["a"]}, "nico_roles": []}) == {}


def test_role_with_trailing_newline_is_dropped() -> None:
    token_claims = {"tenant": {"id": "globex"}, "nico_roles": ["PROVIDER_ADMIN\n", "TENANT_ADMIN"]}
    assert memberships("https://saas.test", token_claims) == {"globex": {"TENANT_ADMIN"}}


def test_role_names_outside_production_are_dropped() -> None:
    token_claims = {
        "tenant": {"id": "globex"},
        "nico_roles": [
            "ADMIN",
            "SUPER_PROVIDER_ADMIN_X",
            "A_B_TENANT_ADMIN",
            "FORGE_PROVIDER_ADMIN",
        ],
    }
    assert memberships("https://saas.test", token_claims) == {"globex": {"FORGE_PROVIDER_ADMIN"}}


# --- scopes and audiences ---------------------------------------------------------------------


def scoped_client(
    settings: Settings, tmp_path: Path, idp: KeySetServer, **overrides: Any
) -> TestClient:
    config = write_config(tmp_path, issuer_config(idp.url, **overrides))
    return create_app(settings.model_copy(update={"auth_config": config})).test_client()


@pytest.fixture(scope="module")
def scoped_app(
    settings: Settings, trusted_idp: KeySetServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NICoApp]:
    """An app whose issuer requires the scopes `openid` and `nico`, shared by the scope tests
    (each serves it over the fresh database of its `client`)."""
    config = issuer_config(trusted_idp.url, scopes=["openid", "nico"])
    path = write_config(tmp_path_factory.mktemp("scoped"), config)
    app = create_app(settings.model_copy(update={"auth_config": path}))
    yield app
    app.runtime.close()


@pytest.mark.parametrize(
    "granted",
    [{"scope": "openid nico"}, {"scp": ["nico", "openid"]}, {"scopes": ["openid"], "scp": "nico"}],
)
def test_required_scopes_present(
    client: TestClient, scoped_app: NICoApp, granted: dict[str, Any]
) -> None:
    with scoped_app.test_client() as scoped:
        response = get_task(scoped, f"Bearer {KEY_A.sign(claims(**granted))}")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("granted", [{}, {"scope": "openid"}, {"scp": ["nico"]}])
def test_missing_scope_is_403(
    client: TestClient, scoped_app: NICoApp, granted: dict[str, Any]
) -> None:
    with scoped_app.test_client() as scoped:
        response = get_task(scoped, f"Bearer {KEY_A.sign(claims(**granted))}")
    assert_error(response, 403, auth.MISSING_SCOPES)


def test_one_matching_audience_is_enough(client: TestClient) -> None:
    token = KEY_A.sign(claims(aud=["account", AUDIENCE]))
    assert get_task(client, f"Bearer {token}").status_code == 200


def test_audience_not_checked_when_none_configured(
    client: TestClient, settings: Settings, tmp_path: Path, idp: KeySetServer
) -> None:
    with scoped_client(settings, tmp_path, idp, audiences=[]) as open_client:
        response = get_task(open_client, f"Bearer {KEY_A.sign(claims(aud='anything'))}")
    assert response.status_code == 200


# --- hostile tokens ---------------------------------------------------------------------------


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hs256_with_public_key() -> str:
    # The classic confusion: the RSA public key used as an HMAC secret.
    pem = KEY_A.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': 'key-a'})}.{b64(claims())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def rs256(header: dict[str, Any], payload: dict[str, Any]) -> str:
    # Signed by the real key, but with values a JWT library refuses to write.
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input.encode(), KEY_A.private)
    return f"{signing_input}.{b64(signature)}"


@functools.cache
def hostile_tokens() -> dict[str, str]:
    good = KEY_A.sign(claims())
    header, _payload, signature = good.split(".")
    now = int(time.time())
    attacker_jwk = ATTACKER.jwk()
    return {
        "alg-none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}.",
        "alg-none-with-kid": f"{b64({'alg': 'none', 'kid': 'key-a'})}.{b64(claims())}.",
        "hs256-with-public-key": hs256_with_public_key(),
        "kid-not-in-key-set": Key.rsa("key-z").sign(claims()),
        "same-kid-other-key": ATTACKER.sign(claims()),
        "jku-elsewhere": ATTACKER.sign(claims(), jku="http://127.0.0.1:1/evil.json"),
        "x5u-elsewhere": ATTACKER.sign(claims(), x5u="http://127.0.0.1:1/evil.pem"),
        "embedded-jwk": ATTACKER.sign(claims(), jwk=attacker_jwk),
        "disallowed-algorithm": KEY_A.sign(claims(), algorithm="RS384"),
        "ec-header-rsa-key": KEY_A.sign(claims(), algorithm="PS256"),
        "expired": KEY_A.sign(claims(exp=now - 3600, iat=now - 7200)),
        "not-yet-valid": KEY_A.sign(claims(nbf=now + 3600)),
        "no-expiry": KEY_A.sign(claims(exp=None)),
        "wrong-issuer": KEY_A.sign(claims(iss="https://evil.test")),
        "missing-issuer": KEY_A.sign(claims(iss=None)),
        "issuer-not-text": rs256({"alg": "RS256", "kid": "key-a"}, claims(iss=[ISSUER])),
        "wrong-audience": KEY_A.sign(claims(aud="someone-else")),
        "missing-audience": KEY_A.sign(claims(aud=None)),
        "no-subject": KEY_A.sign(claims(sub=None)),
        "tampered-payload": f"{header}.{b64(claims(sub='admin'))}.{signature}",
        "truncated": good[: len(good) - 20],
        "no-signature": f"{header}.{b64(claims())}",
        "64-kb": KEY_A.sign(claims(padding="x" * 65536)),
        "64-kb-garbage": "a" * 65536,
        "non-json-header": f"{b64(b'{not json')}.{b64(claims())}.{signature}",
        "header-not-object": f"{b64(b'[1]')}.{b64(claims())}.{signature}",
        "payload-not-json": f"{header}.{b64(b'not json')}.{signature}",
        "kid-not-text": rs256({"alg": "RS256", "kid": ["key-a"]}, claims()),
    }


@pytest.mark.parametrize("kind", list(hostile_tokens()))
def test_hostile_token_is_refused(client: TestClient, kind: str) -> None:
    token = hostile_tokens()[kind]
    assert_error(get_task(client, f"Bearer {token}"), 401, auth.INVALID_TOKEN)


def test_lower_case_scheme_is_accepted(client: TestClient) -> None:
    assert get_task(client, f"bearer {KEY_A.sign(claims())}").status_code == 200


@pytest.mark.parametrize("spacing", [" Bearer {t}", "Bearer {t} ", "Bearer\t{t}"])
def test_extra_spaces_are_a_format_error(client: TestClient, spacing: str) -> None:
    header = spacing.format(t=KEY_A.sign(claims()))
    assert_error(get_task(client, header), 401, auth.BAD_HEADER_FORMAT)


# --- the configuration is checked at start-up -------------------------------------------------

GOOD = issuer_config("https://idp.test/certs")


@pytest.mark.parametrize(
    ("issuers", "expected"),
    [
        (
            [GOOD, {**GOOD, "issuer": "https://other.test"}],
            "issuers[0] (name keycloak) field 'name': issuer name 'keycloak' is repeated",
        ),
        (
            [
                GOOD,
                {
                    **GOOD,
                    "name": "copy",
                    "claimMappings": [{"orgName": "x", "roles": ["TENANT_ADMIN"]}],
                },
            ],
            "issuers[0] (name keycloak) field 'issuer': 'https://idp.test/realms/nico' is config",
        ),
        (
            [GOOD, {**GOOD, "name": "b", "issuer": "https://b.test"}],
            "issuers[1] (name b) field 'claimMappings': org 'acme-inc' is already mapped by issuer",
        ),
        (
            [
                {**GOOD, "claimMappings": [{"orgAttribute": "o", "rolesAttribute": "r"}]},
                {
                    **GOOD,
                    "name": "b",
                    "issuer": "https://b.test",
                    "claimMappings": [{"orgAttribute": "o", "rolesAttribute": "r"}],
                },
            ],
            "only one mapping may take the org from the token",
        ),
        (
            [{**GOOD, "claimMappings": [{"orgName": "x", "roles": ["SUPERUSER"]}]}],
            "issuers[0] (name keycloak) field 'claimMappings.0.roles': Value error, unknown role",
        ),
        (
            [{**GOOD, "algorithms": ["RS256", "none"]}],
            "issuers[0] (name keycloak) field 'algorithms': Value error, unknown algorithm 'none'",
        ),
        ([{**GOOD, "algorithms": ["HS256"]}], "HS256 needs an explicit sharedSecret"),
        ([{**GOOD, "sharedSecret": "s3cret"}], "sharedSecret is only used with HS256"),
        ([{**GOOD, "jwks": None}], "jwks (a key set URL or file) is required"),
        ([{**GOOD, "claimMappings": []}], "field 'claimMappings'"),
        (
            [{**GOOD, "claimMappings": [{"orgName": "x"}]}],
            "orgName needs exactly one of roles, rolesAttribute or isServiceAccount",
        ),
        (
            [
                {
                    **GOOD,
                    "claimMappings": [
                        {"orgName": "x", "roles": ["TENANT_ADMIN"], "rolesAttribute": "r"}
                    ],
                }
            ],
            "orgName needs exactly one of roles, rolesAttribute or isServiceAccount",
        ),
        ([{**GOOD, "claimMappings": [{"orgAttribute": "o"}]}], "orgAttribute needs rolesAttribute"),
        (
            [{**GOOD, "claimMappings": [{"rolesAttribute": "r"}]}],
            "a claim mapping needs orgName or orgAttribute",
        ),
        ([{**GOOD, "jwksTimeout": "soon"}], "field 'jwksTimeout'"),
        ([{**GOOD, "jwks": "http://idp.example/certs"}], "jwks must be an https:// URL"),
        (
            [{**GOOD, "jwks": "http://127.0.0.1:8081/certs", "jwksAllowLoopbackHttp": False}],
            "jwks must be an https:// URL",
        ),
        (
            [{**GOOD, "jwks": "http://idp.example/certs", "jwksAllowLoopbackHttp": True}],
            "plain http only to a loopback host",
        ),
        (
            [{**GOOD, "jwksMinLifetime": "2h", "jwksMaxLifetime": "1h"}],
            "jwksMinLifetime is longer than jwksMaxLifetime",
        ),
        ([{**GOOD, "audience": ["typo"]}], "field 'audience': Extra inputs are not permitted"),
        ([], "issuers: List should have at least 1 item"),
    ],
    ids=[
        "duplicate-name",
        "duplicate-url",
        "org-twice",
        "two-dynamic",
        "unknown-role",
        "unknown-algorithm",
        "hs-without-secret",
        "secret-without-hs",
        "no-jwks",
        "no-mappings",
        "mapping-without-roles",
        "mapping-two-role-sources",
        "dynamic-without-roles",
        "mapping-without-org",
        "bad-duration",
        "plain-http",
        "loopback-http-not-allowed",
        "remote-http-allowed-is-still-refused",
        "lifetime-bounds",
        "unknown-field",
        "no-issuers",
    ],
)
def test_invalid_configuration_is_refused_naming_the_problem(
    issuers: list[dict[str, Any]], expected: str
) -> None:
    with pytest.raises(AuthConfigError) as error:
        parse_auth_config({"issuers": issuers}, "auth.yaml")
    assert expected in str(error.value)


def test_app_refuses_to_start_with_an_invalid_configuration(tmp_path: Path) -> None:
    settings = Settings(
        instance_dir=tmp_path / "instance",
        database_url=f"sqlite:///{tmp_path / 'nico.db'}",
        auth_config=write_config(tmp_path, {**GOOD, "algorithms": ["none"]}),
    )
    with pytest.raises(AuthConfigError, match="unknown algorithm 'none'"):
        create_app(settings)


def test_symmetric_issuer_with_a_shared_secret(tmp_path: Path) -> None:
    secret = "a-shared-secret-of-at-least-32-bytes!"
    config = {**GOOD, "algorithms": ["HS256"], "sharedSecret": secret, "jwks": None}
    authn = authenticator(load_auth_config(write_config(tmp_path, config)))
    token = jwt.encode(claims(), secret, algorithm="HS256")
    assert verify(authn, token).roles_by_org == {ACME: {"PROVIDER_ADMIN"}}
    with pytest.raises(auth.TokenRejectedError):
        verify(
            authn, jwt.encode(claims(), "another-secret-of-at-least-32-bytes", algorithm="HS256")
        )
