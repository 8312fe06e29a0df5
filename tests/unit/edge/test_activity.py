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


class _WatchCouch:
    """The registry watch's client: its longpoll answers with whatever the test puts in ``rows``."""

    def __init__(self) -> None:
        self.rows: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.polls = 0

    async def db_info(self, db: str) -> dict[str, Any]:
        return {"update_seq": "1-x"}

    async def changes(self, db: str, **params: Any) -> Any:
        self.polls += 1
        row = await self.rows.get()
        return type("Batch", (), {"results": [row], "last_seq": f"{self.polls + 1}-x"})()


class _Devices(_Registry):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get_doc(self, device_id: str) -> dict[str, Any]:
        self.reads += 1
        return {"device_id": device_id, "user": "kai", "state": "active", "db": "userdb-6b6169"}


async def test_while_the_registry_watch_follows_a_device_record_is_read_again_only_when_it_changes() -> None:
    devices, watch = _Devices(), _WatchCouch()
    edge = _edge(devices, [])
    edge._watch_couch = watch  # type: ignore[assignment]
    assert edge._state_ttl == 2.0  # no watch yet: a revocation by another process is obeyed within 2 s
    task = asyncio.create_task(edge.watch_registry())
    while watch.polls < 1:
        await asyncio.sleep(0)
    assert edge._state_ttl == 10.0
    await edge._device("dev-1")
    await edge._device("dev-1")
    assert devices.reads == 1
    await watch.rows.put({"id": "device:dev-1", "doc": {"state": "revoked"}})
    while watch.polls < 2:
        await asyncio.sleep(0)
    await edge._device("dev-1")
    assert devices.reads == 2  # the change dropped the cached record at once
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert edge._state_ttl == 2.0
