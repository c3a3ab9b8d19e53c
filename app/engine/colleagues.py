"""Agents messaging each other: a `request`, `notification` or `response` from one agent
to a colleague, kept with the conversation and shown on the live view. A colleague seated
in the run reads it at its next step; one that is not reads it when it next takes part
(the hub delivers what is waiting when a run seats it)."""

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

from agentscope.message import Msg

from app.engine.notes import hint
from app.events import AgentMessageSent
from app.store import Store
from app.store.models import AgentMessage, AgentMessageKind


class Hears(Protocol):
    """The run's hub, as far as a message between agents needs it."""

    def __contains__(self, name: str) -> bool: ...

    def tell(self, name: str, msg: Msg) -> None: ...


def note_of(message: AgentMessage) -> Msg:
    """How the receiver hears the message."""
    return hint(
        f"{message.kind.capitalize()} from your colleague {message.from_agent}: {message.content}"
    )


async def send(
    store: Store,
    announce: Callable[[AgentMessageSent], Awaitable[None]],
    conversation_id: str,
    from_agent: str,
    to_agent: str,
    kind: AgentMessageKind,
    content: str,
    hub: Hears | None = None,
) -> AgentMessage:
    """Keep the message, hand it to the receiver if it sits in the running turn's `hub`
    (else it waits for the receiver's next turn), and announce it to the live view."""
    seated = hub is not None and to_agent in hub
    message = AgentMessage(
        id=uuid.uuid4().hex,
        conversation_id=conversation_id,
        from_agent=from_agent,
        to_agent=to_agent,
        kind=kind,
        content=content,
        delivered=seated,
        created_at=time.time(),
    )
    await store.add_agent_message(message)
    if hub is not None and seated:
        hub.tell(to_agent, note_of(message))
    await announce(AgentMessageSent(**message.model_dump()))
    return message
