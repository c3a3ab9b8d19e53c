"""Agents messaging each other: a `request`, `notification` or `response` from one agent
to a colleague, kept with the conversation and shown on the live view. A colleague seated
in the run reads it at its next step; one that is not reads it when it next takes part
(the hub delivers what is waiting when a run seats it)."""

import time
import uuid
from typing import Protocol

from agentscope.message import Msg

from app.engine.emit import Emit
from app.engine.notes import hint
from app.events import AgentMessageSent
from app.store import Store
from app.store.models import AgentMessage, AgentMessageKind


class Hears(Protocol):
    """The run's hub, as far as a message between agents needs it."""

    def __contains__(self, name: str) -> bool: ...

    def tell(self, name: str, msg: Msg) -> None: ...


class Announces(Emit, Protocol):
    async def announce(self, notice: AgentMessageSent) -> None: ...


def note_of(message: AgentMessage) -> Msg:
    """How the receiver hears the message."""
    return hint(
        f"{message.kind.capitalize()} from your colleague {message.from_agent}: {message.content}"
    )


async def send(
    store: Store,
    run: Announces,
    hub: Hears,
    from_agent: str,
    to_agent: str,
    kind: AgentMessageKind,
    content: str,
) -> AgentMessage:
    """Keep the message, hand it to the receiver if it sits in this run, announce it."""
    seated = to_agent in hub
    message = AgentMessage(
        id=uuid.uuid4().hex,
        conversation_id=run.conversation_id,
        from_agent=from_agent,
        to_agent=to_agent,
        kind=kind,
        content=content,
        delivered=seated,
        created_at=time.time(),
    )
    await store.add_agent_message(message)
    if seated:
        hub.tell(to_agent, note_of(message))
    await run.announce(AgentMessageSent(**message.model_dump()))
    return message
