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


def test_reopening_a_current_database_changes_nothing(tmp_path: Path) -> None:
    Store(tmp_path).close()
    Store(tmp_path).close()
    assert user_version(tmp_path / DATABASE_NAME) == len(MIGRATIONS)
