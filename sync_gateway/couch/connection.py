"""One keep-alive HTTP/1.1 connection of the edge to CouchDB and the one response being read on it: an
``asyncio.Protocol`` whose responses ``httptools`` (llhttp, in C) parses, chunked transfer decoded there.

The body is handed on as it arrives, what arrived together as one piece; reading pauses while more than
``_HIGH_WATER`` bytes wait for the device and writing waits while the socket's buffer is full. A read timeout
is one ``call_later`` per request, re-armed only when it fires. The pool (``upstream.Upstream``) decides about
reuse from ``complete``, ``keep_alive`` and ``usable``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools

from sync_gateway.errors import CouchUnavailable, UpstreamTimeout

_HIGH_WATER = 256 * 1024  # stop reading from CouchDB while this much is waiting for the device
_IDLE_KEEP_S = 30.0  # an idle pooled connection older than this is closed rather than reused


class Connection(asyncio.Protocol):
    """One TCP connection and the one response being read on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.keep_for = _IDLE_KEEP_S  # idle seconds the server keeps it open (its Keep-Alive: timeout=N, less 1)
        self._parser: httptools.HttpResponseParser | None = None
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reset(head=False, read_timeout=None)

    def _reset(self, *, head: bool, read_timeout: float | None) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.received_any = False
        self.error: Exception | None = None
        self._head = head
        self._interim = False
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._reading_paused = False
        self._read_timeout = read_timeout
        self._last_data = self._loop.time()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: the connection is not in a state to trust
            self._abort(CouchUnavailable("unexpected data from the upstream"))
            return
        self.received_any = True
        self._last_data = self._loop.time()
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._abort(CouchUnavailable(f"malformed upstream response: {exc}"))
            return
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost decides whether the response was whole

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._parser is not None and not self.complete and self.error is None:
            if self.headers_done and self._ends_at_close():
                self._finish()
            else:
                self.error = CouchUnavailable("the upstream closed the connection before the response ended")
        self._parser = None
        self._cancel_timer()
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # ------------------------------------------------------------------ httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim response (100 Continue): the real one follows on this parser
            self._interim = True
            self.headers = {}
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        self.headers_done = True
        if "keep-alive" in self.headers:  # e.g. pouchdb-server (Node) closes idle connections after 5 s
            self.keep_for = _keep_for(self.headers["keep-alive"])
        if self._head:  # no body follows a HEAD response, whatever its Content-Length says
            self._finish()

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self._body.append(body)
            self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if not self.complete:
            self._finish()

    # ------------------------------------------------------------------ used by the pool and the response

    def usable(self, now: float) -> bool:
        transport = self.transport
        return (
            not self.closed
            and transport is not None
            and not transport.is_closing()
            and (now - self.idle_since < self.keep_for)
        )

    async def send(
        self, head: bytes, body: bytes | AsyncIterator[bytes] | None, *, head_only: bool, timeout: float | None
    ) -> None:
        """Write one request and get ready to read its response."""
        assert self.transport is not None
        self._reset(head=head_only, read_timeout=timeout)
        self._parser = httptools.HttpResponseParser(self)
        if body is None or isinstance(body, bytes):
            self.transport.write(head + body if body else head)
        else:
            self.transport.write(head)
            try:
                async for piece in body:
                    if self.closed:
                        break  # the server answered (or went) early: read what it said
                    if piece:
                        self.transport.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                        await self._drain()
                if not self.closed:
                    self.transport.write(b"0\r\n\r\n")
            except BaseException:
                self.abort()  # the device's upload failed or was refused: this request is half sent
                raise
        if timeout is not None:
            self._timer = self._loop.call_later(timeout, self._check_timeout)

    async def wait_headers(self) -> None:
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def pieces(self) -> AsyncIterator[bytes]:
        """The body as it arrives; what arrived together comes as one piece."""
        while True:
            if self._body:
                piece = self._body.popleft() if len(self._body) == 1 else b"".join(self._body)
                self._body.clear()
                self._buffered = 0
                if self._reading_paused and self.transport is not None and not self.closed:
                    self._reading_paused = False
                    self._last_data = self._loop.time()
                    self.transport.resume_reading()
                yield piece
            elif self.error is not None:
                raise self.error
            elif self.complete:
                return
            else:
                await self._wait()

    def abort(self) -> None:
        self._abort(None)

    # ------------------------------------------------------------------ inside

    def _ends_at_close(self) -> bool:
        """A response with neither a length nor chunked encoding ends when the server closes."""
        return "content-length" not in self.headers and "chunked" not in self.headers.get("transfer-encoding", "")

    def _finish(self) -> None:
        self.complete = True
        self._parser = None
        self._cancel_timer()
        self._wake()

    def _abort(self, error: Exception | None) -> None:
        if error is not None and self.error is None and not self.complete:
            self.error = error
        self.closed = True
        self._parser = None
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _drain(self) -> None:
        if self._write_paused and not self.closed:
            self._drained = self._loop.create_future()
            await self._drained

    def _check_timeout(self) -> None:
        self._timer = None
        timeout = self._read_timeout
        if self.complete or self.closed or timeout is None:
            return
        silent = self._loop.time() - self._last_data
        if self._reading_paused:  # the device is slow, not CouchDB: look again later
            self._timer = self._loop.call_later(timeout, self._check_timeout)
        elif silent < timeout:
            self._timer = self._loop.call_later(timeout - silent, self._check_timeout)
        else:
            self._abort(UpstreamTimeout(f"no data from the upstream for {timeout:g} s"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _keep_for(keep_alive: str) -> float:
    for part in keep_alive.split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() == "timeout" and value.strip().isdigit():
            return min(_IDLE_KEEP_S, max(0.0, int(value) - 1.0))
    return _IDLE_KEEP_S
