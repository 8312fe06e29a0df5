"""Dry run of a profile change: per user and entity, what the distributor would add, change and evict.

``plan`` evaluates the given profiles with the distributor's own reconciliation
(:func:`sync_gateway.distribute.reconcile.reconcile`: same evaluation, projections, ``config:`` documents
and source, the ledger of what was distributed, else the mirror) and only counts what applying it would
write. It only reads: nothing is written anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sync_gateway.couch.client import CouchClient
from sync_gateway.distribute.reconcile import CHUNK_USERS, Change, reconcile
from sync_gateway.profiles import ProfileIndex, ProfileSet, UserContext


@dataclass
class Delta:
    added: int = 0
    changed: int = 0
    evicted: int = 0
    unchanged: int = 0
    added_bytes: int = 0
    changed_bytes: int = 0
    evicted_bytes: int = 0

    @property
    def after(self) -> int:
        return self.added + self.changed + self.unchanged

    @property
    def touched(self) -> bool:
        return bool(self.added or self.changed or self.evicted)


@dataclass
class PlanReport:
    """Deltas keyed by (user, entity); ``over_limit`` counts rows a limit leaves out."""

    deltas: dict[tuple[str, str], Delta] = field(default_factory=dict)
    over_limit: dict[tuple[str, str], int] = field(default_factory=dict)
    users: int = 0

    def totals(self) -> Delta:
        total = Delta()
        for delta in self.deltas.values():
            for name, value in asdict(delta).items():
                setattr(total, name, getattr(total, name) + value)
        return total

    def as_json(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "totals": {**asdict(self.totals()), "after": self.totals().after},
            "changes": [
                {"user": user, "entity": entity, **asdict(delta), "after": delta.after}
                for (user, entity), delta in sorted(self.deltas.items())
                if delta.touched
            ],
            "over_limit": [{"user": u, "entity": e, "left_out": n} for (u, e), n in sorted(self.over_limit.items())],
        }


def diff(report: PlanReport, user: str, changes: Mapping[str, Change]) -> None:
    """Add one user's reconciliation (what it should hold next to what it holds) to ``report``."""
    for planned, current in changes.values():
        entity = planned.entity if planned is not None else current.entity if current is not None else "?"
        delta = report.deltas.setdefault((user, entity), Delta())
        if planned is None and current is not None:
            delta.evicted += 1
            delta.evicted_bytes += current.size
        elif planned is not None and current is None:
            delta.added += 1
            delta.added_bytes += planned.size
        elif planned is not None and current is not None:
            if planned.digest == current.digest:
                delta.unchanged += 1
            else:
                delta.changed += 1
                delta.changed_bytes += planned.size


async def plan(
    couch: CouchClient,
    *,
    registry_db: str,
    mirror_db: str,
    profiles: ProfileSet,
    ledger_db: str | None = None,
    config_docs: Sequence[Mapping[str, Any]] = (),
    concurrency: int = 16,
) -> PlanReport:
    index = ProfileIndex(profiles)
    rows = await couch.all_docs(registry_db, include_docs=True, startkey="user:", endkey="user:\ufff0")
    for row in rows:
        if row.get("doc") and "db" in row["doc"]:
            index.set_user(UserContext.from_record(row["doc"]))
    users = sorted(index.users)
    report = PlanReport(users=len(users))
    ledger_db = ledger_db or f"{mirror_db}_distributed"
    source = ledger_db if await couch.db_exists(ledger_db) else mirror_db
    for start in range(0, len(users), CHUNK_USERS):
        result = await reconcile(
            couch, source, index, users[start : start + CHUNK_USERS], config_docs, concurrency=concurrency
        )
        report.over_limit.update(result.over_limit)
        for user, changes in result.changes.items():
            diff(report, user, changes)
    return report


def format_report(report: PlanReport) -> str:
    """A table a person reads before applying a profile change."""
    lines = [
        f"{'user':<24} {'entity':<14} {'add':>6} {'change':>7} {'evict':>6} {'keep':>6} {'after':>6} "
        f"{'+bytes':>9} {'~bytes':>9} {'-bytes':>9}"
    ]
    for (user, entity), d in sorted(report.deltas.items()):
        if d.touched:
            lines.append(
                f"{user:<24} {entity:<14} {d.added:>6} {d.changed:>7} {d.evicted:>6} {d.unchanged:>6} {d.after:>6} "
                f"{d.added_bytes:>9} {d.changed_bytes:>9} {d.evicted_bytes:>9}"
            )
    t = report.totals()
    lines.append(
        f"{'TOTAL (' + str(report.users) + ' users)':<39} {t.added:>6} {t.changed:>7} {t.evicted:>6} "
        f"{t.unchanged:>6} {t.after:>6} {t.added_bytes:>9} {t.changed_bytes:>9} {t.evicted_bytes:>9}"
    )
    for (user, entity), left_out in sorted(report.over_limit.items()):
        lines.append(f"limit: {user} would leave out {left_out} {entity} row(s)")
    if not any(d.touched for d in report.deltas.values()):
        lines.append("no changes: every user database already holds exactly what these profiles select")
    return "\n".join(lines)
