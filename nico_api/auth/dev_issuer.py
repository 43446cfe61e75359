"""The local development issuer: an RSA key made on first use in the instance folder, its public
key set beside it, and the tokens `nico-api token` prints. Production issuers never use it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from nico_api.auth.issuers import IssuerConfig
from nico_api.config import Settings


class DevIssuer:
    algorithm = "RS256"

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.dev_issuer
        self.audience = settings.dev_audience
        self.jwks_path = settings.instance_dir / "dev-issuer-jwks.json"
        self.private_key = _load_or_create_key(settings.dev_key_path)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        self.key_id = _thumbprint(jwk)
        self._public_jwks = {
            "keys": [{**jwk, "kid": self.key_id, "use": "sig", "alg": self.algorithm}]
        }

    def write_jwks(self) -> Path:
        """Publish the public key set where the issuer's configuration points."""
        _write_atomically(self.jwks_path, json.dumps(self._public_jwks, indent=2).encode(), 0o644)
        return self.jwks_path

    def config(self) -> IssuerConfig:
        return IssuerConfig.model_validate(
            {
                "name": "development",
                "issuer": self.issuer,
                "jwks": str(self.jwks_path),
                "audiences": [self.audience],
                "algorithms": [self.algorithm],
                "claimMappings": [
                    {
                        "orgAttribute": "org",
                        "orgDisplayAttribute": "org_display_name",
                        "rolesAttribute": "roles",
                    }
                ],
            }
        )

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
            "org_display_name": org,
            "roles": list(roles),
        }
        return jwt.encode(
            claims, self.private_key, algorithm=self.algorithm, headers={"kid": self.key_id}
        )


def _thumbprint(jwk: dict[str, str]) -> str:
    # RFC 7638: the SHA-256 of the required members, in lexicographic order.
    members = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    digest = hashlib.sha256(members.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


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
