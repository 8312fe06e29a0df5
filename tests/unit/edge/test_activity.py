"""Device activity at the edge: a push wakes ingest for the device's database; the first stamp of each kind
is written at once, later ones are batched."""

from __future__ import annotations

import asyncio
from typing import Any

from sync_gateway.edge.feeds import OpenFeeds
from sync_gateway.edge.limits import RateLimiter
from sync_gateway.edge.service import Edge
from sync_gateway.edge.tokens import AccessTokens


class _Registry:
    """Stands in for DeviceRegistry: records the activity writes."""

    db = "sync_registry"

    def __init__(self) -> None:
        self.writes: list[tuple[str, set[str]]] = []
        self.written = asyncio.Event()

    async def record_activity(self, device_id: str, stamps: dict[str, str]) -> None:
        self.writes.append((device_id, set(stamps)))
        self.written.set()


class _NoUpstream:
    async def close(self) -> None:
        return None


def _edge(registry: _Registry, woken: list[str]) -> Edge:
    return Edge(
        couch=None,  # type: ignore[arg-type]
        watch_couch=None,  # type: ignore[arg-type]
        devices=registry,  # type: ignore[arg-type]
        tokens=AccessTokens("k" * 40, 60),
        passthrough=_NoUpstream(),  # type: ignore[arg-type]
        feeds=OpenFeeds(),
        limiter=RateLimiter(10, 10),
        enrol_limiter=RateLimiter(10, 10),
        couch_url="http://127.0.0.1:1",
        cors_origins=[],
        wake=woken.append,
    )


async def _written(registry: _Registry, count: int) -> None:
    while len(registry.writes) < count:
        registry.written.clear()
        await asyncio.wait_for(registry.written.wait(), 2.0)


async def test_pushes_wake_ingest_and_first_stamps_are_written_at_once() -> None:
    registry, woken = _Registry(), []
    edge = _edge(registry, woken)
    device: dict[str, Any] = {"device_id": "dev-1", "db": "userdb-61"}
    edge.note_activity(device)
    await _written(registry, 1)
    edge.note_activity(device, pull=True)
    await _written(registry, 2)
    edge.note_activity(device, push=True)
    await _written(registry, 3)
    assert woken == ["userdb-61"]
    assert [stamps for _, stamps in registry.writes] == [
        {"last_seen_at"},
        {"last_seen_at", "last_pull_at"},
        {"last_seen_at", "last_push_at"},
    ]
    edge.note_activity(device, pull=True)  # nothing new: batched for the interval, written at close
    await asyncio.sleep(0.05)
    assert len(registry.writes) == 3
    await edge.close()
    assert registry.writes[-1] == ("dev-1", {"last_seen_at", "last_pull_at"})
