"""The open streaming responses (``_changes`` feeds) of each device in this process, so a revocation, a
wipe request or a deactivated user closes them at once instead of at the feed's next timeout."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager


class OpenFeeds:
    def __init__(self) -> None:
        self._by_device: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._users: dict[str, str] = {}  # device -> user

    @contextmanager
    def track(self, device_id: str, user: str) -> Iterator[asyncio.Event]:
        """Register one open feed; the event is set when it must close."""
        closed = asyncio.Event()
        self._by_device[device_id].add(closed)
        self._users[device_id] = user
        try:
            yield closed
        finally:
            feeds = self._by_device.get(device_id)
            if feeds is not None:
                feeds.discard(closed)
                if not feeds:
                    self._by_device.pop(device_id, None)
                    self._users.pop(device_id, None)

    def close_device(self, device_id: str) -> int:
        """Close every open feed of the device; returns how many."""
        feeds = self._by_device.get(device_id, set())
        for closed in feeds:
            closed.set()
        return len(feeds)

    def close_user(self, user: str) -> int:
        return sum(self.close_device(d) for d, u in list(self._users.items()) if u == user)

    def close_all(self) -> int:
        return sum(self.close_device(d) for d in list(self._by_device))

    def count(self, device_id: str | None = None) -> int:
        if device_id is not None:
            return len(self._by_device.get(device_id, ()))
        return sum(len(feeds) for feeds in self._by_device.values())


async def until_closed(chunks: AsyncIterator[bytes], closed: asyncio.Event) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through until they end or ``closed`` is set, whichever comes first."""
    closing = asyncio.ensure_future(closed.wait())
    iterator = chunks.__aiter__()
    step: asyncio.Future[bytes] | None = None
    try:
        while True:
            step = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({step, closing}, return_when=asyncio.FIRST_COMPLETED)
            if step not in done:
                return
            try:
                chunk = step.result()
            except StopAsyncIteration:
                return
            step = None
            yield chunk
    finally:
        closing.cancel()
        if step is not None and not step.done():
            step.cancel()
        if step is not None:  # its outcome (an error once the upstream is closed) is of no interest any more
            step.add_done_callback(_ignore_outcome)


def _ignore_outcome(future: asyncio.Future[bytes]) -> None:
    if not future.cancelled():
        future.exception()
