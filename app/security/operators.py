"""Operators: who may read leads, logs and conversations and steer workflows.

An operator sends `Authorization: Bearer <JWT>`, signed HS256 with JWT_SECRET (a
Supabase project's JWT secret, so tokens Supabase issues are accepted too) or RS256 /
ES256 with a key published at JWKS_URL. The `role` claim must be `operator` or
`service_role`; `exp` is required, `nbf` is checked, and so is `aud` when JWT_AUDIENCE
is set. With neither JWT_SECRET nor JWKS_URL, only clients on loopback are operators.
"""

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any, Literal

import httpx
from jose import jwt
from jose.exceptions import ExpiredSignatureError, JWTClaimsError, JWTError

from app.config import Settings
from app.errors import ApiError

log = logging.getLogger(__name__)

OPERATOR_ROLES = ("operator", "service_role")
ASYMMETRIC = {"RS256": "RSA", "ES256": "EC"}  # algorithm -> the JWK key type it needs
LEEWAY_SECONDS = 10  # clock skew allowed on exp and nbf
JWKS_TTL_SECONDS = 600.0
JWKS_RETRY_SECONDS = 30.0  # an unknown kid refetches the keys at most this often
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")

AuthMode = Literal["jwt", "loopback_only"]


@dataclass(frozen=True)
class Operator:
    """A caller allowed on the operator endpoints, and how it proved it."""

    via: Literal["jwt", "loopback"]
    role: str
    subject: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


def invalid_token(message: str) -> ApiError:
    return ApiError(401, "invalid_token", message, headers={"WWW-Authenticate": "Bearer"})


# Loopback clients


def is_loopback_address(host: str | None) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped IPv6 form of them."""
    try:
        address = ip_address((host or "").strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _forwarded_hosts(headers: Mapping[str, str]) -> list[str]:
    """Every client address a proxy header names (port and brackets removed)."""
    hosts: list[str] = []
    for name in FORWARDING_HEADERS:
        getlist = getattr(headers, "getlist", None)
        values = getlist(name) if getlist else [v for k, v in headers.items() if k.lower() == name]
        for value in values:
            if name == "forwarded":
                hosts += [m.group(1) for m in re.finditer(r'for="?([^;,"]*)"?', value, re.I)]
            else:
                hosts += [part.strip() for part in value.split(",")]
    cleaned = []
    for host in hosts:
        if host.startswith("["):
            host = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        cleaned.append(host)
    return cleaned


def client_is_loopback(host: str | None, headers: Mapping[str, str]) -> bool:
    """Whether the caller is on this machine: a loopback peer, and no proxy header that
    names another address (a reverse proxy on this machine relays remote visitors from
    127.0.0.1)."""
    return is_loopback_address(host) and all(
        is_loopback_address(h) for h in _forwarded_hosts(headers)
    )


# Signing keys


class JwksCache:
    """The keys published at JWKS_URL, fetched with the shared HTTP client and kept for
    JWKS_TTL_SECONDS; a token naming an unknown key refetches them (key rotation)."""

    def __init__(self, url: str, http: httpx.AsyncClient, ttl: float = JWKS_TTL_SECONDS) -> None:
        self.url = url
        self.http = http
        self.ttl = ttl
        self.keys: list[dict[str, Any]] = []
        self.fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None, alg: str) -> dict[str, Any] | None:
        if time.monotonic() - self.fetched_at > self.ttl:
            await self.refresh()
        found = self._find(kid, alg)
        if found is None and time.monotonic() - self.fetched_at > JWKS_RETRY_SECONDS:
            await self.refresh()
            found = self._find(kid, alg)
        return found

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self.fetched_at < 1.0:
                return  # another request fetched them meanwhile
            try:
                response = await self.http.get(self.url, timeout=5.0)
                response.raise_for_status()
                keys = response.json()["keys"]
                if not isinstance(keys, list):
                    raise TypeError("'keys' is not a list")
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                if not self.keys:
                    raise ApiError(
                        503,
                        "auth_unavailable",
                        f"The signing keys at JWKS_URL could not be fetched ({exc}); "
                        "try again shortly.",
                    ) from None
                log.warning("JWKS refresh from %s failed (%s); keeping the old keys", self.url, exc)
                self.fetched_at = time.monotonic() - self.ttl + JWKS_RETRY_SECONDS
                return
            self.keys = [k for k in keys if isinstance(k, dict)]
            self.fetched_at = time.monotonic()

    def _find(self, kid: str | None, alg: str) -> dict[str, Any] | None:
        for key in self.keys:
            if kid is not None and key.get("kid") != kid:
                continue
            if key.get("kty") != ASYMMETRIC[alg] or key.get("alg", alg) != alg:
                continue
            if key.get("use", "sig") != "sig":
                continue
            return key
        return None


# Verifying


_CLAIM_MESSAGES = {
    'missing required key "exp"': "The token has no expiry (exp); operator tokens must expire.",
    "not yet valid": "The token is not valid yet (nbf is in the future).",
    "Issued At": "The token's issued-at time (iat) is not a number.",
    "Signature verification failed": "The token's signature does not match: "
    "it was signed with another secret or key.",
}


class OperatorAuth:
    """Decides whether a caller is an operator."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self.secret = settings.jwt_secret or None
        self.audience = settings.jwt_audience or None
        self.jwks = None
        if settings.jwks_url:
            self.jwks = JwksCache(settings.jwks_url, http or httpx.AsyncClient())

    @property
    def mode(self) -> AuthMode:
        return "jwt" if self.secret or self.jwks else "loopback_only"

    async def authenticate(
        self, token: str | None, client_host: str | None, headers: Mapping[str, str]
    ) -> Operator | None:
        """The operator behind a request, None for anyone else; a token that is
        presented must be valid (else 401 / 403)."""
        if self.mode == "loopback_only" and client_is_loopback(client_host, headers):
            return Operator(via="loopback", role="operator")
        if token:
            return await self.verify(token)
        return None

    def missing(self) -> ApiError:
        if self.mode == "jwt":
            message = (
                "This endpoint is for operators: send 'Authorization: Bearer <token>' "
                "(`python run.py token` issues one)."
            )
        else:
            message = (
                "This endpoint is for operators, and with neither JWT_SECRET nor JWKS_URL "
                "set only clients on this machine (loopback) are operators; set JWT_SECRET "
                "to admit others with a token."
            )
        return ApiError(401, "missing_token", message, headers={"WWW-Authenticate": "Bearer"})

    async def verify(self, token: str) -> Operator:
        if self.mode == "loopback_only":
            raise invalid_token(
                "Operator tokens are not accepted: the server has neither JWT_SECRET nor "
                "JWKS_URL, so only clients on its own machine are operators."
            )
        try:
            header = jwt.get_unverified_header(token)
        except JWTError:
            raise invalid_token("The token is not a JWT (header.payload.signature).") from None
        alg = header.get("alg")
        key = await self._key_for(alg, header.get("kid"))
        options = {
            "require_exp": True,
            "verify_aud": self.audience is not None,
            "require_aud": self.audience is not None,
            "leeway": LEEWAY_SECONDS,
        }
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], audience=self.audience, options=options
            )
        except ExpiredSignatureError:
            raise invalid_token("The token has expired (exp); issue a new one.") from None
        except (JWTClaimsError, JWTError) as exc:
            raise invalid_token(self._describe(exc)) from None
        role = claims.get("role")
        if role not in OPERATOR_ROLES:
            raise ApiError(
                403,
                "forbidden_role",
                f"The token's role is {str(role)[:40]!r}; operator endpoints need role "
                "'operator' or 'service_role'.",
            )
        subject = claims.get("sub")
        return Operator(
            via="jwt",
            role=role,
            subject=subject if isinstance(subject, str) else None,
            claims=claims,
        )

    async def _key_for(self, alg: Any, kid: Any) -> Any:
        if alg == "HS256":
            if self.secret is None:
                raise invalid_token("HS256 tokens are not accepted: JWT_SECRET is not set.")
            return self.secret
        if alg in ASYMMETRIC:
            if self.jwks is None:
                raise invalid_token(f"{alg} tokens are not accepted: JWKS_URL is not set.")
            key = await self.jwks.key(kid if isinstance(kid, str) else None, alg)
            if key is None:
                raise invalid_token(f"No {alg} key {kid!r} is published at JWKS_URL.")
            return key
        raise invalid_token(
            f"The token's algorithm {str(alg)[:20]!r} is not accepted (HS256, RS256, ES256)."
        )

    def _describe(self, exc: Exception) -> str:
        text = str(exc)
        if "audience" in text.lower() or '"aud"' in text:
            return f"The token's audience (aud) is not {self.audience!r}."
        for needle, message in _CLAIM_MESSAGES.items():
            if needle in text:
                return message
        return f"The token is not valid: {text}"


def issue_token(
    secret: str,
    role: str = "operator",
    minutes: float = 60,
    subject: str = "operator",
    audience: str | None = None,
) -> str:
    """An HS256 operator token, as `python run.py token` prints it."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "role": role,
        "iat": now,
        "nbf": now,
        "exp": now + int(minutes * 60),
        "iss": "parley",
    }
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
