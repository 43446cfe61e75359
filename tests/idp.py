"""A stand-in identity provider for tests: real keys, real signed tokens, and a key set served
over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://idp.test/realms/nico"
AUDIENCE = "nico-api"


@dataclass(frozen=True)
class Key:
    kid: str
    private: Any
    algorithm: str

    @classmethod
    def rsa(cls, kid: str) -> Key:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")

    @classmethod
    def ec(cls, kid: str) -> Key:
        return cls(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")

    def jwk(self) -> dict[str, Any]:
        to_jwk = (
            RSAAlgorithm.to_jwk if self.algorithm.startswith(("RS", "PS")) else ECAlgorithm.to_jwk
        )
        return {**json.loads(to_jwk(self.private.public_key())), "kid": self.kid, "use": "sig"}

    def sign(self, claims: dict[str, Any], algorithm: str | None = None, **headers: Any) -> str:
        return jwt.encode(
            claims,
            self.private,
            algorithm=algorithm or self.algorithm,
            headers={"kid": self.kid, **headers},
        )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "exp": now + 600,
        "roles": ["PROVIDER_ADMIN"],
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


class _Handler(BaseHTTPRequestHandler):
    server: KeySetServer._HTTPServer  # type: ignore[name-defined]

    def do_GET(self) -> None:
        owner = self.server.owner
        owner.requests += 1
        time.sleep(owner.delay)
        body = json.dumps(owner.document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if owner.cache_control:
            self.send_header("Cache-Control", owner.cache_control)
        if owner.huge:
            # A document of `huge` bytes, written a chunk at a time, never held whole.
            if owner.declare_length:
                self.send_header("Content-Length", str(owner.huge))
            self.end_headers()
            chunk = b" " * 65536
            try:
                for _ in range(owner.huge // len(chunk)):
                    self.wfile.write(chunk)
                    owner.sent += len(chunk)
            except OSError:
                pass  # the client stopped reading
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if owner.drip:
            # One byte at a time, each after `drip` seconds: every read is quick, the whole slow.
            try:
                for byte in body:
                    time.sleep(owner.drip)
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            except OSError:
                pass
            return
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class KeySetServer:
    """Serves a JWKS document at /certs; can rotate keys, be slow, or go down."""

    class _HTTPServer(ThreadingHTTPServer):
        daemon_threads = True
        owner: KeySetServer

    def __init__(self, *keys: Key) -> None:
        self.requests = 0
        self.delay = 0.0
        self.drip = 0.0
        self.huge = 0
        self.declare_length = True
        self.sent = 0
        self.cache_control: str | None = None
        self.publish(*keys)
        self._httpd = self._HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/certs"

    def publish(self, *keys: Key) -> None:
        self.document = {"keys": [key.jwk() for key in keys]}

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
