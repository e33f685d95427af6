"""SQLite storage: the one place that opens the database.

One file in the data directory, WAL mode. A call answered with success has
committed: with WAL and synchronous=NORMAL a commit survives the process
being killed at any moment. Usage reports queued together share one
transaction (group commit: a commit carries every ticket queued when it
starts; the gRPC edge gathers them, see server/group_commit.py), so
durability does not cost throughput.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from licensing_server.domain.usage import IntervalRow

DATABASE_NAME = "licensing.db"


class StoreError(Exception):
    pass


def _migration_1(db: sqlite_utils.Database) -> None:
    db.table("deployment").create(
        {"id": int, "deployment_id": str, "deployment_time": float},
        pk="id",
        not_null={"deployment_id", "deployment_time"},
    )
    # one row: what survives a restart besides the tables below
    db.table("service_state").create(
        {
            "id": int,
            "runtime_state": str,
            "grace_ends_at": float,
            "high_water_at": float,
        },
        pk="id",
    )
    db.table("licenses").create(
        {
            "id": int,
            "serial_number": str,
            "customer": str,
            "key_id": str,
            "token": str,
            "token_sha256": str,
            "source": str,
            "received_at": float,
            "effective_at": float,
            "expires_at": float,
            "max_dp_cores": int,
            # pending -> active -> superseded; pending -> replaced
            "status": str,
            "activated_at": float,
            "ended_at": float,
        },
        pk="id",
    )
    db.table("licenses").create_index(["status"])
    db.table("day_evaluations").create(
        {
            "day": str,
            "peak_cores": int,
            "peak_at": float,
            "peak_instances": str,
            "max_dp_cores": int,
            "license_serial_number": str,
            "state_before": str,
            "state_after": str,
            "grace_ends_at": float,
            "evaluated_at": float,
        },
        pk="day",
    )
    db.table("state_changes").create(
        {
            "id": int,
            "changed_at": float,
            "state_before": str,
            "state_after": str,
            "grace_ends_at": float,
            "cause": str,
        },
        pk="id",
    )
    db.table("usage_intervals").create(
        {
            "id": int,
            "instance_id": str,
            "cores": int,
            "started_at": float,
            "last_seen_at": float,
            "ended_at": float,
        },
        pk="id",
    )
    db.table("usage_intervals").create_index(["started_at"])
    db.execute(
        "CREATE INDEX idx_usage_intervals_live ON usage_intervals(id) WHERE ended_at IS NULL"
    )


def _migration_2(db: sqlite_utils.Database) -> None:
    # the license file's token last applied (or matched): an unchanged file is not re-applied
    # over a newer upload, even across a restart
    db.table("service_state").add_column("license_file_token_sha256", str)


def _migration_3(db: sqlite_utils.Database) -> None:
    # each evaluated day's window of instants, so a changed time zone neither skips nor repeats
    # an hour, and how long the service ran in it (a day it barely watched proves nothing)
    days = db.table("day_evaluations")
    days.add_column("starts_at", float)
    days.add_column("ends_at", float)
    days.add_column("observed_seconds", float)
    days.add_column("observed", int)
    # days judged before windows were stored count as observed, as they were judged
    db.execute("UPDATE day_evaluations SET observed = 1")
    # the spans of time the service ran: one per run, extended as it runs
    db.table("service_spans").create(
        {"started_at": float, "ended_at": float}, pk="started_at", not_null={"ended_at"}
    )
    # service_state.grace_ends_at is now the open overage episode's grace end, kept after
    # DP_CORE_EXCEEDED; a deployment already RESTRICTED has an episode whose grace has ended
    db.execute(
        "UPDATE service_state SET grace_ends_at = coalesce("
        "(SELECT max(grace_ends_at) FROM state_changes), high_water_at) "
        "WHERE runtime_state = 'RESTRICTED' AND grace_ends_at IS NULL"
    )


# The schema migrates forward on start: migration N takes user_version N-1 to N.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migration_1,
    _migration_2,
    _migration_3,
]

# the columns of an IntervalRow, in its order
_INTERVAL_COLUMNS = "id, instance_id, cores, started_at, last_seen_at, ended_at"
_UPSERT_INTERVAL = (
    f"INSERT INTO usage_intervals ({_INTERVAL_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
    "last_seen_at = excluded.last_seen_at, ended_at = excluded.ended_at"
)


class UsageTicket:
    __slots__ = ("done", "error", "rows")

    def __init__(self, rows: list[IntervalRow]) -> None:
        self.rows = rows
        self.done = False
        self.error: BaseException | None = None


@dataclass(frozen=True)
class StandingRow:
    """The runtime state as stored: the state and the open overage episode's grace end."""

    runtime_state: str
    grace_ends_at: float | None


@dataclass(frozen=True)
class StateChangeRow:
    changed_at: float
    state_before: str
    state_after: str
    grace_ends_at: float | None
    cause: str


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
        self._queue_lock = threading.Lock()
        self._usage_queue: list[UsageTicket] = []
        # a failed usage commit: later rows were built on the refused ones, so every commit
        # is refused until the caller rebuilds its memory from the store (`reset_usage`)
        self._usage_failure: BaseException | None = None
        try:
            self._migrate()
        except BaseException:
            conn.close()  # a refused database is left as it was, and unlocked
            raise

    def close(self) -> None:
        with self._write_lock:
            self._flush_usage_locked()
            self.db.close()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this server knows "
                f"({len(MIGRATIONS)}): upgrade the server"
            )
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.db.atomic():
                migration(self.db)
                self.db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """One atomic write (or consistent read) of several statements; all or nothing."""
        with self._write_lock:
            try:
                with self.db.atomic():
                    yield self.db
            except sqlite3.Error as error:
                raise StoreError(f"the database could not be written: {error}") from error

    # --- usage: group commit ---------------------------------------------------

    def enqueue_usage(self, rows: list[IntervalRow]) -> UsageTicket:
        """Queue rows in the order the tracker produced them; commit with `commit_usage`."""
        ticket = UsageTicket(rows)
        with self._queue_lock:
            self._usage_queue.append(ticket)
        return ticket

    def commit_usage(self, ticket: UsageTicket) -> None:
        """Return once the ticket's rows are committed (by whichever caller takes the lock)."""
        if not ticket.done:
            with self._write_lock:
                if not ticket.done:
                    self._flush_usage_locked()
        if ticket.error is not None:
            raise StoreError(f"usage could not be stored: {ticket.error}") from ticket.error

    def flush_usage(self) -> None:
        """Commit every queued ticket now (a failure is recorded in the tickets)."""
        with self._write_lock:
            self._flush_usage_locked()

    def _flush_usage_locked(self) -> None:
        with self._queue_lock:
            batch, self._usage_queue = self._usage_queue, []
        if not batch:
            return
        if self._usage_failure is not None:
            self._fail(batch, self._usage_failure)
            return
        rows = [row for ticket in batch for row in ticket.rows]
        conn = self.db.conn
        try:
            # the hot path: the driver's implicit BEGIN and one commit, no savepoint bookkeeping
            conn.executemany(_UPSERT_INTERVAL, rows)
            conn.commit()
        except sqlite3.Error as error:
            conn.rollback()
            self._usage_failure = error
            self._fail(batch, error)
            return
        for ticket in batch:
            ticket.done = True

    @staticmethod
    def _fail(batch: list[UsageTicket], error: BaseException) -> None:
        for ticket in batch:
            ticket.error = error
            ticket.done = True

    @property
    def usage_needs_reset(self) -> bool:
        return self._usage_failure is not None

    def reset_usage(self) -> tuple[list[IntervalRow], int]:
        """Refuse every queued report and return what is stored: the live intervals, next id.

        The caller holds the lock under which it queues usage, so nothing is queued
        meanwhile, and rebuilds its memory from the answer.
        """
        with self._write_lock:
            with self._queue_lock:
                queued, self._usage_queue = self._usage_queue, []
            self._fail(queued, self._usage_failure or StoreError("usage was reset"))
            self._usage_failure = None
            live = [
                tuple(r)
                for r in self.db.execute(
                    f"SELECT {_INTERVAL_COLUMNS} FROM usage_intervals WHERE ended_at IS NULL"
                )
            ]
            return live, self._next_interval_id_locked()

    def write_usage(self, rows: list[IntervalRow]) -> None:
        if rows:
            self.commit_usage(self.enqueue_usage(rows))

    def next_interval_id(self) -> int:
        with self._write_lock:
            return self._next_interval_id_locked()

    def _next_interval_id_locked(self) -> int:
        row = self.db.execute("SELECT coalesce(max(id), 0) + 1 FROM usage_intervals").fetchone()
        return int(row[0])

    def intervals_between(self, start: float, end: float, ttl: float) -> list[IntervalRow]:
        """The intervals that counted at some instant of [start, end)."""
        with self._write_lock:
            self._flush_usage_locked()
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
    ) -> None:
        with self.transaction() as db:
            db.table("deployment").insert(
                {"id": 1, "deployment_id": deployment_id, "deployment_time": deployment_time}
            )
            db.table("service_state").insert(
                {
                    "id": 1,
                    "runtime_state": runtime_state,
                    "grace_ends_at": None,
                    "high_water_at": deployment_time,
                }
            )

    def service_state(self) -> dict[str, Any]:
        with self._write_lock:
            return dict(self.db.table("service_state").get(1))

    def save_time(self, high_water_at: float, spans: list[tuple[float, float]]) -> None:
        """The latest time seen, and the (start, end) spans of time the service ran so far."""
        with self.transaction() as db:
            db.conn.executemany(
                "INSERT INTO service_spans (started_at, ended_at) VALUES (?, ?) "
                "ON CONFLICT(started_at) DO UPDATE SET "
                "ended_at = max(ended_at, excluded.ended_at)",
                spans,
            )
            self._save_high_water(db, high_water_at)

    def spans_between(self, start: float, end: float) -> list[tuple[float, float]]:
        """The stored spans the service ran that overlap [start, end)."""
        with self._write_lock:
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
        """Store one evaluated day and its outcome atomically: a day is evaluated exactly once."""
        row = dict(evaluation, peak_instances=json.dumps(evaluation["peak_instances"]))
        with self.transaction() as db:
            db.table("day_evaluations").insert(row)
            self._update_state(db, standing, change, high_water_at)

    # --- licenses ------------------------------------------------------------------

    def licenses_with_status(self, status: str) -> list[dict[str, Any]]:
        with self._write_lock:
            return list(self.db.table("licenses").rows_where("status = ?", [status], order_by="id"))

    def license_history(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._write_lock:
            return list(self.db.table("licenses").rows_where(order_by="id desc", limit=limit))

    def add_pending_license(self, row: dict[str, Any], at: float, high_water_at: float) -> None:
        """Keep a license until its effective time; it replaces any license already waiting."""
        with self.transaction() as db:
            db.execute(
                "UPDATE licenses SET status = 'replaced', ended_at = ? WHERE status = 'pending'",
                [at],
            )
            db.table("licenses").insert(dict(row, status="pending"))
            self._save_high_water(db, high_water_at)

    def activate_license(
        self,
        row: dict[str, Any],
        at: float,
        standing: StandingRow,
        change: StateChangeRow | None,
        high_water_at: float,
        *,
        was_pending: bool,
    ) -> None:
        """Put a license in force (a new one, or the pending one taking over) atomically."""
        with self.transaction() as db:
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
        return [
            StateChangeRow(
                r["changed_at"], r["state_before"], r["state_after"], r["grace_ends_at"], r["cause"]
            )
            for r in rows
        ]
