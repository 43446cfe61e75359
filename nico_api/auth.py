"""Who the caller is (bearer JWT) and whether they may act on an org."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from connexion.security import BearerSecurityHandler
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nico_api.config import Settings
from nico_api.errors import NICoError

MISSING_HEADER = "Request is missing authorization header"
BAD_HEADER_FORMAT = "Invalid Authorization header format"
INVALID_TOKEN = "Invalid authorization token in request"

# Production's two roles; legacy tokens carry them behind a one-word prefix such as NICO_.
_ROLE = re.compile(r"^(?:[A-Z0-9]+_)?(PROVIDER_ADMIN|TENANT_ADMIN)$")
PROVIDER_ADMIN = "PROVIDER_ADMIN"


def base_role(role: str) -> str | None:
    """The production role a token's role stands for, or None when it is not one."""
    match = _ROLE.match(role)
    return match.group(1) if match else None


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the orgs it belongs to and its roles in each."""

    subject: str
    issuer: str
    roles_by_org: Mapping[str, frozenset[str]]

    def require_provider_admin(self, org: str) -> None:
        roles = self.roles_by_org.get(org)
        if roles is None:
            raise NICoError(403, f"Failed to validate membership for org: {org}")
        if PROVIDER_ADMIN not in {base_role(role) for role in roles}:
            raise NICoError(403, "User does not have Provider Admin role with org")


class DevIssuer:
    """The local development issuer: an RSA key generated on first use in the instance folder.

    Its tokens carry the caller's org in `org` and roles in `roles`.
    """

    algorithm = "RS256"

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.dev_issuer
        self.audience = settings.dev_audience
        self.private_key = _load_or_create_key(settings.dev_key_path)
        public_der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = base64.urlsafe_b64encode(hashlib.sha256(public_der).digest()[:12]).decode()

    def issue(self, org: str, roles: Iterable[str], ttl_seconds: int = 3600) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": f"dev-user@{org}",
            "jti": str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "org": org,
            "roles": list(roles),
        }
        return jwt.encode(
            claims, self.private_key, algorithm=self.algorithm, headers={"kid": self.key_id}
        )

    def verify(self, token: str) -> Caller:
        claims = jwt.decode(
            token,
            self.private_key.public_key(),
            algorithms=[self.algorithm],
            audience=self.audience,
            issuer=self.issuer,
            leeway=30,
            options={"require": ["exp", "iss", "sub"]},
        )
        org, roles = claims.get("org"), claims.get("roles", [])
        if not isinstance(org, str) or not isinstance(roles, list):
            return Caller(str(claims["sub"]), self.issuer, {})
        kept = frozenset(r for r in roles if isinstance(r, str) and base_role(r))
        return Caller(str(claims["sub"]), self.issuer, {org: kept})


def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        try:
            # Two processes may race on first use: the first key linked in wins.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} does not hold an RSA private key")
    return key


_issuer: DevIssuer | None = None


def configure(settings: Settings) -> DevIssuer:
    global _issuer
    _issuer = DevIssuer(settings)
    return _issuer


def authenticate(authorization: str | None) -> dict[str, Any]:
    """Contract rows 1-3: the Authorization header must carry a verifiable bearer token."""
    if not authorization:
        raise NICoError(401, MISSING_HEADER)
    parts = authorization.split(" ")
    if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1]:
        raise NICoError(401, BAD_HEADER_FORMAT)
    if _issuer is None:
        raise RuntimeError("nico_api.auth.configure() has not been called")
    try:
        caller = _issuer.verify(parts[1])
    except jwt.PyJWTError as exc:
        raise NICoError(401, INVALID_TOKEN) from exc
    return {"sub": caller.subject, "caller": caller}


class BearerAuthentication(BearerSecurityHandler):
    """Connexion's bearer scheme, given the raw header so that every answer is the contract's."""

    def get_fn(self, security_scheme: dict[str, Any], required_scopes: list[str]) -> Any:
        return lambda request: authenticate(request.headers.get("Authorization"))
