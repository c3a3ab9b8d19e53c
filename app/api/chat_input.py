"""What a visitor may send, checked the same way for HTTP and WebSocket."""

from typing import Any

from pydantic import ConfigDict, Field

from app.api.errors import ApiError
from app.api.text_checks import StorableInput, is_blank


class ChatRequest(StorableInput):
    """One visitor turn."""

    metadata_fields = ("metadata",)
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"message": "Hi, I need a new online shop"}]}
    )

    message: str = Field(description="The visitor's text.")
    conversation_id: str | None = Field(
        default=None, description="Continue this conversation; omit to start a new one."
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description="Free-form context stored with a new conversation."
    )


def checked_message(text: str, max_chars: int) -> str:
    """The message as sent, or a 4xx that says what is wrong with it."""
    if is_blank(text):
        raise ApiError(422, "empty_message", "The message is empty: it has no visible characters.")
    if len(text) > max_chars:
        raise ApiError(
            413,
            "message_too_long",
            f"The message has {len(text)} characters; the limit is {max_chars}.",
        )
    return text
