"""A cap on the size of a request's head (request line and headers): MAX_HEADER_BYTES.

uvicorn has such a cap only for its h11 parser (`h11_max_incomplete_event_size`, answered
with a 400 and a closed connection); its httptools parser, the one `uvicorn[standard]`
runs, buffers a head of any size. So the server runs this subclass of uvicorn's httptools
protocol, which reads the same Config setting: a head over it is answered `431
headers_too_large` in the usual error shape and the connection is closed, before the
application sees the request. It is cut at the parser because a head is buffered whole
before any ASGI middleware could look at it. Without httptools uvicorn falls back to h11
and its own cap.
"""

import asyncio
import json
import logging
import uuid
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from app.api.errors import error_body

log = logging.getLogger("uvicorn.error")

DEFAULT_MAX_HEADER_BYTES = 16_384
HEADER_OVERHEAD = 4  # ": " and CRLF around each header
# After the 431, what the client is still sending is read and dropped this long before the
# connection is closed: closing at once would reset it and lose the answer on its way.
LINGER_SECONDS = 2.0


def refusal(limit: int, request_id: str) -> bytes:
    """The 431 response, whole, with `Connection: close`."""
    message = f"The request's headers are larger than the limit of {limit} bytes."
    body = json.dumps(error_body("headers_too_large", message, request_id)).encode()
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # no httptools: uvicorn's h11, with its own cap
    HeaderLimitedHTTP: type[asyncio.Protocol] = H11Protocol
else:

    class HeaderLimitedHttpTools(HttpToolsProtocol):
        """uvicorn's httptools protocol, refusing a head over the Config's cap.

        A head is counted twice: the bytes received while it is incomplete (so a huge
        one is cut before it is buffered whole), and, once complete, the URL and headers
        themselves (a head that came in one read together with its body)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            limit = self.config.h11_max_incomplete_event_size
            self.max_head_bytes: int = limit or DEFAULT_MAX_HEADER_BYTES
            self.head_pending = True
            self.head_bytes = 0
            self.refused = False

        def data_received(self, data: bytes) -> None:
            if self.refused:
                return
            if self.head_pending:
                self.head_bytes += len(data)
            super().data_received(data)
            if self.head_pending and self.head_bytes > self.max_head_bytes:
                self.refuse()

        def on_headers_complete(self) -> None:
            self.head_pending = False
            size = len(self.url) + sum(len(n) + len(v) + HEADER_OVERHEAD for n, v in self.headers)
            if self.refused or size > self.max_head_bytes:
                self.refuse()
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self.refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            # What follows in this connection is the next request's head.
            self.head_pending, self.head_bytes = True, 0
            if not self.refused:
                super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            if not self.refused:
                super().handle_websocket_upgrade()

        def refuse(self) -> None:
            if self.refused:
                return
            self.refused = True
            client = "{}:{}".format(*self.client) if self.client else "a client"
            log.warning("%s sent request headers over %d bytes: 431", client, self.max_head_bytes)
            if self.transport.is_closing():
                return
            self.transport.write(refusal(self.max_head_bytes, uuid.uuid4().hex))
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

    HeaderLimitedHTTP = HeaderLimitedHttpTools
