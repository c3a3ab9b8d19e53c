"""A cap on HTTP request bodies (MAX_BODY_BYTES): a larger one gets 413 `body_too_large`.

A declared `Content-Length` over the cap is answered before the body is read; a body
sent without one (chunked) is cut as soon as it goes over. The answer has the usual
error shape and passes through the CORS and request-id middleware. (FastAPI's own
`max_body_size` answers in plain text, outside the app's middleware.)
"""

import json

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_body
from app.errors import ApiError


class BodyTooLarge(ApiError, StarletteHTTPException):
    """Raised while the body is read; an HTTPException, so that FastAPI's body parsing
    lets it through to the ApiError handler."""

    def __init__(self, limit: int) -> None:
        message = f"The request body is larger than the limit of {limit} bytes."
        StarletteHTTPException.__init__(self, status_code=413, detail=message)
        self.status, self.code, self.message = 413, "body_too_large", message


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit():
            if int(declared) > self.max_bytes:
                await self._refuse(scope, send)
            else:
                # The server reads no more than the declared length: nothing to watch,
                # and a streamed response's sends are not wrapped once more.
                await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        request_id = scope.get("state", {}).get("request_id")
        error = BodyTooLarge(self.max_bytes)
        body = json.dumps(error_body(error.code, error.message, request_id)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
