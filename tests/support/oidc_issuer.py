"""A small, real OpenID Connect issuer on loopback for the integration tests: its own RSA key, a discovery
document, a JWKS, an authorize endpoint with a sign-in form, and a token endpoint that checks the client's
secret, the redirect URI and PKCE (S256). ``mode`` makes it misbehave on purpose: ``forged`` signs ID tokens with
a key it does not publish, ``expired`` issues them already expired, ``wrong_nonce`` answers another sign-in's nonce.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.loopback import LoopbackHttp


@dataclass
class Person:
    password: str
    claims: dict[str, Any]


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    username: str


@dataclass
class OidcIssuer:
    client_id: str = "sync-gateway"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    people: dict[str, Person] = field(default_factory=dict)
    mode: str = "normal"
    kid: str = "test-key-1"

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._codes: dict[str, _Code] = {}
        self._lock = threading.Lock()
        self._http = LoopbackHttp(_handler(self), "oidc-issuer")
        self.url = self._http.url

    def start(self) -> OidcIssuer:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def add_person(self, username: str, password: str, **claims: Any) -> None:
        self.people[username] = Person(password, {"preferred_username": username, **claims})

    # ------------------------------------------------------------------------------------------ protocol

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        }

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def mint(self, username: str, nonce: str, *, audience: str | None = None, **overrides: Any) -> str:
        """An ID token for ``username``; ``overrides`` replace claims (``None`` removes one)."""
        now = int(time.time())
        person = self.people[username]
        claims = {
            "iss": self.url,
            "sub": f"sub-{username}",
            "aud": audience or self.client_id,
            "iat": now - (7200 if self.mode == "expired" else 0),
            "exp": now - 3600 if self.mode == "expired" else now + 300,
            "nonce": "someone-else" if self.mode == "wrong_nonce" else nonce,
            **person.claims,
        }
        claims = {k: v for k, v in {**claims, **overrides}.items() if v is not None}
        key = self._other_key if self.mode == "forged" else self._key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})

    def authorize(self, query: dict[str, str], form: dict[str, str] | None) -> tuple[int, dict[str, str], str]:
        """GET shows the sign-in form; POST with the right password redirects back with a code."""
        params = form or query
        if params.get("client_id") != self.client_id or params.get("response_type") != "code":
            return 400, {}, "unknown client or response type"
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return 400, {}, "PKCE (S256) is required"
        if form is None:
            hidden = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in query.items()
            )
            page = (
                "<!doctype html><html lang='en'><head><title>Test issuer</title></head><body><h1>Test issuer</h1>"
                f"<form method='post' action='/authorize'>{hidden}"
                "<label for='u'>Issuer username</label><input id='u' name='username'>"
                "<label for='p'>Issuer password</label><input id='p' name='password' type='password'>"
                "<button type='submit'>Continue</button></form></body></html>"
            )
            return 200, {"Content-Type": "text/html; charset=utf-8"}, page
        person = self.people.get(form.get("username", ""))
        if person is None or not secrets.compare_digest(person.password, form.get("password", "")):
            return 401, {}, "wrong issuer password"
        code = secrets.token_urlsafe(16)
        with self._lock:
            self._codes[code] = _Code(
                self.client_id, form["redirect_uri"], form["code_challenge"], form.get("nonce", ""), form["username"]
            )
        location = form["redirect_uri"] + "?" + urlencode({"code": code, "state": form.get("state", "")})
        return 302, {"Location": location}, ""

    def token(self, auth_header: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        scheme, _, encoded = auth_header.partition(" ")
        try:
            client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return 401, {"error": "invalid_client"}
        if scheme.lower() != "basic" or client_id != self.client_id or secret != self.client_secret:
            return 401, {"error": "invalid_client"}
        with self._lock:
            issued = self._codes.pop(form.get("code", ""), None)  # one use only
        if issued is None or issued.redirect_uri != form.get("redirect_uri"):
            return 400, {"error": "invalid_grant"}
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        if base64.urlsafe_b64encode(digest).decode().rstrip("=") != issued.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verifier does not match"}
        return 200, {
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": self.mint(issued.username, issued.nonce),
        }


def _handler(issuer: OidcIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, headers: dict[str, str], body: str) -> None:
            data = body.encode()
            self.send_response(status)
            for name, value in {"Content-Type": "text/plain", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, {"Content-Type": "application/json"}, json.dumps(body))

        def _form(self) -> dict[str, str]:
            length = int(self.headers.get("Content-Length") or 0)
            parsed = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
            return {k: v[-1] for k, v in parsed.items()}

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            if parts.path == "/.well-known/openid-configuration":
                self._json(200, issuer.discovery())
            elif parts.path == "/jwks":
                self._json(200, issuer.jwks())
            elif parts.path == "/authorize":
                self._send(*issuer.authorize(query, None))
            else:
                self._send(404, {}, "not found")

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            if path == "/authorize":
                self._send(*issuer.authorize({}, self._form()))
            elif path == "/token":
                self._json(*issuer.token(self.headers.get("Authorization", ""), self._form()))
            else:
                self._send(404, {}, "not found")

    return Handler
