"""Google service-account credentials and the signed JWT that buys an access token
(OAuth 2.0 JWT bearer grant, RFC 7523), signed with python-jose."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from jose import jwt
from pydantic import BaseModel, ConfigDict, SecretStr

CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600  # Google accepts at most one hour
REFRESH_MARGIN = 60.0  # renew a minute early so a token never expires mid-request


class ServiceAccount(BaseModel):
    """The fields of a service-account key file that signing needs; the rest are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    client_email: str
    private_key: SecretStr
    token_uri: str = "https://oauth2.googleapis.com/token"
    private_key_id: str | None = None

    @classmethod
    def load(cls, value: str) -> "ServiceAccount":
        """From the key file's JSON text, or from a path to the key file."""
        text = value.strip()
        if not text.startswith("{"):
            text = Path(text).expanduser().read_text(encoding="utf-8")
        return cls.model_validate(json.loads(text))


def signed_assertion(
    account: ServiceAccount, *, now: int, scope: str = CALENDAR_SCOPE, subject: str | None = None
) -> str:
    """An RS256 JWT for the token endpoint; `subject` impersonates a Workspace user
    (domain-wide delegation), which is what lets a service account invite attendees."""
    claims: dict[str, str | int] = {
        "iss": account.client_email,
        "scope": scope,
        "aud": account.token_uri,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    }
    if subject:
        claims["sub"] = subject
    headers = {"kid": account.private_key_id} if account.private_key_id else None
    return jwt.encode(
        claims, account.private_key.get_secret_value(), algorithm="RS256", headers=headers
    )


class AccessToken:
    """The current access token, renewed shortly before it expires; concurrent callers wait for
    one renewal instead of each buying a token."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._value: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def clear(self) -> None:
        self._value = None

    async def get(self, fetch: Callable[[], Awaitable[tuple[str, float]]]) -> str:
        """`fetch` returns (token, lifetime in seconds)."""
        async with self._lock:
            now = self._clock()
            if self._value is None or now >= self._expires - REFRESH_MARGIN:
                self._value, lifetime = await fetch()
                self._expires = now + lifetime
            return self._value
