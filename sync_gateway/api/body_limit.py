"""A request body limit applied before anything else runs, authentication included.

An unauthenticated caller must not make the gateway read 40 MB just to answer 401. The declared
``Content-Length`` is checked first (413 without reading a byte); a body without one (chunked) is counted as it
streams and refused as soon as it passes the limit. Either way the answer is 413 with the code ``too_large``.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync_gateway.api.errors import SafeJSONResponse, error_body

MAX_BODY_BYTES = 1024 * 1024
# a body over the limit but under this is read and discarded (never stored) before the 413, so an ordinary
# client that is still sending sees the answer instead of a reset connection; a larger one is cut off unread
DRAIN_BYTES = 8 * 1024 * 1024
TOO_LARGE = "too_large"


def _message(limit: int) -> str:
    return f"the request body is over {limit} bytes; send less (user attributes, resolutions are small)"


class BodyLimit:
    """ASGI middleware refusing request bodies over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is None or declared > self.max_bytes:
            status = 400 if declared is None else 413
            code = "invalid_content_length" if declared is None else TOO_LARGE
            text = "Content-Length is not a number" if declared is None else _message(self.max_bytes)
            if declared is not None and declared <= DRAIN_BYTES:
                await _drain(receive, DRAIN_BYTES)
            response = SafeJSONResponse(error_body(code, text), status_code=status, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if message.get("more_body", False):
                        await _drain(receive, DRAIN_BYTES - received)
                    # raised inside the app, where the error handlers turn it into the same 413 body
                    raise HTTPException(413, _message(self.max_bytes))
            return message

        await self.app(scope, counted, send)


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of the body, at most ``budget`` bytes."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _content_length(scope: Scope) -> int | None:
    """The declared body length; 0 when none is declared; None when the header is not a number."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
            return length if length >= 0 else None
    return 0
