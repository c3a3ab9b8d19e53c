"""What a visitor may send, checked the same way for HTTP and WebSocket."""

from typing import Any

from pydantic import ConfigDict, Field

from app.service.text_checks import StorableInput


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
