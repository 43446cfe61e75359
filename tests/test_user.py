"""Retrieve the current User: remembered on first call, updated when the claims change."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from nico_api.auth import authenticator as auth
from nico_api.auth.dev_issuer import DevIssuer
from nico_api.storage import models
from nico_api.storage.db import Storage
from tests.demo import ACME, ACME_SITE, GLOBEX, RUNNING_TASK, task_path

USER_PATH = f"/v2/org/{ACME}/nico/user/current"


def token(issuer: DevIssuer, **extra: Any) -> dict[str, str]:
    now = int(time.time())
    claims = {
        "iss": issuer.issuer,
        "aud": issuer.audience,
        "sub": "jane",
        "iat": now,
        "exp": now + 600,
        "org": ACME,
        "roles": ["TENANT_ADMIN"],
        **extra,
    }
    signed = jwt.encode(
        claims, issuer.private_key, algorithm="RS256", headers={"kid": issuer.key_id}
    )
    return {"Authorization": f"Bearer {signed}"}


def user_rows(storage: Storage) -> int:
    with storage.session() as session:
        return session.scalar(select(func.count()).select_from(models.User))


def test_first_call_remembers_the_user(
    storage: Storage, client: TestClient, issuer: DevIssuer
) -> None:
    headers = token(issuer, email="jane@acme.example", given_name="Jane", family_name="Doe")
    response = client.get(USER_PATH, headers=headers)
    assert response.status_code == 200, response.text
    user = response.json()
    assert user["id"] == str(uuid.uuid5(uuid.NAMESPACE_URL, "nico-dev#jane"))
    assert (user["email"], user["firstName"], user["lastName"]) == (
        "jane@acme.example",
        "Jane",
        "Doe",
    )
    assert user["created"] == user["updated"]
    assert user_rows(storage) == 1

    again = client.get(USER_PATH, headers=headers).json()
    assert again == user
    assert user_rows(storage) == 1


def test_changed_claims_update_the_user(
    storage: Storage, client: TestClient, issuer: DevIssuer
) -> None:
    first = client.get(USER_PATH, headers=token(issuer, email="jane@old.example")).json()
    time.sleep(0.01)
    second = client.get(
        USER_PATH, headers=token(issuer, email="jane@new.example", given_name="Jane")
    ).json()
    assert second["id"] == first["id"]
    assert second["email"] == "jane@new.example"
    assert second["firstName"] == "Jane"
    assert second["created"] == first["created"]
    assert second["updated"] > first["updated"]
    assert user_rows(storage) == 1


def test_missing_or_odd_claims_are_null(client: TestClient, issuer: DevIssuer) -> None:
    user = client.get(USER_PATH, headers=token(issuer, email=["x"], given_name=None)).json()
    assert (user["email"], user["firstName"], user["lastName"]) == (None, None, None)


def test_another_subject_is_another_user(
    storage: Storage, client: TestClient, issuer: DevIssuer
) -> None:
    jane = client.get(USER_PATH, headers=token(issuer)).json()
    john = client.get(USER_PATH, headers=token(issuer, sub="john")).json()
    assert jane["id"] != john["id"]
    assert user_rows(storage) == 2


def test_any_member_may_call_but_not_others(client: TestClient, issuer: DevIssuer) -> None:
    assert client.get(USER_PATH, headers=token(issuer, roles=[])).status_code == 200
    response = client.get(USER_PATH, headers=token(issuer, org=GLOBEX))
    assert response.status_code == 403
    assert response.json()["message"] == f"Failed to validate membership for org: {ACME}"
    anonymous = client.get(USER_PATH)
    assert anonymous.status_code == 401
    assert anonymous.json()["message"] == auth.MISSING_HEADER


@pytest.mark.parametrize("query", [{"verbose": "1"}])
def test_unknown_query_parameter(client: TestClient, issuer: DevIssuer, query: dict) -> None:
    response = client.get(USER_PATH, params=query, headers=token(issuer))
    assert response.status_code == 400
    assert "verbose" in response.json()["message"]


def test_the_task_path_writes_nothing(
    storage: Storage, client: TestClient, issuer: DevIssuer
) -> None:
    headers = token(issuer, roles=["PROVIDER_ADMIN"])
    response = client.get(task_path(RUNNING_TASK), params={"siteId": ACME_SITE}, headers=headers)
    assert response.status_code == 200
    assert user_rows(storage) == 0


def raw_token(issuer: DevIssuer, payload: str) -> dict[str, str]:
    """A token signed over this exact JSON text (which may hold escapes json.dumps never writes)."""
    signed = jwt.api_jws.encode(
        payload.encode(), issuer.private_key, algorithm="RS256", headers={"kid": issuer.key_id}
    )
    return {"Authorization": f"Bearer {signed}"}


def claims_text(issuer: DevIssuer, **fields: str) -> str:
    """The JSON text of a valid token's claims, with each field's value as raw JSON."""
    now = int(time.time())
    values = {
        "iss": f'"{issuer.issuer}"',
        "aud": f'"{issuer.audience}"',
        "sub": '"jane"',
        "exp": str(now + 600),
        "org": f'"{ACME}"',
        "roles": '["TENANT_ADMIN"]',
        **fields,
    }
    return "{" + ",".join(f'"{name}":{value}' for name, value in values.items()) + "}"


@pytest.mark.parametrize(
    "fields",
    [
        {"exp": '"9999999999"'},
        {"exp": "true"},
        {"sub": '"' + "j" * 1025 + '"'},
        {"sub": '"ja\\u0000ne"'},
        {"sub": '"ja\\ud800ne"'},
    ],
    ids=["exp-text", "exp-bool", "sub-too-long", "sub-nul", "sub-lone-surrogate"],
)
def test_malformed_claims_are_an_invalid_token(
    storage: Storage, client: TestClient, issuer: DevIssuer, fields: dict[str, str]
) -> None:
    response = client.get(USER_PATH, headers=raw_token(issuer, claims_text(issuer, **fields)))
    assert response.status_code == 401, response.text
    assert response.json() == {
        "source": "nico",
        "message": auth.INVALID_TOKEN,
        "data": None,
    }
    assert user_rows(storage) == 0


def test_profile_claims_that_cannot_be_stored_read_as_absent(
    client: TestClient, issuer: DevIssuer
) -> None:
    text = claims_text(
        issuer,
        email='"' + "e" * 1025 + '"',
        given_name='"Ja\\u0000ne"',
        family_name='"D\\udc00oe"',
    )
    response = client.get(USER_PATH, headers=raw_token(issuer, text))
    assert response.status_code == 200, response.text
    user = response.json()
    assert (user["email"], user["firstName"], user["lastName"]) == (None, None, None)
