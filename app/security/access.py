"""Who is calling the chat: an operator, or a visitor with their conversations' tokens.

Operators may use any conversation, and are not held to the site keys. A visitor may
start a conversation from a registered site (when sites are registered) and use it -
continue it, read or erase its history, follow or stop its runs - with its token only.
"""

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import httpx

from app.config import Settings
from app.errors import ApiError
from app.security.operators import Operator, OperatorAuth
from app.security.sites import SiteKeys
from app.security.visitors import VisitorTokens, load_secret

if TYPE_CHECKING:
    pass

TOKEN_HEADER = "X-Conversation-Token"  # named in the 401 that asks for it


@dataclass(frozen=True)
class Caller:
    """What a chat request presents: operator credentials, conversation tokens, site."""

    operator: Operator | None = None
    tokens: tuple[str, ...] = ()
    site_key: str | None = None
    origin: str | None = None
    granted: frozenset[str] = field(default_factory=frozenset)

    def with_tokens(self, *tokens: str | None) -> "Caller":
        return replace(self, tokens=self.tokens + tuple(t for t in tokens if t))

    def grant(self, conversation_id: str) -> "Caller":
        """The caller, also allowed the conversation (a socket that proved it once)."""
        return replace(self, granted=self.granted | {conversation_id})


class Security:
    """Operators, registered sites and conversation tokens, built once at start."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self.operators = OperatorAuth(settings, http)
        self.sites = SiteKeys.from_settings(settings)
        self.visitors = VisitorTokens(load_secret(settings))

    def check_site(self, caller: Caller, site_key: str | None = None) -> None:
        """403 unless an operator calls, or the site may start turns from its origin."""
        if caller.operator is None:
            self.sites.check(caller.site_key or site_key, caller.origin)

    def require_conversation(self, caller: Caller, conversation_id: str) -> None:
        """Nothing if the caller may use the conversation; else 401 / 403."""
        if caller.operator is not None or conversation_id in caller.granted:
            return
        if not caller.tokens:
            raise ApiError(
                401,
                "missing_conversation_token",
                f"This conversation needs its conversation token ({TOKEN_HEADER} header or "
                "`?conversation_token=`), as handed out with its first reply.",
            )
        if not any(self.visitors.valid(token, conversation_id) for token in caller.tokens):
            raise ApiError(
                403,
                "invalid_conversation_token",
                "The conversation token is not this conversation's.",
            )

    def token_for(self, conversation_id: str) -> str:
        return self.visitors.issue(conversation_id)


def site_key_in(metadata: Any) -> str | None:
    """The `site_key` of a chat body's metadata (what the widget sends)."""
    value = metadata.get("site_key") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else None
