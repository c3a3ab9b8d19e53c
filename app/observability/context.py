"""What a log line is about: the request, run and conversation being served.

The request-id middleware sets `request_id` for each HTTP request and socket; the run
manager sets `run_id` and `conversation_id` in each run's task (which also inherits the
request id of the request that started it). The log filter reads them.
"""

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
run_id: ContextVar[str | None] = ContextVar("run_id", default=None)
conversation_id: ContextVar[str | None] = ContextVar("conversation_id", default=None)


def bind_run(run: str, conversation: str) -> None:
    """Name the run (and its conversation) in the current task's log lines."""
    run_id.set(run)
    conversation_id.set(conversation)


def current() -> dict[str, str]:
    """The ids set in this context, by name."""
    values = {
        "request_id": request_id.get(),
        "run_id": run_id.get(),
        "conversation_id": conversation_id.get(),
    }
    return {name: value for name, value in values.items() if value is not None}
