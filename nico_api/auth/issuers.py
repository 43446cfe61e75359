"""The auth configuration: which identity providers' tokens the server trusts, and how their
claims become org memberships and roles."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from nico_api.config import InvalidInputError, document_problems

ROLES = ("PROVIDER_ADMIN", "TENANT_ADMIN")
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
SYMMETRIC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class AuthConfigError(InvalidInputError):
    """The auth configuration cannot be used; the server does not start with it."""


def _seconds(value: Any) -> Any:
    # Durations as in Go configs ("5s", "500ms", "1m") or plain seconds.
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("a duration such as 5s, 500ms or 1m")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0, le=300)]
Lifetime = Annotated[float, BeforeValidator(_seconds), Field(gt=0, le=86400)]
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
Text = Annotated[str, Field(min_length=1)]


class _Config(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, extra="forbid", frozen=True
    )


class ClaimMapping(_Config):
    """One way a token maps to an org and roles: a fixed org with fixed roles, a fixed org with
    roles from a claim, a service account of a fixed org, or org and roles both from claims."""

    org_name: Text | None = None
    org_display_name: Text | None = None
    roles: list[Text] | None = None
    roles_attribute: Text | None = None
    is_service_account: bool = False
    org_attribute: Text | None = None
    org_display_attribute: Text | None = None

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, roles: list[str] | None) -> list[str] | None:
        for role in roles or ():
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}: roles are {' and '.join(ROLES)}")
        return roles

    @model_validator(mode="after")
    def _one_kind(self) -> ClaimMapping:
        if self.org_attribute:
            if self.org_name or self.org_display_name or self.roles or self.is_service_account:
                raise ValueError(
                    "orgAttribute (org from the token) cannot be combined with orgName, "
                    "orgDisplayName, roles or isServiceAccount"
                )
            if not self.roles_attribute:
                raise ValueError("orgAttribute needs rolesAttribute")
        elif self.org_name:
            if self.org_display_attribute:
                raise ValueError("orgDisplayAttribute goes with orgAttribute, not orgName")
            given = [bool(self.roles), bool(self.roles_attribute), self.is_service_account]
            if sum(given) != 1:
                raise ValueError(
                    "orgName needs exactly one of roles, rolesAttribute or isServiceAccount"
                )
        else:
            raise ValueError("a claim mapping needs orgName or orgAttribute")
        return self

    @property
    def dynamic_org(self) -> bool:
        return self.org_attribute is not None

    def describe(self) -> str:
        if self.org_attribute:
            display = f", display name from {self.org_display_attribute!r}" * bool(
                self.org_display_attribute
            )
            return (
                f"org from claim {self.org_attribute!r}{display}, "
                f"roles from claim {self.roles_attribute!r}"
            )
        if self.is_service_account:
            return f"org {self.org_name!r} as a service account: {' and '.join(ROLES)}"
        if self.roles_attribute:
            return f"org {self.org_name!r}, roles from claim {self.roles_attribute!r}"
        return f"org {self.org_name!r}, roles {', '.join(self.roles or ())}"


class IssuerConfig(_Config):
    """An identity provider whose tokens are trusted."""

    name: Text
    issuer: Text = Field(description="the expected `iss` claim")
    jwks: Text | None = Field(default=None, description="JWKS URL (https) or file path")
    jwks_timeout: Seconds = 5.0
    # Plain http only to this machine, and only when asked for (a local test provider).
    jwks_allow_loopback_http: bool = False
    # How long a fetched key set is used: the provider's Cache-Control max-age, within these.
    jwks_min_lifetime: Lifetime = 60.0
    jwks_max_lifetime: Lifetime = 3600.0
    audiences: list[Text] = []
    scopes: list[Text] = []
    algorithms: list[str] = list(DEFAULT_ALGORITHMS)
    shared_secret: Text | None = Field(default=None, description="only for HS* algorithms")
    claim_mappings: Annotated[list[ClaimMapping], Field(min_length=1)]

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, algorithms: list[str]) -> list[str]:
        if not algorithms:
            raise ValueError("at least one algorithm")
        for algorithm in algorithms:
            if algorithm not in ASYMMETRIC_ALGORITHMS | SYMMETRIC_ALGORITHMS:
                raise ValueError(f"unknown algorithm {algorithm!r}")
        return algorithms

    @model_validator(mode="after")
    def _keys_for_algorithms(self) -> IssuerConfig:
        symmetric = SYMMETRIC_ALGORITHMS.intersection(self.algorithms)
        if symmetric and not self.shared_secret:
            raise ValueError(f"{', '.join(sorted(symmetric))} needs an explicit sharedSecret")
        if self.shared_secret and not symmetric:
            raise ValueError("sharedSecret is only used with HS256, HS384 or HS512")
        if ASYMMETRIC_ALGORITHMS.intersection(self.algorithms) and not self.jwks:
            raise ValueError("jwks (a key set URL or file) is required for these algorithms")
        if self.jwks and self.jwks.lower().startswith("http://"):
            # Keys fetched in clear could be forged by anyone on the path.
            loopback = (urlsplit(self.jwks).hostname or "") in LOOPBACK_HOSTS
            if not (loopback and self.jwks_allow_loopback_http):
                raise ValueError(
                    "jwks must be an https:// URL (plain http only to a loopback host, "
                    "with jwksAllowLoopbackHttp: true)"
                )
        if self.jwks_min_lifetime > self.jwks_max_lifetime:
            raise ValueError("jwksMinLifetime is longer than jwksMaxLifetime")
        return self


class AuthConfig(_Config):
    issuers: Annotated[list[IssuerConfig], Field(min_length=1)]
    leeway: Annotated[float, BeforeValidator(_seconds), Field(ge=0, le=300)] = 30.0

    def static_orgs(self) -> frozenset[str]:
        return frozenset(
            m.org_name for i in self.issuers for m in i.claim_mappings if m.org_name is not None
        )


def _check_across_issuers(config: AuthConfig) -> None:
    def where(index: int, field: str) -> str:
        return f"issuers[{index}] (name {config.issuers[index].name}) field '{field}'"

    names = Counter(issuer.name for issuer in config.issuers)
    urls = Counter(issuer.issuer for issuer in config.issuers)
    orgs: dict[str, str] = {}
    dynamic: list[str] = []
    for i, issuer in enumerate(config.issuers):
        if names[issuer.name] > 1:
            raise AuthConfigError(f"{where(i, 'name')}: issuer name {issuer.name!r} is repeated")
        if urls[issuer.issuer] > 1:
            raise AuthConfigError(f"{where(i, 'issuer')}: {issuer.issuer!r} is configured twice")
        for mapping in issuer.claim_mappings:
            if mapping.dynamic_org:
                dynamic.append(issuer.name)
                if len(dynamic) > 1:
                    raise AuthConfigError(
                        f"{where(i, 'claimMappings')}: only one mapping may take the org from "
                        f"the token (orgAttribute); issuers {dynamic[0]!r} and {issuer.name!r} "
                        "both do"
                    )
            elif mapping.org_name in orgs:
                raise AuthConfigError(
                    f"{where(i, 'claimMappings')}: org {mapping.org_name!r} is already mapped "
                    f"by issuer {orgs[mapping.org_name]!r}"
                )
            else:
                orgs[mapping.org_name] = issuer.name  # type: ignore[index]


def parse_auth_config(document: Any, source: str) -> AuthConfig:
    if not isinstance(document, dict):
        raise AuthConfigError(f"{source}: the top level must be a mapping with 'issuers'")
    try:
        config = AuthConfig.model_validate(document)
    except ValidationError as exc:
        raise AuthConfigError(
            f"{source}: {document_problems(exc, document, label='name')}"
        ) from None
    try:
        _check_across_issuers(config)
    except AuthConfigError as exc:
        raise AuthConfigError(f"{source}: {exc}") from None
    return config


def load_auth_config(path: Path) -> AuthConfig:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise AuthConfigError(f"{path}: cannot read: {exc}") from None
    return parse_auth_config(document, str(path))
