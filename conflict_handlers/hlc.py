"""Hybrid logical clock timestamps that a device (JavaScript) and the gateway (Python) both write and compare.

Format (see ``conflict_handlers/README.md``)::

    2024-05-01T12:34:56.789Z-000a-tablet-7
    └──── wall time ───────┘ └┬─┘ └─┬───┘
    ISO-8601 UTC, millis,     │     device id (any non-empty text without control characters)
    exactly 24 characters     counter: 4 lowercase hex digits

The wall time is what JavaScript's ``new Date(ms).toISOString()`` prints, and the counter has a fixed width,
so plain string comparison orders two stamps by (wall time, counter, device id): the same order as
:func:`sort_key`. A clock keeps its stamps strictly increasing even when the wall clock stands still or steps
back, and moves past every stamp it receives, so an edit made after seeing another edit always stamps later.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sync_gateway.contracts import ConflictHandlerError

MAX_COUNTER = 0xFFFF
_PATTERN = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)-([0-9a-f]{4})-([^\x00-\x1f\x7f]+)$")


class InvalidTimestamp(ConflictHandlerError, ValueError):
    """A string is not a hybrid logical clock timestamp of the documented format."""


@dataclass(frozen=True, order=True)
class Timestamp:
    """A parsed stamp. Ordering of instances equals the lexicographic ordering of their strings."""

    wall_ms: int
    counter: int
    device_id: str

    def __str__(self) -> str:
        return f"{format_wall(self.wall_ms)}-{self.counter:04x}-{self.device_id}"


def format_wall(wall_ms: int) -> str:
    """Milliseconds since the Unix epoch as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (JavaScript's ``toISOString``)."""
    moment = datetime.fromtimestamp(wall_ms // 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{wall_ms % 1000:03d}Z"


def parse_wall(text: str) -> int:
    """An ISO-8601 time (``Z`` or an offset; a naive time is read as UTC) as epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError as exc:
        raise InvalidTimestamp(f"not an ISO-8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def parse(text: object) -> Timestamp:
    """Parse a stamp; raise :class:`InvalidTimestamp` for anything else (including non-strings)."""
    if not isinstance(text, str):
        raise InvalidTimestamp(f"not a string: {text!r}")
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise InvalidTimestamp(f"not a hybrid logical clock timestamp: {text!r}")
    wall, counter, device_id = match.groups()
    wall_ms = parse_wall(wall)
    if format_wall(wall_ms) != wall:  # e.g. month 13 that fromisoformat rejected, or Feb 30
        raise InvalidTimestamp(f"not a valid wall time: {text!r}")
    return Timestamp(wall_ms, int(counter, 16), device_id)


def try_parse(text: object) -> Timestamp | None:
    """Like :func:`parse`, but ``None`` for an absent or malformed stamp."""
    try:
        return parse(text)
    except InvalidTimestamp:
        return None


def sort_key(text: str) -> tuple[int, int, str]:
    """The key stamps sort by: (wall time, counter, device id)."""
    stamp = parse(text)
    return (stamp.wall_ms, stamp.counter, stamp.device_id)


def _system_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridLogicalClock:
    """One node's clock. ``now()`` stamps a local event; ``receive()`` merges a stamp seen from elsewhere.

    Not thread-safe; give each worker its own clock or guard it. ``wall_clock`` is injectable for tests.
    """

    def __init__(self, device_id: str, wall_clock: Callable[[], int] = _system_ms) -> None:
        if not device_id or _PATTERN.fullmatch(f"{format_wall(0)}-0000-{device_id}") is None:
            raise ValueError(f"device id must be non-empty text without control characters: {device_id!r}")
        self.device_id = device_id
        self._wall_clock = wall_clock
        self._last = Timestamp(0, 0, device_id)

    @property
    def last(self) -> Timestamp:
        return self._last

    def now(self) -> str:
        """A stamp greater than every stamp this clock has issued or received."""
        physical = self._wall_clock()
        if physical > self._last.wall_ms:
            self._last = Timestamp(physical, 0, self.device_id)
        else:
            self._last = self._advance(self._last.wall_ms, self._last.counter + 1)
        return str(self._last)

    def receive(self, remote: str) -> str:
        """Merge a remote stamp and return a local stamp greater than it and than all earlier ones."""
        other = parse(remote)
        physical = self._wall_clock()
        wall = max(physical, self._last.wall_ms, other.wall_ms)
        if wall == self._last.wall_ms == other.wall_ms:
            counter = max(self._last.counter, other.counter) + 1
        elif wall == self._last.wall_ms:
            counter = self._last.counter + 1
        elif wall == other.wall_ms:
            counter = other.counter + 1
        else:
            counter = 0
        self._last = self._advance(wall, counter)
        return str(self._last)

    def _advance(self, wall_ms: int, counter: int) -> Timestamp:
        # A counter that would overflow its 4 hex digits borrows one millisecond of wall time instead.
        if counter > MAX_COUNTER:
            return Timestamp(wall_ms + 1, 0, self.device_id)
        return Timestamp(wall_ms, counter, self.device_id)
