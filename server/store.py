"""SQLite storage, the embedded default: the one place that opens the SQLite database.

One file in the data directory, WAL mode, one process (the exclusive lock keeps
a second one out). A call answered with success has committed: with WAL and
synchronous=NORMAL a commit survives the process being killed at any moment.
Usage reports arriving together share one transaction (group commit), so
durability does not cost throughput. Being the only writer, the store keeps
the live usage intervals in memory (a `UsageTracker`) and writes only what a
report changed.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from licensing_server.domain.usage import IntervalRow, UsageInterval, UsageTracker
from licensing_server.migrations import MIGRATIONS, TABLES
from licensing_server.storage import (
    DayJudge,
    DayOutcome,
    GroupCommit,
    SharedState,
    StaleState,
    StandingRow,
    StateChangeRow,
    StoreError,
    UsageReport,
    UsageTicket,
    maybe,
    state_change_row,
)

__all__ = ["DATABASE_NAME", "StandingRow", "StateChangeRow", "Store", "StoreError"]

DATABASE_NAME = "licensing.db"

# the columns of an IntervalRow, in its order
_INTERVAL_COLUMNS = "id, instance_id, cores, started_at, last_seen_at, ended_at"
_UPSERT_INTERVAL = (
    f"INSERT INTO usage_intervals ({_INTERVAL_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
    "last_seen_at = excluded.last_seen_at, ended_at = excluded.ended_at"
)


def _unusable_directory(data_dir: Path, error: OSError) -> str:
    if isinstance(error, FileExistsError):
        return f"the data directory {data_dir} is not a directory"
    return f"the data directory {data_dir} cannot be made: {error.strerror or error}"


def _why_it_cannot_open(data_dir: Path, path: Path, error: sqlite3.Error) -> str:
    """What keeps SQLite from opening the database; only a lock held elsewhere is another server.

    The database file is never opened here: closing any descriptor of it would drop the
    locks this process holds on it, should another store in this process have it open.
    """
    # the primary result code; an error the driver raised itself has none
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return (
            "the database is locked by another process "
            "(is another server using this data directory?)"
        )
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=data_dir)
    except OSError as probe_error:
        return f"the data directory {data_dir} is not writable: {probe_error.strerror}"
    os.close(handle)
    os.unlink(probe)
    if path.exists() and not os.access(path, os.W_OK):
        read_only = os.statvfs(path).f_flag & os.ST_RDONLY
        why = os.strerror(errno.EROFS if read_only else errno.EACCES)
        return f"the database file {path} is not writable: {why}"
    return str(error)


class Store:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / DATABASE_NAME
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(_unusable_directory(data_dir, error)) from None
        conn: sqlite3.Connection | None = None
        try:
            # one connection, shared by threads under _write_lock
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=2.0)
            self.db = sqlite_utils.Database(conn)
            # One server per data directory: the exclusive lock keeps a second one out, and
            # without shared-memory index and per-commit file locks a commit costs a third less.
            self.db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self.db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as error:
            if conn is not None:
                conn.close()
            reason = _why_it_cannot_open(data_dir, self.path, error)
            raise StoreError(f"cannot open {self.path}: {reason}") from None
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._write_lock = threading.Lock()
        self.usage_commits: GroupCommit[list[IntervalRow]] = GroupCommit(
            self._write_lock, self._write_usage_rows
        )
        # the live intervals and the order of queued rows change together under this lock
        self._tracker_lock = threading.Lock()
        self._tracker = UsageTracker(30.0)
        # a failed usage commit: later rows were built on the refused ones, so every commit
        # is refused until memory is rebuilt from the database (`_reset_usage`)
        self._usage_failure: BaseException | None = None
        self._replica_id = uuid.uuid4().hex
        self._closed = threading.Event()
        try:
            self._migrate()
        except BaseException:
            conn.close()  # a refused database is left as it was, and unlocked
            raise

    @property
    def shared(self) -> bool:
        return False  # the exclusive lock: no other process writes this database

    def close(self) -> None:
        self._closed.set()
        with self._write_lock:
            self.usage_commits.flush_locked()
            self.db.close()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this server knows "
                f"({len(MIGRATIONS)}): upgrade the server"
            )
        for migration in MIGRATIONS[version:]:
            with self.db.atomic():
                migration.sqlite(self.db)
                self.db.execute(f"PRAGMA user_version = {migration.number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """One atomic write (or consistent read) of several statements; all or nothing."""
        with self._write_lock:
            try:
                with self.db.atomic():
                    yield self.db
            except sqlite3.Error as error:
                raise StoreError(f"the database could not be written: {error}") from error

    # --- usage: the live intervals in memory, group commit -----------------------------

    def open_usage(self, ttl: float) -> None:
        with self._tracker_lock:
            self._tracker = UsageTracker(ttl)
            self._reset_usage()

    def enqueue_usage(self, report: UsageReport) -> UsageTicket[list[IntervalRow]]:
        with self._tracker_lock:
            rows = self._tracker.report(
                report.instance_id, report.cores, report.stopping, report.received_at
            )
            return self.usage_commits.enqueue(rows)

    def commit_usage(self, ticket: UsageTicket[Any]) -> None:
        try:
            self.usage_commits.commit(ticket)
        except StoreError:
            with self._tracker_lock:
                if self._usage_failure is not None:
                    self._reset_usage()
            raise

    def flush_usage(self) -> None:
        self.usage_commits.flush()

    def expire_usage(self, now: float) -> None:
        with self._tracker_lock:
            rows = self._tracker.expire(now)
            if not rows:
                return
            ticket = self.usage_commits.enqueue(rows)
        self.commit_usage(ticket)

    def live_usage(self, now: float) -> tuple[int, int]:
        with self._tracker_lock:
            return self._tracker.current_total(now)

    @property
    def usage_version(self) -> int:
        return self._tracker.version

    def refresh_live_usage(self, now: float) -> None:
        pass  # memory is the live usage: this process takes every report

    def _write_usage_rows(self, batches: list[list[IntervalRow]]) -> None:
        """With the write lock held: one transaction of every queued row, in order."""
        if self._usage_failure is not None:
            raise self._usage_failure
        conn = self.db.conn
        try:
            # the hot path: the driver's implicit BEGIN and one commit, no savepoint bookkeeping
            conn.executemany(_UPSERT_INTERVAL, [row for rows in batches for row in rows])
            conn.commit()
        except sqlite3.Error as error:
            conn.rollback()
            self._usage_failure = error
            raise

    def _reset_usage(self) -> None:
        """With the tracker lock held: refuse every queued report and rebuild memory from the
        database, so nothing refused is remembered."""
        with self._write_lock:
            queued = self.usage_commits.take_queued()
            self.usage_commits.fail(queued, self._usage_failure or StoreError("usage was reset"))
            self._usage_failure = None
            try:
                live = [
                    UsageInterval(*row)
                    for row in self.db.execute(
                        f"SELECT {_INTERVAL_COLUMNS} FROM usage_intervals WHERE ended_at IS NULL"
                    )
                ]
                next_id = self._next_interval_id_locked()
            except sqlite3.Error as error:
                raise StoreError(f"the database could not be read: {error}") from error
        version = self._tracker.version
        self._tracker = UsageTracker(self._tracker.ttl, live, next_id=next_id)
        self._tracker.version = version + 1

    def write_usage(self, rows: list[IntervalRow]) -> None:
        """Store rows as they are (a benchmark's fill); the tracker is not told."""
        if rows:
            self.usage_commits.commit(self.usage_commits.enqueue(rows))

    def next_interval_id(self) -> int:
        with self._write_lock:
            return self._next_interval_id_locked()

    def _next_interval_id_locked(self) -> int:
        row = self.db.execute("SELECT coalesce(max(id), 0) + 1 FROM usage_intervals").fetchone()
        return int(row[0])

    def intervals_between(self, start: float, end: float, ttl: float) -> list[IntervalRow]:
        """The intervals that counted at some instant of [start, end)."""
        with self._write_lock:
            self.usage_commits.flush_locked()
            return self._intervals_between_locked(start, end, ttl)

    def _intervals_between_locked(self, start: float, end: float, ttl: float) -> list[IntervalRow]:
        return [
            tuple(r)
            for r in self.db.execute(
                f"SELECT {_INTERVAL_COLUMNS} FROM usage_intervals WHERE started_at < ? "
                "AND coalesce(ended_at, last_seen_at + ?) > ?",
                [end, ttl, start],
            )
        ]

    def prune_usage(self, before: float, ttl: float) -> int:
        """Forget intervals and spans that ended before `before` (already evaluated)."""
        with self.transaction() as db:
            cursor = db.execute(
                "DELETE FROM usage_intervals WHERE coalesce(ended_at, last_seen_at + ?) < ?",
                [ttl, before],
            )
            db.execute("DELETE FROM service_spans WHERE ended_at < ?", [before])
            return int(cursor.rowcount)

    def usage_row_count(self) -> int:
        with self._write_lock:
            return int(self.db.execute("SELECT count(*) FROM usage_intervals").fetchone()[0])

    # --- deployment and service state --------------------------------------------

    def deployment(self) -> dict[str, Any] | None:
        with self._write_lock:
            rows = list(self.db.table("deployment").rows_where("id = 1"))
        return rows[0] if rows else None

    def create_deployment(
        self, deployment_id: str, deployment_time: float, runtime_state: str
    ) -> dict[str, Any]:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO deployment (id, deployment_id, deployment_time) VALUES (1, ?, ?) "
                "ON CONFLICT(id) DO NOTHING",
                [deployment_id, deployment_time],
            )
            db.execute(
                "INSERT INTO service_state (id, runtime_state, high_water_at) VALUES (1, ?, ?) "
                "ON CONFLICT(id) DO NOTHING",
                [runtime_state, deployment_time],
            )
            return dict(db.table("deployment").get(1))

    def service_state(self) -> dict[str, Any]:
        with self._write_lock:
            return dict(self.db.table("service_state").get(1))

    def shared_state(self) -> SharedState:
        with self.transaction() as db:
            state = db.table("service_state").get(1)
            return SharedState(
                revision=state["revision"],
                standing=StandingRow(state["runtime_state"], state["grace_ends_at"]),
                high_water_at=state["high_water_at"] or 0.0,
                active=_newest(db, "licenses", "status = 'active'", "id"),
                pending=_newest(db, "licenses", "status = 'pending'", "id"),
                last_evaluation=maybe(
                    _without_instances, _newest(db, "day_evaluations", None, "day")
                ),
                last_state_change=maybe(state_change_row, _newest(db, "state_changes", None, "id")),
            )

    def revision(self) -> int:
        with self._write_lock:
            row = self.db.execute("SELECT revision FROM service_state WHERE id = 1").fetchone()
        return int(row[0])

    def wait_for_change(self, timeout: float) -> None:
        self._closed.wait(timeout)  # nobody else changes it

    @staticmethod
    def _next_revision(db: sqlite_utils.Database, expected: int) -> int:
        """Inside a transaction: move the revision on from `expected`, or refuse."""
        cursor = db.execute(
            "UPDATE service_state SET revision = revision + 1 WHERE id = 1 AND revision = ?",
            [expected],
        )
        if cursor.rowcount != 1:
            raise StaleState(f"the shared state moved on from revision {expected}")
        return expected + 1

    def save_time(self, high_water_at: float, spans: list[tuple[float, float]]) -> float:
        """The latest time seen, and the (start, end) spans of time the service ran so far."""
        with self.transaction() as db:
            db.conn.executemany(
                "INSERT INTO service_spans (replica_id, started_at, ended_at) VALUES (?, ?, ?) "
                "ON CONFLICT(replica_id, started_at) DO UPDATE SET "
                "ended_at = max(ended_at, excluded.ended_at)",
                [(self._replica_id, start, end) for start, end in spans],
            )
            self._save_high_water(db, high_water_at)
            row = db.execute("SELECT high_water_at FROM service_state WHERE id = 1").fetchone()
            return float(row[0])

    def spans_between(self, start: float, end: float) -> list[tuple[float, float]]:
        """The stored spans the service ran that overlap [start, end)."""
        with self._write_lock:
            return self._spans_between_locked(start, end)

    def _spans_between_locked(self, start: float, end: float) -> list[tuple[float, float]]:
        return [
            (r[0], r[1])
            for r in self.db.execute(
                "SELECT started_at, ended_at FROM service_spans "
                "WHERE started_at < ? AND ended_at > ?",
                [end, start],
            )
        ]

    def license_file_token(self) -> str | None:
        """The SHA-256 of the license token last taken from the license file, if any."""
        with self._write_lock:
            value = self.db.table("service_state").get(1)["license_file_token_sha256"]
        return str(value) if value else None

    def save_license_file_token(self, token_sha256: str) -> None:
        with self.transaction() as db:
            db.table("service_state").update(1, {"license_file_token_sha256": token_sha256})

    @staticmethod
    def _update_state(
        db: sqlite_utils.Database,
        standing: StandingRow,
        change: StateChangeRow | None,
        high_water_at: float,
    ) -> None:
        """Inside a transaction: the runtime state, its change if any, and the time seen."""
        db.execute(
            "UPDATE service_state SET runtime_state = ?, grace_ends_at = ? WHERE id = 1",
            [standing.runtime_state, standing.grace_ends_at],
        )
        if change is not None:
            db.table("state_changes").insert(
                {
                    "changed_at": change.changed_at,
                    "state_before": change.state_before,
                    "state_after": change.state_after,
                    "grace_ends_at": change.grace_ends_at,
                    "cause": change.cause,
                }
            )
        Store._save_high_water(db, high_water_at)

    @staticmethod
    def _save_high_water(db: sqlite_utils.Database, high_water_at: float) -> None:
        db.execute(
            "UPDATE service_state SET high_water_at = max(coalesce(high_water_at, 0), ?) "
            "WHERE id = 1",
            [high_water_at],
        )

    def record_evaluation(
        self,
        evaluation: dict[str, Any],
        standing: StandingRow,
        change: StateChangeRow | None,
        high_water_at: float,
    ) -> None:
        """Store one evaluated day as it is (history made elsewhere, as a test's)."""
        with self.transaction() as db:
            self._insert_day(db, evaluation)
            self._update_state(db, standing, change, high_water_at)
            db.execute("UPDATE service_state SET revision = revision + 1 WHERE id = 1")

    @staticmethod
    def _insert_day(db: sqlite_utils.Database, evaluation: dict[str, Any]) -> None:
        db.table("day_evaluations").insert(
            dict(evaluation, peak_instances=json.dumps(evaluation["peak_instances"]))
        )

    def evaluate_day(
        self,
        starts_at: float,
        ends_at: float,
        judge: DayJudge,
        high_water_at: float,
        *,
        expected_revision: int,
    ) -> tuple[DayOutcome, int]:
        """Store one evaluated day and its outcome atomically: a day is evaluated exactly once."""
        with self._write_lock:
            # every report queued so far counts in the day it was stamped in
            self.usage_commits.flush_locked()
            try:
                with self.db.atomic():
                    revision = self._next_revision(self.db, expected_revision)
                    ttl = self._tracker.ttl
                    outcome = judge(
                        self._intervals_between_locked(starts_at, ends_at, ttl),
                        self._spans_between_locked(starts_at, ends_at),
                    )
                    self._insert_day(self.db, outcome.evaluation)
                    self._update_state(self.db, outcome.standing, outcome.change, high_water_at)
            except sqlite3.Error as error:
                raise StoreError(f"the database could not be written: {error}") from error
        return outcome, revision

    def export_tables(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every table of the deployment's data, as it is stored."""
        with self._write_lock:
            self.usage_commits.flush_locked()
            return {table: list(self.db.table(table).rows) for table in TABLES}

    # --- licenses ------------------------------------------------------------------

    def licenses_with_status(self, status: str) -> list[dict[str, Any]]:
        with self._write_lock:
            return list(self.db.table("licenses").rows_where("status = ?", [status], order_by="id"))

    def license_history(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._write_lock:
            return list(self.db.table("licenses").rows_where(order_by="id desc", limit=limit))

    def add_pending_license(
        self, row: dict[str, Any], at: float, high_water_at: float, *, expected_revision: int
    ) -> int:
        """Keep a license until its effective time; it replaces any license already waiting."""
        with self.transaction() as db:
            revision = self._next_revision(db, expected_revision)
            db.execute(
                "UPDATE licenses SET status = 'replaced', ended_at = ? WHERE status = 'pending'",
                [at],
            )
            db.table("licenses").insert(dict(row, status="pending"))
            self._save_high_water(db, high_water_at)
            return revision

    def activate_license(
        self,
        row: dict[str, Any],
        at: float,
        standing: StandingRow,
        change: StateChangeRow | None,
        high_water_at: float,
        *,
        was_pending: bool,
        expected_revision: int,
    ) -> int:
        """Put a license in force (a new one, or the pending one taking over) atomically."""
        with self.transaction() as db:
            revision = self._next_revision(db, expected_revision)
            db.execute(
                "UPDATE licenses SET status = 'superseded', ended_at = ? WHERE status = 'active'",
                [at],
            )
            if was_pending:
                db.execute(
                    "UPDATE licenses SET status = 'active', activated_at = ? "
                    "WHERE status = 'pending' AND token_sha256 = ?",
                    [at, row["token_sha256"]],
                )
            else:
                db.table("licenses").insert(dict(row, status="active", activated_at=at))
            self._update_state(db, standing, change, high_water_at)
            return revision

    # --- history ---------------------------------------------------------------------

    def day_evaluations(
        self, limit: int, *, with_instances: bool = True, day: str | None = None
    ) -> list[dict[str, Any]]:
        """The latest evaluated days, newest first (or just `day`)."""
        where, params = ("day = ?", [day]) if day else (None, [])
        with self._write_lock:
            rows = list(
                self.db.table("day_evaluations").rows_where(
                    where, params, order_by="day desc", limit=limit
                )
            )
        for row in rows:
            row["peak_instances"] = (
                json.loads(row["peak_instances"] or "[]") if with_instances else []
            )
        return rows

    def peak_instances(self, day: str) -> list[tuple[str, int]] | None:
        """The (instance_id, cores) that made up `day`'s peak; None if it was not evaluated.

        They are kept as one JSON list per day and paged in Python: a day is written once,
        so an offset into its list names the same instance on every read.
        """
        with self._write_lock:
            row = self.db.execute(
                "SELECT peak_instances FROM day_evaluations WHERE day = ?", [day]
            ).fetchone()
        if row is None:
            return None
        return [(str(i), int(c)) for i, c in json.loads(row[0] or "[]")]

    def state_changes(self, limit: int) -> list[StateChangeRow]:
        with self._write_lock:
            rows = list(self.db.table("state_changes").rows_where(order_by="id desc", limit=limit))
        return [state_change_row(r) for r in rows]


def _newest(
    db: sqlite_utils.Database, table: str, where: str | None, order: str
) -> dict[str, Any] | None:
    rows = list(db.table(table).rows_where(where, order_by=f"{order} desc", limit=1))
    return rows[0] if rows else None


def _without_instances(row: dict[str, Any]) -> dict[str, Any]:
    return dict(row, peak_instances=[])
