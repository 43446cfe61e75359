"""Who the caller is (a bearer JWT from a trusted issuer) and whether they may act on an org."""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from nico_api.auth.dev_issuer import DevIssuer
from nico_api.auth.issuers import ROLES, AuthConfig, ClaimMapping, IssuerConfig, load_auth_config
from nico_api.auth.jwks import KeySet, KeySetUnavailableError
from nico_api.config import Settings, storable
from nico_api.wire.errors import RETRY_AFTER_SECONDS, NICoError

log = logging.getLogger(__name__)

MISSING_HEADER = "Request is missing authorization header"
BAD_HEADER_FORMAT = "Invalid Authorization header format"
INVALID_TOKEN = "Invalid authorization token in request"
MISSING_SCOPES = "Authorization token does not have the required scopes"
KEYS_UNAVAILABLE = "Unable to verify authorization token: issuer keys are unavailable"

PROVIDER_ADMIN, TENANT_ADMIN = ROLES
SCOPE_CLAIMS = ("scope", "scopes", "scp")
CACHE_SECONDS = 300
# Real tokens are a few KB; a larger one is refused before any parsing.
MAX_TOKEN_BYTES = 16 * 1024
MAX_CLAIM_TEXT = 1024
PROFILE_CLAIMS = {"email": "email", "first_name": "given_name", "last_name": "family_name"}
_BEARER = re.compile(r"(?i:bearer) +([^ ]+)")
_ROLE = re.compile(rf"^(?:[A-Z0-9]+_)?({'|'.join(ROLES)})$")


def storable_text(value: Any) -> bool:
    """Text that every backend stores as it is, of at most 1,024 characters (the user columns'
    bound)."""
    return isinstance(value, str) and len(value) <= MAX_CLAIM_TEXT and storable(value)


def base_role(role: str) -> str | None:
    """The production role a token's role stands for: bare, or behind a one-word prefix such as
    the legacy NICO_ or FORGE_; None when it is neither."""
    match = _ROLE.fullmatch(role)
    return match.group(1) if match else None


class TokenRejectedError(NICoError):
    """A refused token: the client sees the contract's message, logs and `auth whoami` the why."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
        super().__init__(status, message, headers=headers)
        self.reason = reason


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the orgs it belongs to and its roles in each."""

    issuer: str
    subject: str
    roles_by_org: Mapping[str, frozenset[str]]
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def user_id(self) -> uuid.UUID:
        # Stable for the same issuer and subject, whichever server process answers.
        return uuid.uuid5(uuid.NAMESPACE_URL, f"{self.issuer}#{self.subject}")

    def profile(self) -> dict[str, str | None]:
        """The standard OIDC claims about the person, where the token carries them as text that
        can be stored; anything else reads as absent."""
        return {
            column: value if storable_text(value := self.claims.get(name)) else None
            for column, name in PROFILE_CLAIMS.items()
        }

    def require_member(self, org: str) -> frozenset[str]:
        roles = self.roles_by_org.get(org)
        if roles is None:
            raise NICoError(403, f"Failed to validate membership for org: {org}")
        return roles

    def require_provider_admin(self, org: str) -> None:
        if PROVIDER_ADMIN not in {base_role(role) for role in self.require_member(org)}:
            raise NICoError(403, "User does not have Provider Admin role with org")


def bearer_token(authorization: str | None) -> str:
    """Contract rows 1-2: the header must be `Bearer <token>`, the scheme in any case and any
    run of spaces after it."""
    if not authorization:
        raise NICoError(401, MISSING_HEADER)
    match = _BEARER.fullmatch(authorization)
    if match is None:
        raise NICoError(401, BAD_HEADER_FORMAT)
    return match.group(1)


class _TrustedIssuer:
    def __init__(
        self,
        config: IssuerConfig,
        clock: Callable[[], float],
        on_key_set_fetch: Callable[[str, bool], None] | None,
    ) -> None:
        self.config = config
        self.key_set = (
            KeySet(
                config.jwks,
                config.jwks_timeout,
                clock=clock,
                lifetime=(config.jwks_min_lifetime, config.jwks_max_lifetime),
                on_fetch=(
                    functools.partial(on_key_set_fetch, config.name) if on_key_set_fetch else None
                ),
            )
            if config.jwks
            else None
        )

    async def key_for(self, header: dict[str, Any], algorithm: str) -> Any:
        if algorithm.startswith("HS"):
            return self.config.shared_secret
        kid = header.get("kid")
        if self.key_set is None or not (kid is None or isinstance(kid, str)):
            raise _invalid(f"no key set for algorithm {algorithm}")
        try:
            signing_key = await self.key_set.key(kid)
        except KeySetUnavailableError:
            raise TokenRejectedError(
                503, KEYS_UNAVAILABLE, f"key set of issuer {self.config.name!r} unavailable"
            ) from None
        if signing_key is None:
            raise _invalid(f"key {kid!r} is not in the key set of issuer {self.config.name!r}")
        if signing_key.algorithm and signing_key.algorithm != algorithm:
            raise _invalid(
                f"key {kid!r} is for {signing_key.algorithm}, the token says {algorithm}"
            )
        return signing_key.key


def _invalid(reason: str) -> TokenRejectedError:
    return TokenRejectedError(401, INVALID_TOKEN, reason)


class Authenticator:
    """Verifies tokens against the configured issuers and maps their claims to orgs and roles."""

    def __init__(
        self,
        config: AuthConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = 10_000,
        on_key_set_fetch: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.config = config
        self._issuers = {
            i.issuer: _TrustedIssuer(i, clock, on_key_set_fetch) for i in config.issuers
        }
        self._static_orgs = config.static_orgs()
        # Verified tokens, each until its own expiry: a client sends the same token many times.
        self._verified: OrderedDict[str, tuple[float, Caller]] = OrderedDict()
        self._cache_size = cache_size

    async def authenticate(self, authorization: str | None) -> Caller:
        """The caller of a request with this Authorization header, or the contract's error."""
        try:
            return await self.verify(bearer_token(authorization))
        except TokenRejectedError as exc:
            log.info("token rejected (%d): %s", exc.status_code, exc.reason)
            raise

    async def verify(self, token: str) -> Caller:
        cached = self._verified.get(token)
        if cached is not None:
            expires, caller = cached
            if time.time() < expires:
                return caller
            del self._verified[token]
        caller = await self._verify(token)
        if self._cache_size:
            # Kept until the token expires, and at most a few minutes (a removed key's tokens
            # stop working soon after).
            latest = time.time() + CACHE_SECONDS
            exp = caller.claims["exp"]
            self._verified[token] = (latest if exp > latest else float(exp), caller)
            if len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return caller

    async def _verify(self, token: str) -> Caller:
        if len(token) > MAX_TOKEN_BYTES:
            raise _invalid(f"token of {len(token)} bytes is over {MAX_TOKEN_BYTES}")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _invalid(f"malformed token: {exc}") from None
        claimed_issuer = unverified.get("iss")
        trusted = self._issuers.get(claimed_issuer) if isinstance(claimed_issuer, str) else None
        if trusted is None:
            raise _invalid(f"issuer {claimed_issuer!r} is not trusted")
        algorithm = header.get("alg")
        # The issuer's allow-list decides the algorithm; the token header only names one of it.
        if algorithm not in trusted.config.algorithms:
            raise _invalid(
                f"algorithm {algorithm!r} is not allowed for issuer {trusted.config.name!r}"
            )
        key = await trusted.key_for(header, algorithm)
        audiences = trusted.config.audiences
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=trusted.config.issuer,
                audience=audiences or None,
                leeway=self.config.leeway,
                options={"require": ["exp", "iss", "sub"], "verify_aud": bool(audiences)},
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise _invalid(f"{exc.__class__.__name__}: {exc}") from None
        # NumericDate claims are numbers (RFC 7519); a subject names the user it is stored as.
        for name in ("exp", "nbf", "iat"):
            if name in claims and not _is_number(claims[name]):
                raise _invalid(f"claim {name!r} is not a number")
        if not storable_text(claims["sub"]):
            raise _invalid("claim 'sub' is not text of at most 1,024 storable characters")
        missing = set(trusted.config.scopes) - _scopes(claims)
        if missing:
            raise TokenRejectedError(403, MISSING_SCOPES, f"missing scopes {sorted(missing)}")
        return Caller(
            issuer=trusted.config.issuer,
            subject=str(claims["sub"]),
            roles_by_org=self._memberships(trusted.config, claims),
            claims=claims,
        )

    def _memberships(
        self, issuer: IssuerConfig, claims: Mapping[str, Any]
    ) -> dict[str, frozenset[str]]:
        memberships: dict[str, frozenset[str]] = {}
        for mapping in issuer.claim_mappings:
            org = _org(mapping, claims)
            # An org taken from a token can never be one the configuration names.
            if not org or (mapping.dynamic_org and org in self._static_orgs):
                continue
            memberships[org] = memberships.get(org, frozenset()) | _roles(mapping, claims)
        return memberships


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _org(mapping: ClaimMapping, claims: Mapping[str, Any]) -> str | None:
    if mapping.org_attribute is None:
        return mapping.org_name
    org = claim(claims, mapping.org_attribute)
    return org if isinstance(org, str) else None


def _roles(mapping: ClaimMapping, claims: Mapping[str, Any]) -> frozenset[str]:
    if mapping.is_service_account:
        return frozenset(ROLES)
    if mapping.roles_attribute is None:
        return frozenset(mapping.roles or ())
    value = claim(claims, mapping.roles_attribute)
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list):
        return frozenset()
    # Only the production roles (and their legacy prefixed forms) are kept.
    return frozenset(r for r in value if isinstance(r, str) and base_role(r))


def claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name, or by dotted path into nested objects (`realm_access.roles`)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _scopes(claims: Mapping[str, Any]) -> set[str]:
    granted: set[str] = set()
    for name in SCOPE_CLAIMS:
        value = claims.get(name)
        if isinstance(value, str):
            granted.update(value.split())
        elif isinstance(value, list):
            granted.update(v for v in value if isinstance(v, str))
    return granted


def auth_config_for(settings: Settings, dev_issuer: DevIssuer | None = None) -> AuthConfig:
    """The configured issuers, or, with no configuration file, the development issuer alone."""
    if settings.auth_config is not None:
        return load_auth_config(settings.auth_config)
    log.warning(
        "NICO_AUTH_CONFIG is not set: trusting the local development issuer only, whose tokens "
        "name any org; configure real issuers for anything but development"
    )
    dev = dev_issuer or DevIssuer(settings)
    dev.write_jwks()
    return AuthConfig(issuers=[dev.config()])
