"""Batched calls that isolate the one bad record, and the walk of Tryton documents through their states.

A batch call that Tryton refuses is split in halves until the refusing record stands alone, so one bad
transaction costs ``2·log2(n)`` extra calls and never blocks the rest of its batch. Transient errors
(ERP down, lock) are not split: they abort the whole push, which the projector retries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Hashable, Sequence
from typing import Any, TypeVar

from sync_gateway.contracts import PermanentConnectorError

from .client import TrytonClient

K = TypeVar("K", bound=Hashable)

# state → the button that moves a document on, per model; a document is finished in FINAL[model]
TRANSITIONS: dict[str, dict[str, str]] = {
    "stock.shipment.internal": {
        "draft": "wait",
        "waiting": "assign_force",
        "assigned": "do",
        "packed": "ship",
        "shipped": "do",
    },
    "stock.shipment.out": {
        "draft": "wait",
        "waiting": "assign_force",
        "assigned": "pick",
        "picked": "pack",
        "packed": "do",
        "shipped": "do",
    },
    "stock.shipment.out.return": {"draft": "receive", "received": "do"},
    "sale.sale": {"draft": "quote", "quotation": "confirm"},
}
FINAL: dict[str, frozenset[str]] = {
    "stock.shipment.internal": frozenset({"done"}),
    "stock.shipment.out": frozenset({"done"}),
    "stock.shipment.out.return": frozenset({"done"}),
    "sale.sale": frozenset({"confirmed", "processing", "done"}),
}


async def isolated(
    keys: Sequence[K], operation: Callable[[list[K]], Awaitable[Sequence[Any] | None]]
) -> tuple[dict[K, Any], dict[K, PermanentConnectorError]]:
    """Run ``operation`` on all ``keys``; on a permanent refusal, bisect until each refusal is alone.

    Returns the results per key (``operation`` returns one result per key, or ``None``) and the refusals.
    """
    results: dict[K, Any] = {}
    failures: dict[K, PermanentConnectorError] = {}

    async def run(chunk: list[K]) -> None:
        if not chunk:
            return
        try:
            out = await operation(chunk)
        except PermanentConnectorError as exc:
            if len(chunk) == 1:
                failures[chunk[0]] = exc
                return
            middle = len(chunk) // 2
            await run(chunk[:middle])
            await run(chunk[middle:])
            return
        values = list(out) if out is not None else [None] * len(chunk)
        results.update(zip(chunk, values, strict=True))

    await run(list(keys))
    return results, failures


async def advance(
    client: TrytonClient, model: str, ids: Collection[int], allowed_warnings: Collection[str]
) -> dict[int, PermanentConnectorError]:
    """Push documents through their workflow to a final state, one batched call per state transition.

    Returns the documents Tryton refused to move on (they stay where they stopped)."""
    transitions, final = TRANSITIONS[model], FINAL[model]
    failures: dict[int, PermanentConnectorError] = {}
    pending = sorted(set(ids))
    for _ in range(len(transitions) + 2):
        if not pending:
            break
        rows = await client.execute(model, "read", pending, ["state"])
        by_state: dict[str, list[int]] = {}
        for row in rows:
            if row["state"] not in final:
                by_state.setdefault(row["state"], []).append(row["id"])
        pending = []
        for state, state_ids in sorted(by_state.items()):
            button = transitions.get(state)
            if button is None:
                for record_id in state_ids:
                    failures[record_id] = PermanentConnectorError(
                        f"{model} {record_id} is {state} in Tryton and cannot be completed"
                    )
                continue

            async def call(chunk: list[int], button: str = button) -> None:
                await client.call_acknowledging(allowed_warnings, lambda: client.execute(model, button, chunk))
                return None

            _, refused = await isolated(state_ids, call)
            failures.update(refused)
            pending.extend(i for i in state_ids if i not in refused)
    if pending:
        for row in await client.execute(model, "read", pending, ["state"]):
            if row["state"] not in final:
                failures[row["id"]] = PermanentConnectorError(f"{model} {row['id']} stopped in state {row['state']}")
    return failures
