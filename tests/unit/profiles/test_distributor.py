"""The distributor without per-user state: who held a document is whom the ledger's previous version matched.

Against an in-memory server (``fake_server``): a reassignment moves a work order and its customer, a restart
reads no user database and still evicts correctly, a row limit holds on incremental adds, the dry run
reports exactly what reconciling then writes, an import of many users costs each new database one read and
one write, and a re-provisioned user is reconciled again.
"""

from __future__ import annotations

from typing import Any

import pytest

from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.naming import user_db_name
from sync_gateway.distribute.distributor import Distributor
from sync_gateway.distribute.plan import plan
from sync_gateway.profiles import ProfileSet, load_profile_text
from tests.unit.profiles.fake_server import FakeServer

PROFILE = """\
name: tech
roles: [tech]
entities:
  work_order:
    selector: {assignee: $user.name}
    fields: {strip: [internal_notes]}
    limit: 3
  customer:
    related: {entity: work_order, field: customer}
  product:
    selector: {}
"""
CONFIG = [{"_id": "config:rules:test", "version": 1}]
ALWAYS = {"config:rules:test", "config:profile", "product:P1"}


def profiles(text: str = PROFILE) -> ProfileSet:
    return ProfileSet((load_profile_text(text, "tech.yaml"),))


def work_order(key: str, assignee: str, customer: str, version: str = "1") -> dict[str, Any]:
    return {
        "_id": f"work_order:{key}",
        "type": "work_order",
        "key": key,
        "assignee": assignee,
        "customer": customer,
        "internal_notes": "not for phones",
        "erp_version": version,
    }


def seed(server: FakeServer) -> None:
    server.dbs.update({"registry": {}, "mirror": {}, "checkpoints": {}})
    for name in ("anna", "ben"):
        db = user_db_name(name)
        server.dbs[db] = {}
        server.dbs["registry"][f"user:{name}"] = {
            "_id": f"user:{name}",
            "_rev": "1-a",
            "type": "user",
            "name": name,
            "db": db,
            "roles": ["tech"],
            "attributes": {},
        }
    for doc in (
        work_order("W1", "anna", "C1"),
        work_order("W2", "anna", "C2"),
        {"_id": "customer:C1", "type": "customer", "code": "C1", "erp_version": "1"},
        {"_id": "customer:C2", "type": "customer", "code": "C2", "erp_version": "1"},
        {"_id": "product:P1", "type": "product", "code": "P1", "erp_version": "1"},
    ):
        server.dbs["mirror"][doc["_id"]] = {**doc, "_rev": "1-m"}


def distributor(couch: CouchClient, text: str = PROFILE) -> Distributor:
    return Distributor(
        couch,
        Checkpoints(couch, "checkpoints"),
        registry_db="registry",
        mirror_db="mirror",
        ledger_db="ledger",
        profiles=profiles(text),
        config_docs=CONFIG,
    )


async def change(server: FakeServer, dist: Distributor, doc: dict[str, Any] | None, doc_id: str) -> None:
    """Write ``doc`` into the mirror (None: delete it) and hand the change to the distributor."""
    mirror = server.dbs["mirror"]
    if doc is None:
        mirror[doc_id] = {"_id": doc_id, "_rev": "9-m", "_deleted": True}
        await dist.on_mirror([{"id": doc_id, "deleted": True, "doc": mirror[doc_id]}])
    else:
        mirror[doc_id] = {**doc, "_rev": "2-m"}
        await dist.on_mirror([{"id": doc_id, "doc": mirror[doc_id]}])


def held(server: FakeServer, user: str) -> set[str]:
    return {i for i in server.live(user_db_name(user)) if not i.startswith("_")}


@pytest.fixture
def server() -> FakeServer:
    fake = FakeServer()
    seed(fake)
    return fake


async def test_a_reassigned_work_order_moves_with_its_customer(server: FakeServer) -> None:
    async with server.client() as couch:
        dist = distributor(couch)
        await dist.start()
        assert held(server, "anna") == ALWAYS | {"work_order:W1", "work_order:W2", "customer:C1", "customer:C2"}
        assert held(server, "ben") == ALWAYS
        assert "internal_notes" not in server.dbs[user_db_name("anna")]["work_order:W1"]

        await change(server, dist, work_order("W1", "ben", "C1", version="2"), "work_order:W1")

    assert held(server, "anna") == ALWAYS | {"work_order:W2", "customer:C2"}
    assert held(server, "ben") == ALWAYS | {"work_order:W1", "customer:C1"}
    assert server.dbs[user_db_name("ben")]["work_order:W1"]["erp_version"] == "2"


async def test_a_restart_reads_no_user_database_and_still_evicts(server: FakeServer) -> None:
    async with server.client() as couch:
        await distributor(couch).start()
        server.reads.clear()
        dist = distributor(couch)
        await dist.start()
        assert not [db for db in server.reads if db.startswith("userdb-")]

        await change(server, dist, None, "work_order:W2")  # deleted in the ERP
        await change(server, dist, work_order("W1", "anna", "C2", version="2"), "work_order:W1")  # other customer

    assert held(server, "anna") == ALWAYS | {"work_order:W1", "customer:C2"}
    assert held(server, "ben") == ALWAYS


async def test_a_row_limit_holds_for_rows_added_later(server: FakeServer) -> None:
    async with server.client() as couch:
        dist = distributor(couch)
        await dist.start()
        await change(server, dist, work_order("W3", "anna", "C1"), "work_order:W3")
        await change(server, dist, work_order("W4", "anna", "C1"), "work_order:W4")

    orders = {i for i in held(server, "anna") if i.startswith("work_order:")}
    assert orders == {"work_order:W1", "work_order:W2", "work_order:W3"}
    assert dist.stats["over_limit"] == 1


async def test_the_dry_run_reports_what_reconciling_then_writes(server: FakeServer) -> None:
    narrower = PROFILE.replace("  product:\n    selector: {}\n", "").replace("{strip: [internal_notes]}", "{}")
    async with server.client() as couch:
        await distributor(couch).start()
        before = {u: held(server, u) for u in ("anna", "ben")}
        report = await plan(
            couch,
            registry_db="registry",
            mirror_db="mirror",
            ledger_db="ledger",
            profiles=profiles(narrower),
            config_docs=CONFIG,
        )
        await distributor(couch, narrower).start()  # the profiles changed: every user is reconciled
    after = {u: held(server, u) for u in ("anna", "ben")}

    changes = {(row["user"], row["entity"]): row for row in report.as_json()["changes"]}
    for user in ("anna", "ben"):
        assert changes[(user, "product")]["evicted"] == len(before[user] - after[user]) == 1
    assert changes[("anna", "work_order")]["changed"] == 2  # internal_notes no longer stripped
    assert server.dbs[user_db_name("anna")]["work_order:W1"]["internal_notes"] == "not for phones"
    assert report.totals().added == sum(len(after[u] - before[u]) for u in after) == 0


def user_record(name: str, updated_at: str = "2026-01-01T00:00:00+00:00") -> dict[str, Any]:
    return {
        "_id": f"user:{name}",
        "_rev": "1-a",
        "type": "user",
        "name": name,
        "db": user_db_name(name),
        "roles": ["tech"],
        "attributes": {},
        "updated_at": updated_at,
    }


async def test_an_import_costs_each_new_database_one_read_and_one_write(server: FakeServer) -> None:
    names = [f"new{i:03d}" for i in range(250)]  # more than one chunk of users
    async with server.client() as couch:
        dist = distributor(couch)
        await dist.start()
        rows = []
        for name in names:
            server.dbs[user_db_name(name)] = {}
            server.dbs["registry"][f"user:{name}"] = user_record(name)
            rows.append({"id": f"user:{name}", "doc": server.dbs["registry"][f"user:{name}"]})
        server.requests.clear()
        await dist.on_registry(rows)
        assert {name: server.requests[user_db_name(name)] for name in names} == dict.fromkeys(names, 2)
        assert server.requests[dist.states.db] == 3 * 2  # per chunk: which are stale, revisions, the write
        assert all(held(server, name) == ALWAYS for name in names)

        server.requests.clear()
        await dist.on_registry(rows)  # the same records again: nothing to do, no user database touched
        assert not [db for db in server.requests if db.startswith("userdb-")]


async def test_a_user_provisioned_again_onto_an_empty_database_gets_its_data_again(server: FakeServer) -> None:
    async with server.client() as couch:
        dist = distributor(couch)
        await dist.start()
        assert held(server, "ben") == ALWAYS
        server.dbs[user_db_name("ben")] = {}  # the database was deleted and created again
        record = user_record("ben", updated_at="2026-02-02T00:00:00+00:00")
        server.dbs["registry"]["user:ben"] = record
        await dist.on_registry([{"id": "user:ben", "doc": record}])
    assert held(server, "ben") == ALWAYS
