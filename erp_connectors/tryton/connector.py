"""The Tryton connector: pushes field transactions into Tryton, idempotently and in batches, and pulls
master data out of it (see ``pull.py``).

Per pushed batch and document type: find the records Tryton already holds for the batch's transaction ids,
create the missing ones in one call per model, then walk all of them through their workflow with one call
per state transition. Edits of existing records (work orders, customers) are written in rounds, one update
per record and round, one call per round. A record Tryton refuses is isolated by bisection and reported
``permanent`` alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from sync_gateway.contracts import ConnectorError, Event, Health, PermanentConnectorError, PullBatch, PushOutcome

from . import mapping
from .check import check_settings
from .client import TrytonClient
from .masters import MappingError, Masters
from .pull import pull_master_data
from .settings import TrytonSettings
from .workflow import advance, isolated

log = structlog.get_logger(__name__)

SHIPMENT_MODELS = ("stock.shipment.internal", "stock.shipment.out", "stock.shipment.out.return")
_Outcomes = dict[str, PushOutcome]


class TrytonConnector:
    """``ErpConnector`` for Tryton 8.2 over JSON-RPC."""

    name = "tryton"

    def __init__(self, settings: TrytonSettings, client: TrytonClient | None = None) -> None:
        self.settings = settings
        self.client = client or TrytonClient(
            settings.url, settings.database, settings.user, settings.password, timeout=settings.timeout
        )
        self._lock = asyncio.Lock()
        self._handlers: dict[str, Callable[[Masters, list[Event]], Awaitable[_Outcomes]]] = {
            "sales_order": self._push_sales,
            "inventory_movement": self._push_movements,
            "delivery_confirmation": self._push_deliveries,
            "service_report": self._push_service_reports,
            "work_order_update": self._push_work_order_updates,
            "customer_update": self._push_customer_updates,
        }

    async def start(self) -> None:
        await self.client.login()

    async def close(self) -> None:
        await self.client.aclose()

    async def check(self) -> list[str]:
        """Connectivity, modules and mapping (``sync-gateway connectors check tryton``)."""
        return await check_settings(self.settings)

    async def health(self) -> Health:
        try:
            await self.client.execute("res.user", "get_preferences", True)
        except ConnectorError as exc:
            return Health(False, str(exc))
        return Health(True, f"{self.settings.url} database {self.settings.database}")

    async def pull(self, cursor: str | None, limit: int) -> PullBatch:
        return await pull_master_data(self.client, self.settings, cursor, limit)

    async def push(self, events: Sequence[Event]) -> Sequence[PushOutcome]:
        """One outcome per event, in order; raises ``TransientConnectorError`` when Tryton is unusable."""
        async with self._lock:
            if self.client.user_id is None:
                await self.client.login()
            masters = Masters(self.client, self.settings)
            outcomes: _Outcomes = {}
            groups: dict[str, list[Event]] = defaultdict(list)
            for event in events:
                if event.doc_type in self._handlers:
                    groups[event.doc_type].append(event)
                else:
                    outcomes[event.event_id] = PushOutcome(
                        event.event_id, "permanent", message=f"Tryton connector cannot take {event.doc_type}"
                    )
            for doc_type, group in groups.items():
                outcomes.update(await self._handlers[doc_type](masters, group))
            log.info(
                "tryton.batch_pushed",
                events=len(events),
                refused=sum(o.status == "permanent" for o in outcomes.values()),
            )
            return [outcomes[e.event_id] for e in events]

    # ------------------------------------------------------------------------------------- shared steps

    def _refs(self, events: list[Event]) -> dict[str, list[Event]]:
        refs: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            refs[mapping.reference_of(event.user, event.doc_id)].append(event)
        return refs

    async def _existing(self, model: str, refs: Sequence[str]) -> dict[str, int]:
        if not refs:
            return {}
        rows = await self.client.execute(
            model, "search_read", [("reference", "in", list(refs))], 0, None, [("id", "ASC")], ["reference"]
        )
        found: dict[str, int] = {}
        for row in rows:
            found.setdefault(row["reference"], row["id"])
        return found

    async def _create(self, plans: list[mapping.Plan]) -> tuple[dict[str, int], dict[str, Exception]]:
        """Create the planned records, one call per model, isolating refusals."""
        created: dict[str, int] = {}
        failed: dict[str, Exception] = {}
        by_model: dict[str, dict[str, mapping.Plan]] = defaultdict(dict)
        for plan in plans:
            by_model[plan.model][plan.ref] = plan
        for model, model_plans in by_model.items():

            async def create(
                chunk: list[str], model: str = model, model_plans: dict[str, mapping.Plan] = model_plans
            ) -> Sequence[Any]:
                result: Sequence[Any] = await self.client.execute(
                    model, "create", [model_plans[ref].values for ref in chunk]
                )
                return result

            ids, refused = await isolated(list(model_plans), create)
            created.update({ref: int(i) for ref, i in ids.items()})
            failed.update(refused)
        return created, failed

    async def _numbers(self, model: str, ids: Sequence[int]) -> dict[int, str]:
        if not ids:
            return {}
        field = "number"
        rows = await self.client.execute(model, "read", list(ids), [field])
        return {r["id"]: str(r.get(field) or f"{model},{r['id']}") for r in rows}

    async def _complete(self, model: str, ref_ids: Mapping[str, int], failed: dict[str, Exception]) -> dict[str, str]:
        """Walk the documents to their final state; returns ref → document number of those that got there."""
        refused = await advance(self.client, model, ref_ids.values(), self.settings.allowed_warnings)
        for ref, record_id in ref_ids.items():
            if record_id in refused:
                failed[ref] = refused[record_id]
        numbers = await self._numbers(model, [i for r, i in ref_ids.items() if r not in failed])
        return {ref: numbers[i] for ref, i in ref_ids.items() if i in numbers}

    @staticmethod
    def _outcomes(
        refs: Mapping[str, list[Event]], done: Mapping[str, str], failed: Mapping[str, Exception]
    ) -> _Outcomes:
        outcomes: _Outcomes = {}
        for ref, events in refs.items():
            for event in events:
                if ref in done:
                    outcomes[event.event_id] = PushOutcome(event.event_id, "ok", erp_ref=done[ref])
                else:
                    error = failed.get(ref)
                    message = str(error) if error else "not processed"
                    outcomes[event.event_id] = PushOutcome(event.event_id, "permanent", message=message)
        return outcomes

    def _plan_all(
        self,
        refs: Mapping[str, list[Event]],
        skip: Mapping[str, Any],
        build: Callable[[str, Mapping[str, Any]], mapping.Plan],
        failed: dict[str, Exception],
    ) -> list[mapping.Plan]:
        plans = []
        for ref, events in refs.items():
            if ref in skip:
                continue
            try:
                plans.append(build(ref, events[0].payload))
            except (MappingError, KeyError, TypeError, ValueError) as exc:
                failed[ref] = PermanentConnectorError(
                    f"{exc}" if isinstance(exc, MappingError) else f"invalid document: {exc!r}"
                )
        return plans

    async def _currency(self, masters: Masters) -> int:
        code = "EUR"
        await masters.load_currencies([code])
        return masters.currency(code)

    # -------------------------------------------------------------------------------------- per type

    async def _push_sales(self, masters: Masters, events: list[Event]) -> _Outcomes:
        refs = self._refs(events)
        failed: dict[str, Exception] = {}
        existing = await self._existing("sale.sale", list(refs))
        todo = [e.payload for r, es in refs.items() if r not in existing for e in es[:1]]
        await masters.load_parties(str(p.get("customer")) for p in todo)
        await masters.load_products(str(line.get("sku")) for p in todo for line in p.get("lines") or [])
        await masters.load_currencies(str(p.get("currency") or "EUR") for p in todo)
        plans = self._plan_all(refs, existing, lambda ref, p: mapping.sales_order(masters, ref, p), failed)
        created, refused = await self._create(plans)
        failed.update(refused)
        done = await self._complete("sale.sale", {**existing, **created}, failed)
        return self._outcomes(refs, done, failed)

    async def _push_movements(self, masters: Masters, events: list[Event]) -> _Outcomes:
        refs = self._refs(events)
        failed: dict[str, Exception] = {}
        existing: dict[str, tuple[str, int]] = {}
        for model in SHIPMENT_MODELS:
            remaining = [r for r in refs if r not in existing]
            for ref, record_id in (await self._existing(model, remaining)).items():
                existing[ref] = (model, record_id)
        todo = [es[0].payload for r, es in refs.items() if r not in existing]
        await masters.load_products(str(p.get("sku")) for p in todo)
        await masters.load_locations([str(p.get(k)) for p in todo for k in ("from_location", "to_location")])
        await masters.load_parties(str(p["customer"]) for p in todo if p.get("customer"))
        await masters.load_works(str(p["work_order"]) for p in todo if p.get("work_order"))
        await self._load_work_parties(masters)
        currency = await self._currency(masters) if todo else 0
        plans = self._plan_all(
            refs, existing, lambda ref, p: mapping.inventory_movement(masters, ref, p, currency), failed
        )
        created, refused = await self._create(plans)
        failed.update(refused)
        plan_model = {p.ref: p.model for p in plans}
        done: dict[str, str] = {}
        for model in SHIPMENT_MODELS:
            ref_ids = {r: i for r, (m, i) in existing.items() if m == model}
            ref_ids.update({r: i for r, i in created.items() if plan_model[r] == model})
            if ref_ids:
                done.update(await self._complete(model, ref_ids, failed))
        return self._outcomes(refs, done, failed)

    async def _load_work_parties(self, masters: Masters) -> None:
        party_ids = {w.party for w in masters.works.values() if w.party}
        known = {p.id for p in masters.parties.values()}
        missing = sorted(i for i in party_ids if i not in known)
        if missing:
            rows = await self.client.execute("party.party", "read", missing, ["code"])
            await masters.load_parties(str(r["code"]) for r in rows if r.get("code"))

    async def _push_deliveries(self, masters: Masters, events: list[Event]) -> _Outcomes:
        refs = self._refs(events)
        failed: dict[str, Exception] = {}
        shipments: dict[str, int] = {}
        named = {r: str(es[0].payload["shipment_ref"]) for r, es in refs.items() if es[0].payload.get("shipment_ref")}
        if named:
            keys = sorted(set(named.values()))
            rows = await self.client.execute(
                "stock.shipment.out",
                "search_read",
                ["OR", ("number", "in", keys), ("reference", "in", keys)],
                0,
                None,
                [("id", "ASC")],
                ["number", "reference"],
            )
            by_key: dict[str, int] = {}
            for row in rows:
                by_key.setdefault(row["number"], row["id"])
                if row.get("reference"):
                    by_key.setdefault(row["reference"], row["id"])
            for ref, key in named.items():
                if key in by_key:
                    shipments[ref] = by_key[key]
                else:
                    failed[ref] = PermanentConnectorError(f"no customer shipment with number or reference {key!r}")
        unnamed = {r: es for r, es in refs.items() if r not in named}
        existing = await self._existing("stock.shipment.out", list(unnamed))
        shipments.update(existing)
        todo = [es[0].payload for r, es in unnamed.items() if r not in existing]
        if todo:
            await masters.load_parties(str(p.get("customer")) for p in todo)
            await masters.load_products(str(i.get("sku")) for p in todo for i in p.get("lines") or [])
            await masters.load_locations([self.settings.delivery_from, "CUSTOMER"])
            currency = await self._currency(masters)

            def build(ref: str, payload: Mapping[str, Any]) -> mapping.Plan:
                if not payload.get("lines"):
                    raise MappingError("a delivery needs a shipment_ref or lines")
                return mapping.out_shipment(
                    masters,
                    ref,
                    payload,
                    masters.location(self.settings.delivery_from),
                    list(payload["lines"]),
                    masters.location("CUSTOMER"),
                    currency,
                )

            created, refused = await self._create(self._plan_all(unnamed, existing, build, failed))
            failed.update(refused)
            shipments.update(created)
        done = await self._complete("stock.shipment.out", shipments, failed)
        signatures = {}
        for ref in done:
            attachment = refs[ref][0].attachments.get("signature.png")
            if attachment is None:
                failed[ref] = PermanentConnectorError("the delivery has no signature.png attachment")
                continue
            signatures[ref] = {
                "name": mapping.signature_name(ref),
                "type": "data",
                "data": attachment.data,
                "resource": f"stock.shipment.out,{shipments[ref]}",
                "description": mapping.delivery_note(ref, refs[ref][0].payload),
            }
        await self._attach(signatures, failed)
        return self._outcomes(refs, {r: n for r, n in done.items() if r not in failed}, failed)

    async def _attach(self, attachments: dict[str, dict[str, Any]], failed: dict[str, Exception]) -> None:
        """Create the ``ir.attachment`` records not already there (same resource and name)."""
        if not attachments:
            return
        rows = await self.client.execute(
            "ir.attachment",
            "search_read",
            [
                ("resource", "in", sorted({a["resource"] for a in attachments.values()})),
                ("name", "in", sorted({a["name"] for a in attachments.values()})),
            ],
            0,
            None,
            None,
            ["resource", "name"],
        )
        present = {(r["resource"], r["name"]) for r in rows}
        missing = [k for k, a in attachments.items() if (a["resource"], a["name"]) not in present]

        async def create(chunk: list[str]) -> Sequence[Any]:
            result: Sequence[Any] = await self.client.execute(
                "ir.attachment", "create", [attachments[k] for k in chunk]
            )
            return result

        _, refused = await isolated(missing, create)
        failed.update(refused)

    async def _push_service_reports(self, masters: Masters, events: list[Event]) -> _Outcomes:
        refs = self._refs(events)
        failed: dict[str, Exception] = {}
        existing: dict[str, int] = {}
        markers = {mapping.service_report_marker(r): r for r in refs}
        domain: list[Any] = ["OR", *[("comment", "like", f"%{m}%") for m in markers]]
        rows = await self.client.execute(
            "project.work", "search_read", [("type", "=", "task"), domain], 0, None, [("id", "ASC")], ["comment"]
        )
        for row in rows:
            for marker, ref in markers.items():
                if marker in (row.get("comment") or ""):
                    existing.setdefault(ref, row["id"])
        todo = [es[0].payload for r, es in refs.items() if r not in existing]
        await masters.load_works(str(p.get("work_order")) for p in todo)
        await masters.load_employees(str(p.get("technician")) for p in todo)
        await masters.load_parties(str(p["customer"]) for p in todo if p.get("customer"))
        plans = self._plan_all(refs, existing, lambda ref, p: mapping.service_report(masters, ref, p), failed)
        created, refused = await self._create(plans)
        failed.update(refused)
        works = {**existing, **created}
        files = {}
        for ref, work_id in works.items():
            for name, attachment in refs[ref][0].attachments.items():
                files[f"{ref}/{name}"] = {
                    "name": f"{mapping.uuid_of(ref)} {name}",
                    "type": "data",
                    "data": attachment.data,
                    "resource": f"project.work,{work_id}",
                }
        attach_failed: dict[str, Exception] = {}
        await self._attach(files, attach_failed)
        for key, error in attach_failed.items():
            failed[key.split("/", 1)[0]] = error
        numbers = await self._numbers("project.work", list(works.values()))
        done = {r: numbers[i] for r, i in works.items() if r not in failed and i in numbers}
        return self._outcomes(refs, done, failed)

    async def _push_work_order_updates(self, masters: Masters, events: list[Event]) -> _Outcomes:
        refs = self._refs(events)
        failed: dict[str, Exception] = {}
        await masters.load_works(str(es[0].payload.get("work_order")) for es in refs.values())
        await masters.load_statuses()
        done: dict[str, str] = {}
        queues: dict[str, list[str]] = defaultdict(list)  # work order → its updates, in batch order
        for ref, es in refs.items():
            number = str(es[0].payload.get("work_order"))
            if number not in masters.works:
                failed[ref] = PermanentConnectorError(
                    str(MappingError(f"unknown work order {number!r}: no project.work with this number"))
                )
            elif mapping.work_order_marker(ref) in masters.works[number].comment:
                done[ref] = number
            else:
                queues[number].append(ref)
        comments = {n: masters.works[n].comment for n in queues}
        now = dt.datetime.now(dt.UTC)
        while any(queues.values()):
            batch: dict[str, tuple[int, dict[str, Any]]] = {}
            for number, queue in queues.items():
                if not queue:
                    continue
                ref = queue.pop(0)
                try:
                    values = mapping.work_order_values(masters, ref, refs[ref][0].payload, comments[number], now)
                except MappingError as exc:
                    failed[ref] = PermanentConnectorError(str(exc))
                    continue
                batch[ref] = (masters.works[number].id, values)

            async def write(chunk: list[str], batch: dict[str, tuple[int, dict[str, Any]]] = batch) -> None:
                args: list[Any] = []
                for ref in chunk:
                    args.extend([[batch[ref][0]], batch[ref][1]])
                await self.client.execute("project.work", "write", *args)
                return None

            written, refused = await isolated(list(batch), write)
            failed.update(refused)
            for ref in written:
                number = str(refs[ref][0].payload.get("work_order"))
                comments[number] = batch[ref][1]["comment"]
                done[ref] = number
        return self._outcomes(refs, done, failed)

    async def _contacts(self, party_ids: Sequence[int]) -> dict[int, tuple[str, list[dict[str, Any]]]]:
        """Party id → its name and its active phone, mobile and email contact mechanisms."""
        if not party_ids:
            return {}
        ids = sorted(set(party_ids))
        parties = await self.client.execute("party.party", "read", ids, ["name"])
        mechanisms = await self.client.execute(
            "party.contact_mechanism",
            "search_read",
            [
                ("party", "in", ids),
                ("type", "in", sorted({t for kinds in mapping.CONTACT_FIELDS.values() for t in kinds})),
            ],
            0,
            None,
            [("id", "ASC")],
            ["party", "type", "value", "sequence"],
        )
        by_party: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for mechanism in mechanisms:
            by_party[mechanism["party"]].append(mechanism)
        return {p["id"]: (str(p.get("name") or ""), by_party[p["id"]]) for p in parties}

    async def _push_customer_updates(self, masters: Masters, events: list[Event]) -> _Outcomes:
        """Each update is one ``party.party`` write (name, and its contact mechanisms as one2many operations),
        so it lands whole or not at all; several updates of one customer go in successive rounds, each
        planned on what the previous one left, so two phone changes never create two phone mechanisms."""
        refs = self._refs(events)
        failed: dict[str, Exception] = {}
        done: dict[str, str] = {}
        codes = {ref: str(es[0].payload.get("customer")) for ref, es in refs.items()}
        await masters.load_parties(codes.values())
        queues: dict[str, list[str]] = defaultdict(list)  # customer code → its updates, in batch order
        for ref, code in codes.items():
            try:
                masters.party(code)
            except MappingError as exc:
                failed[ref] = PermanentConnectorError(str(exc))
            else:
                queues[code].append(ref)
        contacts = await self._contacts([masters.parties[code].id for code in queues])
        while any(queues.values()):
            batch: dict[str, tuple[int, dict[str, Any]]] = {}
            for code, queue in queues.items():
                if not queue:
                    continue
                ref = queue.pop(0)
                party_id = masters.parties[code].id
                name, mechanisms = contacts[party_id]
                try:
                    values = mapping.customer_update_values(refs[ref][0].payload, name, mechanisms)
                except MappingError as exc:
                    failed[ref] = PermanentConnectorError(str(exc))
                    continue
                if values:
                    batch[ref] = (party_id, values)
                else:
                    done[ref] = code  # Tryton already holds these values: a retry, or a no-op edit

            async def write(chunk: list[str], batch: dict[str, tuple[int, dict[str, Any]]] = batch) -> None:
                args: list[Any] = []
                for ref in chunk:
                    args.extend([[batch[ref][0]], batch[ref][1]])
                await self.client.execute("party.party", "write", *args)
                return None

            written, refused = await isolated(list(batch), write)
            failed.update(refused)
            for ref in written:
                done[ref] = codes[ref]
            # the next round plans on what this one wrote (a created mechanism is written, not created again)
            contacts.update(await self._contacts([batch[r][0] for r in written if queues[codes[r]]]))
        return self._outcomes(refs, done, failed)
