"""The errors every floor may raise, with no dependencies of their own.

The HTTP and WebSocket edges (`app/api/errors.py`) turn each into the one error shape
`{"error": {"code", "message", "request_id"}}`; nothing below them knows about HTTP.
"""


class ApiError(Exception):
    """A refusal the caller must see as is: an HTTP status, a stable code, a message that
    says what to do (and headers such as `Retry-After`)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


class ConversationNotFound(LookupError):
    """No conversation (or workflow) has this id."""


class RunNotFound(LookupError):
    """No run has this id."""


class StoreUnavailable(Exception):
    """The store cannot be reached; the operation did not happen."""


class BusUnavailable(Exception):
    """The bus cannot be reached (e.g. Redis is down or does not answer): a turn can
    neither start nor be followed (the API answers 503 `bus_unavailable`)."""
