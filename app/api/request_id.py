"""Give every request an id (the caller's `X-Request-ID` if sane), echoed in the response."""

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import context

SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if SANE_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        token = context.request_id.set(request_id)  # for the log lines of this request
        try:
            # A socket's frames pass straight through: only an HTTP response has headers.
            await self.app(scope, receive, send_with_id if scope["type"] == "http" else send)
        finally:
            context.request_id.reset(token)
