"""The SQLite store: a versioned schema that migrates forward on start, one server per directory."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import sqlite_utils
from conftest import ServerProcess, Vendor

from licensing_server.store import DATABASE_NAME, MIGRATIONS, Store, StoreError


def user_version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_a_database_of_the_first_schema_migrates_forward_on_start_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    path = tmp_path / DATABASE_NAME
    old = sqlite_utils.Database(path)
    MIGRATIONS[0].sqlite(old)
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


# A command prefix under which root too is held to file permissions: without these
# capabilities in its bounding set, a root process cannot write a read-only directory.
DROP_PERMISSION_OVERRIDE = ["--bounding-set", "-dac_override,-dac_read_search", "--"]


def held_to_permissions() -> list[str]:
    """What to run a server under so that read-only means read-only, even for root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root ignores permissions and setpriv is not installed")
    probe = subprocess.run([setpriv, *DROP_PERMISSION_OVERRIDE, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"root ignores permissions and setpriv cannot drop them: {probe.stderr!r}")
    return [setpriv, *DROP_PERMISSION_OVERRIDE]


def refused_start(data_dir: Path, vendor: Vendor) -> str:
    """`python -m licensing_server` on `data_dir`, held to permissions: why it refused to start."""
    process = ServerProcess(data_dir, vendor)
    result = subprocess.run(
        [*held_to_permissions(), *process.args],
        capture_output=True,
        text=True,
        env=process.env,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize("first_start_done", [False, True], ids=["empty", "after-first-start"])
def test_a_read_only_data_directory_is_named_not_blamed_on_another_server(
    tmp_path: Path, vendor: Vendor, first_start_done: bool
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if first_start_done:
        Store(data_dir).close()
    data_dir.chmod(0o555)
    try:
        said = refused_start(data_dir, vendor)
    finally:
        data_dir.chmod(0o755)
    assert f"the data directory {data_dir} is not writable: Permission denied" in said
    assert "another server" not in said
    assert "Traceback" not in said


def test_a_database_file_that_cannot_be_written_is_named(tmp_path: Path, vendor: Vendor) -> None:
    data_dir = tmp_path / "data"
    Store(data_dir).close()
    (data_dir / DATABASE_NAME).chmod(0o444)
    said = refused_start(data_dir, vendor)
    assert (
        f"the database file {data_dir / DATABASE_NAME} is not writable: Permission denied" in said
    )
    assert "another server" not in said


def test_a_data_directory_path_that_is_a_file_is_named(tmp_path: Path, vendor: Vendor) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_text("not a directory")
    said = refused_start(data_dir, vendor)
    assert f"the data directory {data_dir} is not a directory" in said
    assert "Traceback" not in said


HOLD_THE_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("holding", flush=True)
sys.stdin.read()
"""


def test_a_database_locked_by_another_process_is_blamed_on_another_server(
    tmp_path: Path,
) -> None:
    Store(tmp_path).close()
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(tmp_path / DATABASE_NAME)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        try:
            with pytest.raises(StoreError) as raised:
                Store(tmp_path)
        finally:
            holder.communicate("", timeout=10)
    assert "locked by another process" in str(raised.value)
    assert "is another server using this data directory?" in str(raised.value)
