"""The one way in for a visitor's turn, whatever the door: the chat over HTTP and SSE, the
two front-end protocols, the WebSocket, and the lead form.

Its checks run once, in one order: the message's size and emptiness, the site key and
origin, the conversation's token, then the rate limits and quotas, then whether the server
is draining. So a request the server refuses for what it is (forged origin, someone
else's conversation) uses up no one's quota, and a message is counted against the
conversation it really continues, however the protocol names it.
"""

from typing import Any

from app.api.chat_input import checked_message
from app.api.deps import Services
from app.engine.runs import Run
from app.security.access import Caller, site_key_in


async def admit_visitor(
    services: Services,
    caller: Caller,
    message: str | None,
    conversation_id: str | None,
    metadata: dict[str, Any] | None,
    ip: str | None,
) -> str | None:
    """Every check of a visitor's turn; the message as it will be answered."""
    checked = (
        checked_message(message, services.settings.max_message_chars)
        if message is not None
        else None
    )
    services.security.check_site(caller, site_key_in(metadata))
    if conversation_id is not None:
        services.security.require_conversation(caller, conversation_id)
    site_key = caller.site_key or site_key_in(metadata)
    await services.limits.admit_message(ip, site_key, conversation_id)
    return checked


async def start_visitor_turn(
    services: Services,
    caller: Caller,
    message: str,
    conversation_id: str | None,
    metadata: dict[str, Any] | None,
    ip: str | None,
) -> Run:
    """Check the turn, then start it."""
    checked = await admit_visitor(services, caller, message, conversation_id, metadata, ip)
    assert checked is not None
    return await services.runs.submit(checked, conversation_id, metadata or {})
