"""The SQLite store: a versioned schema that migrates forward on start, one server per directory."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import sqlite_utils

from server.store import DATABASE_NAME, MIGRATIONS, Store, StoreError


def user_version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_a_database_of_the_first_schema_migrates_forward_on_start_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    path = tmp_path / DATABASE_NAME
    old = sqlite_utils.Database(path)
    MIGRATIONS[0](old)
    old.execute("PRAGMA user_version = 1")
    old.table("deployment").insert({"id": 1, "deployment_id": "kept", "deployment_time": 1.0})
    old.table("service_state").insert({"id": 1, "runtime_state": "NORMAL", "high_water_at": 5.0})
    old.conn.commit()
    old.close()

    store = Store(tmp_path)
    try:
        assert store.deployment() == {"id": 1, "deployment_id": "kept", "deployment_time": 1.0}
        assert store.service_state()["high_water_at"] == 5.0
        assert store.license_file_token() is None  # a column a later migration added
    finally:
        store.close()
    assert user_version(path) == len(MIGRATIONS)


def test_a_database_newer_than_the_server_is_refused_and_left_alone(tmp_path: Path) -> None:
    Store(tmp_path).close()
    path = tmp_path / DATABASE_NAME
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer than this server"):
        Store(tmp_path)
    assert user_version(path) == len(MIGRATIONS) + 1


def database_content(path: Path) -> tuple[int, list[str]]:
    """The schema version and every schema statement and row, as SQL."""
    with closing(sqlite3.connect(path)) as db:
        return user_version(path), list(db.iterdump())


def a_row_in_every_table(store: Store) -> None:
    """One row of distinct values in each table, whatever columns a migration gave it."""
    with store.transaction() as db:
        for n, table in enumerate(db.table_names()):
            columns = db.execute(f"PRAGMA table_info({table})").fetchall()
            row = {}
            for column in columns:
                name, kind = column[1], column[2].upper()
                if kind == "INTEGER":
                    row[name] = 1 if column[5] else 1000 + n
                elif kind in ("REAL", "FLOAT"):
                    row[name] = 1_800_000_000.5 + n
                else:
                    row[name] = f"{table}.{name}"
            db.table(table).insert(row, replace=True)


def test_reopening_a_current_database_changes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a_row_in_every_table(store)
    store.close()
    path = tmp_path / DATABASE_NAME
    before = database_content(path)
    assert before[0] == len(MIGRATIONS)
    assert any(line.startswith('INSERT INTO "usage_intervals"') for line in before[1])

    Store(tmp_path).close()
    assert database_content(path) == before
