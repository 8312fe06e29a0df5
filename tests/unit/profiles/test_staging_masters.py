"""Staging master tables: incremental pulls by version, retired rows become deletions."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from erp_connectors.staging import masters


def test_pull_reads_each_change_once_in_pages_and_again_after_an_update(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'staging.db'}")
    masters.create_tables(engine)
    assert masters.is_empty(engine)
    masters.write(
        engine, "product", [{"code": f"P{i}", "name": f"Product {i}", "list_price": "1.00"} for i in range(3)]
    )
    masters.write(engine, "work_order", [{"key": "WO-1", "name": "Fix pump", "customer": "C1", "assignee": "anna"}])
    masters.write(engine, "stock", [{"location": "VAN-01", "sku": "P1", "quantity": 4}])

    first = masters.pull(engine, None, 2)
    assert [d.doc_id for d in first.docs] == ["product:P0", "product:P1"] and first.more
    second = masters.pull(engine, first.cursor, 10)
    assert [d.doc_id for d in second.docs] == ["product:P2", "work_order:WO-1", "stock:VAN-01:P1"]
    assert not second.more
    assert masters.pull(engine, second.cursor, 10).docs == []

    masters.write(engine, "work_order", [{"key": "WO-1", "assignee": "ben"}])
    masters.write(engine, "product", [{"code": "P0", "active": False}])
    third = masters.pull(engine, second.cursor, 10)
    by_id = {d.doc_id: d for d in third.docs}
    assert by_id["work_order:WO-1"].body["assignee"] == "ben"
    assert by_id["work_order:WO-1"].body["customer"] == "C1"  # a partial update keeps the other columns
    assert by_id["work_order:WO-1"].erp_version > second.docs[1].erp_version
    assert by_id["product:P0"].deleted
    assert "version" not in by_id["work_order:WO-1"].body
    engine.dispose()


def test_a_staging_database_of_an_older_release_gains_the_new_columns(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:  # stg_customer as it was before contact e-mails
        conn.execute(
            text(
                "CREATE TABLE stg_customer (code VARCHAR(64) PRIMARY KEY, name VARCHAR(200) NOT NULL, "
                "territory VARCHAR(64), discount_percent VARCHAR(16), phone VARCHAR(64), addresses JSON NOT NULL, "
                "credit_limit VARCHAR(32), internal_rating VARCHAR(16), active BOOLEAN NOT NULL, "
                "version INTEGER NOT NULL, updated_at VARCHAR(40) NOT NULL)"
            )
        )
    masters.create_tables(engine)
    masters.create_tables(engine)  # a second start changes nothing
    masters.write(engine, "customer", [{"code": "C1", "name": "Bakery", "email": "post@bakery.example"}])
    [doc] = masters.pull(engine, None, 10).docs
    assert doc.body["email"] == "post@bakery.example" and doc.body["name"] == "Bakery"
