"""What the engine's lower parts (memory, leads, tools) need of a run: whose it is, and a
way to emit its events. `Run` satisfies it; they never see the rest of the run."""

from typing import Any, Protocol

from app.events import Event


class Emit(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def conversation_id(self) -> str: ...

    async def emit(self, event_type: type[Event], **fields: Any) -> Event: ...
