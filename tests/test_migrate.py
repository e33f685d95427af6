"""`license-server migrate`: a SQLite deployment moved into PostgreSQL, whole, once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import DAY, START, Harness, Vendor, midnight_after, read_database

from licensing_server.app import main
from licensing_server.migrations import TABLES
from licensing_server.postgres_store import PostgresStore
from licensing_server.store import Store


def every_row(tables: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """Each table's rows, in an order that does not depend on the backend."""
    return {
        table: sorted(repr(sorted(row.items())) for row in rows) for table, rows in tables.items()
    }


def postgres_tables(url: str) -> dict[str, list[dict[str, Any]]]:
    store = PostgresStore(url)
    try:
        return {table: store._read(f"SELECT * FROM {table}") for table in TABLES}
    finally:
        store.close()


def a_deployment_with_history(make_harness: Callable[..., Harness], vendor: Vendor) -> Harness:
    """A SQLite deployment over quota for two days: licenses, days, changes, spans, usage."""
    harness = make_harness()
    harness.admin.upload(vendor.issue(serial_number="LIC-OLD", max_dp_cores=8))
    harness.admin.upload(vendor.issue(serial_number="LIC-NOW", max_dp_cores=8))
    harness.gateway.report_usage("gw-1", 6)
    harness.gateway.report_usage("gw-2", 6)
    harness.advance_to(midnight_after(START))
    harness.gateway.report_usage("gw-1", 6)
    harness.advance_to(midnight_after(START, 2))
    harness.admin.upload(
        vendor.issue(serial_number="LIC-NEXT", effective_at=START + 30 * DAY)
    )  # pending
    return harness


def test_migrate_moves_every_table_of_a_sqlite_deployment_and_a_replica_carries_on(
    database_url: str,
    make_harness: Callable[..., Harness],
    vendor: Vendor,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "data"
    before = a_deployment_with_history(make_harness, vendor)
    status_before = before.control_plane.status()
    history_before = before.control_plane.usage_history(days=10)
    before.running.stop(grace=0.5)
    source = Store(data_dir)
    exported = source.export_tables()
    source.close()
    assert all(exported[table] for table in TABLES), "every table has something to move"

    assert main(["migrate", "--from-data-dir", str(data_dir), "--database-url", database_url]) == 0
    assert "usage_intervals: " in capsys.readouterr().out
    assert every_row(postgres_tables(database_url)) == every_row(exported)

    after = make_harness("--database-url", database_url, data_dir=tmp_path / "replica")
    status_after = after.control_plane.status()
    for field in (
        "deployment_id",
        "deployment_time",
        "state",
        "license",
        "pending_license",
        "grace_end_time",
        "last_evaluated_day",
        "episode_grace_end_time",
        "license_applied_time",
        "last_state_change",
    ):
        assert getattr(status_after, field) == getattr(status_before, field), field
    assert after.control_plane.usage_history(days=10) == history_before
    # the next day is judged where the SQLite deployment left off
    after.advance_to(midnight_after(START, 3))
    days = [d.day for d in after.control_plane.usage_history(days=10).days]
    assert days == ["2027-01-03", "2027-01-02", "2027-01-01"]


def test_migrate_refuses_a_database_that_already_holds_data(
    database_url: str,
    make_harness: Callable[..., Harness],
    vendor: Vendor,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    harness = make_harness()
    harness.admin.upload(vendor.issue())
    harness.running.stop(grace=0.5)
    arguments = ["migrate", "--from-data-dir", str(tmp_path / "data"), "--database-url"]
    assert main([*arguments, database_url]) == 0
    before = postgres_tables(database_url)

    assert main([*arguments, database_url]) == 1
    assert "not empty" in capsys.readouterr().err
    assert every_row(postgres_tables(database_url)) == every_row(before)


def test_migrate_refuses_a_data_directory_without_a_deployment(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["migrate", "--from-data-dir", str(empty), "--database-url", database_url]) == 1
    assert "nothing to move" in capsys.readouterr().err
    assert read_database(database_url, PostgresStore.is_empty)
