"""A visitor's turns, whatever the door (chat over HTTP and SSE, the front-end protocols,
the WebSocket, the lead form): start one, follow it, stop it.

The checks of a turn run once, in one order: the message's size and emptiness, the site
key and origin, the conversation's token, then the rate limits and quotas. So a request
the server refuses for what it is (forged origin, someone else's conversation) uses up no
one's quota, and a message is counted against the conversation it really continues,
however the protocol names it.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from app.engine.runs.run import Run
from app.errors import ApiError, RunNotFound
from app.events import AnyEvent, Event, MessageCompleted, RunFailed
from app.security.access import Caller, site_key_in
from app.service.conversations import lead_summary
from app.service.parts import Parts
from app.service.text_checks import checked_message

# How a failed turn answers a caller waiting for the whole reply (others: 502).
FAILURE_STATUS = {
    "llm_unavailable": 503,
    "llm_timeout": 504,
    "run_timeout": 504,
    "store_unavailable": 503,
    "bus_unavailable": 503,
}


class Started(Protocol):
    """A turn as the caller that started it sees it."""

    @property
    def id(self) -> str: ...

    @property
    def conversation_id(self) -> str: ...

    @property
    def status(self) -> str: ...


@dataclass
class TurnReply:
    """A finished turn: its replies (the last one is the answer) and the lead it left."""

    run: Run
    replies: list[MessageCompleted]
    lead: dict[str, Any] | None


class Turns:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    async def admit(
        self,
        caller: Caller,
        message: str | None,
        conversation_id: str | None,
        metadata: dict[str, Any] | None,
        ip: str | None,
    ) -> str | None:
        """Every check of a visitor's turn; the message as it will be answered."""
        settings, security = self.parts.settings, self.parts.security
        checked = (
            checked_message(message, settings.max_message_chars) if message is not None else None
        )
        security.check_site(caller, site_key_in(metadata))
        if conversation_id is not None:
            security.require_conversation(caller, conversation_id)
        site_key = caller.site_key or site_key_in(metadata)
        await self.parts.limits.admit_message(ip, site_key, conversation_id)
        return checked

    async def start(
        self,
        caller: Caller,
        message: str,
        conversation_id: str | None,
        metadata: dict[str, Any] | None,
        ip: str | None,
        hints: list[str] | None = None,
    ) -> Run:
        """Check the turn, then start it. Without a conversation id, the first of `hints`
        (ids a protocol may use for one) that names a conversation is continued."""
        if conversation_id is None:
            for hint in hints or []:
                if await self.parts.store.get_conversation(hint) is not None:
                    conversation_id = hint
                    break
        checked = await self.admit(caller, message, conversation_id, metadata, ip)
        assert checked is not None
        return await self.parts.runs.submit(checked, conversation_id, metadata or {})

    async def reply(self, run: Run) -> TurnReply:
        """Wait for the turn's end: its replies, or its failure as an ApiError."""
        replies: list[MessageCompleted] = []
        async for event in self.parts.runs.reader.follow(run.id):
            if isinstance(event, MessageCompleted):
                replies.append(event)
            elif isinstance(event, RunFailed):
                status = FAILURE_STATUS.get(event.error.code, 502)
                raise ApiError(status, event.error.code, event.error.message)
        lead = await self.parts.store.get_lead_for_conversation(run.conversation_id)
        return TurnReply(run=run, replies=replies, lead=lead_summary(lead))

    # Following and stopping

    async def conversation_of(self, run_id: str) -> str:
        """The conversation the run belongs to (RunNotFound if there is no such run)."""
        run = self.parts.runs.active.get(run_id)
        if run is not None:
            return run.conversation_id
        record = await self.parts.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        return record.conversation_id

    async def require_run(self, caller: Caller, run_id: str) -> str | None:
        """The run's conversation if a visitor may follow or stop the run (an operator
        may: None); else 401/403, or 404 for a visitor's unknown run."""
        if caller.operator is not None:
            return None
        conversation_id = await self.conversation_of(run_id)
        self.parts.security.require_conversation(caller, conversation_id)
        return conversation_id

    async def open_run(self, caller: Caller, run_id: str) -> str | None:
        """As `require_run`, and 404 for an operator's unknown run too."""
        if not await self.parts.runs.reader.run_exists(run_id):
            raise RunNotFound(run_id)
        return await self.require_run(caller, run_id)

    def follow(self, run_id: str, after_seq: int = 0) -> AsyncIterator[AnyEvent]:
        """Every event of the run after `after_seq`, to its terminal one."""
        return self.parts.runs.reader.follow(run_id, after_seq)

    def follow_batches(self, run_id: str, after_seq: int = 0) -> AsyncIterator[list[Event]]:
        """The same, in batches of the events ready together (a stream writes each at once)."""
        return self.parts.runs.reader.follow_batches(run_id, after_seq)

    async def stop(self, caller: Caller, run_id: str) -> str:
        """Stop the caller's running turn; its status afterwards."""
        await self.require_run(caller, run_id)
        return await self.parts.runs.stop(run_id)

    def token_for(self, conversation_id: str) -> str:
        """The token a visitor shows to continue the conversation."""
        return self.parts.security.token_for(conversation_id)
