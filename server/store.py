"""SQLite storage: the one place that opens the database.

One file in the data directory, WAL mode. A call answered with success has
committed: with WAL and synchronous=NORMAL a commit survives the process
being killed at any moment. Usage reports arriving together share one
transaction (group commit), so durability does not cost throughput.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from server.domain.usage import IntervalRow

DATABASE_NAME = "licensing.db"
# Group commit. On one busy core the committing thread rarely sees another report queued, so
# once reports have been seen arriving together (a commit carried more than one within the
# last GROUPING_WINDOW seconds) a committer waits GROUP_COMMIT_WAIT for the reports in flight
# to join it, unless GROUP_COMMIT_ENOUGH are queued already. A lone gateway never waits.
GROUP_COMMIT_WAIT = 0.0003
GROUP_COMMIT_ENOUGH = 4
GROUPING_WINDOW = 0.01


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


# The schema migrates forward on start: migration N takes user_version N-1 to N.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_migration_1, _migration_2]

# the columns of an IntervalRow, in its order
_INTERVAL_COLUMNS = "id, instance_id, cores, started_at, last_seen_at, ended_at"
_UPSERT_INTERVAL = (
    f"INSERT INTO usage_intervals ({_INTERVAL_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
    "last_seen_at = excluded.last_seen_at, ended_at = excluded.ended_at"
)


class _UsageTicket:
    __slots__ = ("done", "error", "rows")

    def __init__(self, rows: list[IntervalRow]) -> None:
        self.rows = rows
        self.done = False
        self.error: BaseException | None = None


@dataclass(frozen=True)
class StateChangeRow:
    changed_at: float
    state_before: str
    state_after: str
    grace_ends_at: float | None
    cause: str


class Store:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DATABASE_NAME
        # one connection, shared by threads under _write_lock
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=2.0)
        self.db = sqlite_utils.Database(conn)
        try:
            # One server per data directory: the exclusive lock keeps a second one out, and
            # without shared-memory index and per-commit file locks a commit costs a third less.
            self.db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self.db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as error:
            conn.close()
            raise StoreError(
                f"cannot open {self.path}: {error} (is another server using this data directory?)"
            ) from None
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._usage_queue: list[_UsageTicket] = []
        self._grouping_until = 0.0
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
        """One atomic write (or consistent read) of several statements."""
        with self._write_lock, self.db.atomic():
            yield self.db

    # --- usage: group commit ---------------------------------------------------

    def enqueue_usage(self, rows: list[IntervalRow]) -> _UsageTicket:
        """Queue rows in the order the tracker produced them; commit with `commit_usage`."""
        ticket = _UsageTicket(rows)
        with self._queue_lock:
            self._usage_queue.append(ticket)
        return ticket

    def commit_usage(self, ticket: _UsageTicket) -> None:
        """Return once the ticket's rows are committed (by whichever caller takes the lock)."""
        if not ticket.done:
            with self._write_lock:
                if not ticket.done:
                    if (
                        time.monotonic() < self._grouping_until
                        and len(self._usage_queue) < GROUP_COMMIT_ENOUGH
                    ):
                        # reports are arriving together: let those in flight join this commit
                        time.sleep(GROUP_COMMIT_WAIT)
                    self._flush_usage_locked()
        if ticket.error is not None:
            raise StoreError(f"usage could not be stored: {ticket.error}") from ticket.error

    def _flush_usage_locked(self) -> None:
        with self._queue_lock:
            batch, self._usage_queue = self._usage_queue, []
        if not batch:
            return
        rows = [row for ticket in batch for row in ticket.rows]
        if len(batch) > 1:
            self._grouping_until = time.monotonic() + GROUPING_WINDOW
        conn = self.db.conn
        try:
            # the hot path: the driver's implicit BEGIN and one commit, no savepoint bookkeeping
            conn.executemany(_UPSERT_INTERVAL, rows)
            conn.commit()
        except sqlite3.Error as error:
            conn.rollback()
            for ticket in batch:
                ticket.error = error
        for ticket in batch:
            ticket.done = True

    def write_usage(self, rows: list[IntervalRow]) -> None:
        if rows:
            self.commit_usage(self.enqueue_usage(rows))

    def live_intervals(self) -> list[IntervalRow]:
        with self._write_lock:
            return [
                tuple(r)
                for r in self.db.execute(
                    f"SELECT {_INTERVAL_COLUMNS} FROM usage_intervals WHERE ended_at IS NULL"
                )
            ]

    def next_interval_id(self) -> int:
        with self._write_lock:
            return int(
                self.db.execute("SELECT coalesce(max(id), 0) + 1 FROM usage_intervals").fetchone()[
                    0
                ]
            )

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
        """Forget intervals that stopped counting before `before` (already evaluated)."""
        with self.transaction() as db:
            cursor = db.execute(
                "DELETE FROM usage_intervals WHERE coalesce(ended_at, last_seen_at + ?) < ?",
                [ttl, before],
            )
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

    def save_high_water(self, high_water_at: float) -> None:
        with self.transaction() as db:
            self._update_state(db, None, high_water_at)

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
        db: sqlite_utils.Database, change: StateChangeRow | None, high_water_at: float
    ) -> None:
        """Inside a transaction: the time seen and, when it changed, the runtime state."""
        if change is not None:
            db.table("service_state").update(
                1, {"runtime_state": change.state_after, "grace_ends_at": change.grace_ends_at}
            )
            db.table("state_changes").insert(
                {
                    "changed_at": change.changed_at,
                    "state_before": change.state_before,
                    "state_after": change.state_after,
                    "grace_ends_at": change.grace_ends_at,
                    "cause": change.cause,
                }
            )
        db.execute(
            "UPDATE service_state SET high_water_at = max(coalesce(high_water_at, 0), ?) "
            "WHERE id = 1",
            [high_water_at],
        )

    def record_evaluation(
        self, evaluation: dict[str, Any], change: StateChangeRow | None, high_water_at: float
    ) -> None:
        """Store one evaluated day and its outcome atomically: a day is evaluated exactly once."""
        row = dict(evaluation, peak_instances=json.dumps(evaluation["peak_instances"]))
        with self.transaction() as db:
            db.table("day_evaluations").insert(row)
            self._update_state(db, change, high_water_at)

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
            self._update_state(db, None, high_water_at)

    def activate_license(
        self,
        row: dict[str, Any],
        at: float,
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
            self._update_state(db, change, high_water_at)

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
