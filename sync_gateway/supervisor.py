"""One supervisor over every long-running loop of a process.

A loop (an ingest follower, the projector, the mirror puller, the distributor, a watcher) is a coroutine
factory registered under a name. A loop that raises is logged with its name and the error, and started again
after the shared backoff (``sync_gateway.retry``); a loop that keeps running for ``stable_after`` seconds
has its failure count reset. A loop that returns has finished on purpose (e.g. a follower that lost its
checkpoint to another process) and is not restarted. Nothing dies quietly, and nothing takes the process
down with it: ``alive()`` and ``restarts`` are what ``/ready`` and ``/metrics`` show.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from sync_gateway import metrics
from sync_gateway.retry import Backoff

log = structlog.get_logger(__name__)

LoopFactory = Callable[[], Awaitable[None]]


@dataclass
class LoopState:
    """What the supervisor knows of one loop."""

    name: str
    restarts: int = 0
    failures: int = 0
    finished: bool = False
    last_error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.finished or (self.task is not None and not self.task.done())


class Supervisor:
    """Starts named loops, restarts the ones that crash, stops them all on request."""

    def __init__(self, backoff: Backoff | None = None, *, stable_after: float = 30.0) -> None:
        self._backoff = backoff or Backoff(base=0.5, cap=30.0)
        self._stable_after = stable_after
        self.loops: dict[str, LoopState] = {}

    def start(self, name: str, factory: LoopFactory) -> LoopState:
        """Run ``factory()`` under supervision as loop ``name`` (a running loop of that name is kept)."""
        state = self.loops.get(name)
        if state is not None and state.task is not None and not state.task.done():
            return state
        state = LoopState(name)
        self.loops[name] = state
        state.task = asyncio.create_task(self._supervise(state, factory), name=name)
        return state

    async def stop(self, name: str) -> None:
        """Cancel loop ``name`` and wait for it to finish its clean-up."""
        state = self.loops.pop(name, None)
        if state is not None and state.task is not None:
            state.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await state.task

    async def stop_all(self, grace: float) -> list[str]:
        """Cancel every loop; wait up to ``grace`` seconds for their clean-up. Returns loops still running."""
        tasks = [s.task for s in self.loops.values() if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        if not tasks:
            return []
        _, pending = await asyncio.wait(tasks, timeout=grace)
        return sorted(t.get_name() for t in pending)

    def alive(self) -> dict[str, bool]:
        return {name: state.alive for name, state in self.loops.items()}

    @property
    def restarts(self) -> int:
        return sum(state.restarts for state in self.loops.values())

    async def _supervise(self, state: LoopState, factory: LoopFactory) -> None:
        while True:
            started = time.monotonic()
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - started >= self._stable_after:
                    state.failures = 0
                state.failures += 1
                state.restarts += 1
                metrics.LOOP_RESTARTS.labels(metrics.loop_label(state.name)).inc()
                state.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                delay = self._backoff.delay(state.failures)
                log.error(
                    "loop.crashed",
                    loop=state.name,
                    error_type=type(exc).__name__,
                    error=str(exc)[:200],
                    restarts=state.restarts,
                    restart_in=round(delay, 2),
                    exc_info=True,
                )
                await asyncio.sleep(delay)
                log.info("loop.restarted", loop=state.name, restarts=state.restarts)
            else:
                state.finished = True
                log.info("loop.finished", loop=state.name)
                return
