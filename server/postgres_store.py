"""PostgreSQL storage: one database that any number of replicas share.

Every replica takes reports, uploads and evaluations, so nothing another
replica might change is trusted from memory when it is written:

- A usage batch locks the instances it reports (`pg_advisory_xact_lock` on
  each instance, in one order), reads their open intervals and applies the
  reports to them with the same `UsageTracker` rule the SQLite store keeps in
  memory, then writes what changed, all in one transaction. A gateway that
  reaches a different replica with each report so stays one instance, and a
  unique index on the open interval of an instance backs that up.
- Licenses, the runtime state and the evaluated days carry a revision: a
  write names the revision it was decided on and is refused (`StaleState`)
  when another replica moved it meanwhile. Each such write notifies the other
  replicas (LISTEN/NOTIFY) so they reload at once.
- A day is judged inside the transaction that stores it, under an exclusive
  advisory lock that usage batches take shared: the day sees every report
  committed before it, and a report committed after it is placed after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from functools import partial
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from licensing_server.config import redact_database_url
from licensing_server.domain.usage import (
    FleetView,
    IntervalRow,
    UsageInterval,
    UsageTracker,
    placed_after,
)
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
    batches,
    maybe,
    state_change_row,
)

log = logging.getLogger("licensing")

T = TypeVar("T")

# NOTIFY channel of shared-state changes: the payload is the new revision
CHANNEL = "licensing_changes"
# Advisory locks, (space, key) pairs of int4; instances lock in their own space by a hash of
# their ID (two IDs sharing a hash only wait for each other).
LOCK_SPACE = 0x4C494300
EVALUATION_LOCK = (LOCK_SPACE, 1)
MIGRATION_LOCK = (LOCK_SPACE, 2)
INSTANCE_LOCK_SPACE = LOCK_SPACE + 1
# How long a call waits for a connection before it is answered UNAVAILABLE, and how long one
# connection attempt may take.
POOL_TIMEOUT = 3.0
CONNECT_TIMEOUT = 3
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 8
# A lost connection is made again with backoff (1 s, 2 s, ...) for at most this long; then the
# next call that needs one starts afresh, so a database that comes back is found within seconds.
RECONNECT_TIMEOUT = 5.0
# A transaction that lost a race (a deadlock, an interval another replica opened first) or
# whose pooled connection had died while idle is run again, up to this many times in all.
ATTEMPTS = 4
# Instances one usage transaction locks at most: each holds an advisory lock, and the lock
# table every session shares has max_locks_per_transaction x max_connections slots (6,400 by
# PostgreSQL's defaults), so a longer queue (a fleet reconnecting at once) is written in
# several transactions, and a dozen replicas writing at once still fit.
USAGE_BATCH = 500
# Reading the fleet's live intervals (for GetStatus) costs this process about 0.35 ms of CPU
# per 1,000 instances (columns as binary arrays, converted in C, then the view built; read a
# row at a time it took 1.4 ms). A read starts at least this many times its own duration
# after the last one began, so it takes at most about 1/20 of the time: every half second
# (the replica sync's pace) up to 25 ms a read, about 70,000 instances on an idle machine.
FLEET_READ_SPACING = 20
# ids the tracker gives intervals it opens in a batch, before the database numbers them
_PROVISIONAL_IDS = -(2**62)

_INTERVAL_COLUMNS = "id, instance_id, cores, started_at, last_seen_at, ended_at"


def instance_lock_key(instance_id: str) -> int:
    """A stable int4 for an instance ID, the same in every replica."""
    digest = hashlib.blake2b(instance_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _sorted_keys(instance_ids: Iterable[str]) -> list[int]:
    return sorted({instance_lock_key(i) for i in instance_ids})


class PostgresStore:
    def __init__(self, url: str, *, pool_max_size: int = POOL_MAX_SIZE) -> None:
        self._url = url
        self._ttl = 30.0
        self._replica_id = uuid.uuid4().hex
        self._pool = ConnectionPool(
            url,
            min_size=min(POOL_MIN_SIZE, pool_max_size),
            max_size=pool_max_size,
            kwargs={"connect_timeout": CONNECT_TIMEOUT, "application_name": "license-server"},
            timeout=POOL_TIMEOUT,
            reconnect_timeout=RECONNECT_TIMEOUT,
            name="licensing",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=POOL_TIMEOUT + CONNECT_TIMEOUT)
        except (PoolTimeout, psycopg.Error) as error:
            self._pool.close()
            where = redact_database_url(url)
            raise StoreError(f"cannot connect to PostgreSQL at {where}: {error}") from None
        self._usage_lock = threading.Lock()
        self.usage_commits: GroupCommit[UsageReport] = GroupCommit(
            self._usage_lock, self._write_reports, max_batch=USAGE_BATCH
        )
        # the fleet's live intervals, as last read, with this replica's own writes since
        self._fleet_lock = threading.Lock()
        self._fleet = FleetView(self._ttl)
        self._next_fleet_read = 0.0
        # while a read of the fleet is in flight: what this replica wrote meanwhile
        self._written_while_reading: list[list[IntervalRow]] | None = None
        self._listener: psycopg.Connection[Any] | None = None
        self._listener_lock = threading.Lock()
        self._closed = threading.Event()
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    @property
    def shared(self) -> bool:
        return True

    def close(self) -> None:
        self._closed.set()
        with self._usage_lock:
            self.usage_commits.flush_locked()
        with self._listener_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self._pool.close()

    # --- running transactions ------------------------------------------------------------

    def _run(
        self,
        work: Callable[[psycopg.Connection[Any]], T],
        *,
        races: bool = False,
        pipelined: bool = False,
    ) -> T:
        """Run `work` in one transaction and commit it; StoreError when the database fails.

        Run again on a fresh connection, once, when the pooled one had died before the commit
        was sent, and (with `races`) when the transaction lost a race to another replica.
        `pipelined` (libpq's pipeline mode): statements are sent without waiting for the
        answers of those before, so only a read of rows and the commit wait for a round trip.
        """
        reconnected = False
        for attempt in range(1, ATTEMPTS + 1):
            committing = False
            try:
                with (
                    self._pool.connection() as conn,
                    conn.pipeline() if pipelined else nullcontext(),
                ):
                    result = work(conn)
                    committing = True
                    conn.commit()
                return result
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as error:
                if attempt == ATTEMPTS:
                    raise StoreError(f"the database could not be written: {error}") from error
            except psycopg.errors.UniqueViolation as error:
                if not races or attempt == ATTEMPTS:
                    raise StoreError(f"the database could not be written: {error}") from error
            except psycopg.OperationalError as error:
                # a commit that failed may have been made: only an unsent one is tried again
                if committing or reconnected or attempt == ATTEMPTS:
                    raise StoreError(f"the database could not be used: {error}") from error
                reconnected = True
                # the others in the pool died with it (a restarted or failed-over server)
                self._pool.check()
            except psycopg.Error as error:
                raise StoreError(f"the database could not be used: {error}") from error
            except PoolTimeout as error:
                raise StoreError(f"no database connection: {error}") from error
        raise AssertionError("unreachable")

    def _read(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        def read(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            with conn.cursor(row_factory=dict_row) as cursor:
                return cursor.execute(query.encode(), params).fetchall()

        return self._run(read)

    def _migrate(self) -> None:
        def migrate(conn: psycopg.Connection[Any]) -> None:
            # replicas starting together: the first migrates, the others find it done
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL)"
            )
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"the database has schema version {version}, newer than this server knows "
                    f"({len(MIGRATIONS)}): upgrade the server"
                )
            for migration in MIGRATIONS[version:]:
                for statement in migration.postgresql:
                    conn.execute(statement.encode())
                conn.execute(
                    "INSERT INTO schema_version (id, version) VALUES (1, %s) "
                    "ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                    [migration.number],
                )

        self._run(migrate)

    def schema_version(self) -> int:
        return int(self._read("SELECT version FROM schema_version")[0]["version"])

    # --- usage ---------------------------------------------------------------------------

    def open_usage(self, ttl: float) -> None:
        self._ttl = ttl
        with self._fleet_lock:
            self._fleet = FleetView(ttl)
        self.refresh_live_usage(0.0)

    def enqueue_usage(self, report: UsageReport) -> UsageTicket[UsageReport]:
        return self.usage_commits.enqueue(report)

    def commit_usage(self, ticket: UsageTicket[Any]) -> None:
        self.usage_commits.commit(ticket)

    def flush_usage(self) -> None:
        self.usage_commits.flush()

    def _write_reports(self, reports: list[UsageReport]) -> None:
        def apply(tracker: UsageTracker, evaluated_until: float) -> list[IntervalRow]:
            rows: list[IntervalRow] = []
            for report in reports:
                # a day already judged never changes: a report committed after it counts after it
                at = placed_after(report.received_at, evaluated_until)
                rows += tracker.report(report.instance_id, report.cores, report.stopping, at)
            return rows

        self._apply_usage([r.instance_id for r in reports], apply)

    def expire_usage(self, now: float) -> None:
        silent = [
            row[0]
            for row in self._run(
                lambda conn: conn.execute(
                    "SELECT instance_id FROM usage_intervals "
                    "WHERE ended_at IS NULL AND last_seen_at + %s <= %s ORDER BY instance_id",
                    [self._ttl, now],
                ).fetchall()
            )
        ]

        def expire(tracker: UsageTracker, evaluated_until: float) -> list[IntervalRow]:
            return tracker.expire(now)

        # each batch reads its instances afresh under their locks: one that reported since is
        # not silent any more, and the rule leaves it open
        for batch in batches(silent, USAGE_BATCH):
            self._apply_usage(batch, expire)

    def _apply_usage(
        self, instance_ids: list[str], apply: Callable[[UsageTracker, float], list[IntervalRow]]
    ) -> None:
        """One transaction of `_change_usage`, run again when it lost a race to another
        replica; this replica follows what it wrote."""
        rows = self._run(
            partial(self._change_usage, instance_ids=instance_ids, apply=apply),
            races=True,
            # under load a round trip waits for CPUs the whole machine is busy with: a batch
            # makes two, the locks with the read, and the writes with the commit
            pipelined=True,
        )
        self._wrote(rows)

    def _wrote(self, rows: list[IntervalRow]) -> None:
        """After a commit: this replica sees its own reports at once, before the next read."""
        with self._fleet_lock:
            self._fleet.follow(rows)
            if self._written_while_reading is not None:
                self._written_while_reading.append(rows)

    def _change_usage(
        self,
        conn: psycopg.Connection[Any],
        instance_ids: list[str],
        apply: Callable[[UsageTracker, float], list[IntervalRow]],
    ) -> list[IntervalRow]:
        """Lock the instances, apply the rule to their open intervals, write what changed;
        the rows the rule made, in order."""
        # an evaluation waits for the batches in flight (they hold its lock shared), and
        # batches wait for it; then the instances, one at a time across replicas, in one order
        conn.execute(
            "SELECT pg_advisory_xact_lock_shared(%s, %s), "
            "(SELECT count(pg_advisory_xact_lock(%s, k)) FROM "
            "(SELECT k FROM unnest(%s::int4[]) AS t(k) ORDER BY k) AS ordered)",
            [*EVALUATION_LOCK, INSTANCE_LOCK_SPACE, _sorted_keys(instance_ids)],
        )
        # read after the locks are held, so what the last holder committed is seen: the end
        # of the last judged day, and the instances' open intervals
        rows = conn.execute(
            f"SELECT judged.ends_at, {_INTERVAL_COLUMNS} FROM "
            "(SELECT (SELECT ends_at FROM day_evaluations ORDER BY day DESC LIMIT 1) AS ends_at) "
            "AS judged LEFT JOIN usage_intervals "
            "ON instance_id = ANY(%s) AND ended_at IS NULL",
            [sorted(set(instance_ids))],
            # planned for the values given each time: a plan cached while the table was nearly
            # empty (a new deployment) kept scanning the whole table once the fleet had grown,
            # 14 ms a batch at 20,000 instances instead of 1 ms
            prepare=False,
        ).fetchall()
        evaluated_until = rows[0][0] or 0.0
        tracker = UsageTracker(
            self._ttl,
            (UsageInterval(*row[1:]) for row in rows if row[1] is not None),
            next_id=_PROVISIONAL_IDS,
        )
        # rows are whole snapshots of an interval: the last one of each is what to store
        made = apply(tracker, evaluated_until)
        final: dict[int, IntervalRow] = {}
        for row in made:
            final[row[0]] = row
        updates = [row for row in final.values() if row[0] > 0]
        inserts = sorted((row for row in final.values() if row[0] < 0), key=lambda r: r[0])
        # closed before opened: the one open interval of an instance is never two
        if updates:
            conn.execute(
                "UPDATE usage_intervals AS u SET last_seen_at = v.last_seen_at, "
                "ended_at = v.ended_at FROM unnest(%s::bigint[], %s::float8[], %s::float8[]) "
                "AS v(id, last_seen_at, ended_at) WHERE u.id = v.id",
                [[r[0] for r in updates], [r[4] for r in updates], [r[5] for r in updates]],
                prepare=False,  # as the read above
            )
        if inserts:
            conn.execute(
                "INSERT INTO usage_intervals "
                "(instance_id, cores, started_at, last_seen_at, ended_at) "
                "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::float8[], "
                "%s::float8[], %s::float8[])",
                [[r[i] for r in inserts] for i in range(1, 6)],
            )
        return made

    def live_usage(self, now: float) -> tuple[int, int]:
        with self._fleet_lock:
            return self._fleet.current_total(now)

    @property
    def usage_version(self) -> int:
        return self._fleet.version

    def refresh_live_usage(self, now: float) -> None:
        """Read every replica's live intervals (the replica sync asks twice a second; a large
        fleet is read less often, see FLEET_READ_SPACING)."""
        began = time.monotonic()
        if began < self._next_fleet_read:
            return

        def read(conn: psycopg.Connection[Any]) -> tuple[list[Any], ...]:
            # the intervals still counting (the rest can only have lapsed since), a column at
            # a time as a binary array: psycopg converts those in C, where a row at a time
            # took 17 ms of Python at 20,000 instances, holding the GIL the event loop needs
            with conn.cursor(binary=True) as cursor:
                columns = cursor.execute(
                    "SELECT array_agg(instance_id), array_agg(cores), array_agg(started_at), "
                    "array_agg(last_seen_at) FROM usage_intervals "
                    "WHERE ended_at IS NULL AND last_seen_at + %s > %s",
                    [self._ttl, now],
                ).fetchone()
            assert columns is not None  # an aggregate answers one row
            return tuple(column or [] for column in columns)

        with self._fleet_lock:
            self._written_while_reading = []
        try:
            live = self._run(read)
        except BaseException:
            with self._fleet_lock:
                self._written_while_reading = None
            raise
        # built outside the lock: this replica's commits only wait for the swap
        fleet = FleetView(self._ttl, *live)
        with self._fleet_lock:
            written, self._written_while_reading = self._written_while_reading, None
            for rows in written or []:
                fleet.follow(rows)
            # other replicas' reports may have changed it: GetStatus looks afresh
            fleet.version = self._fleet.version + 1
            self._fleet = fleet
        self._next_fleet_read = began + FLEET_READ_SPACING * (time.monotonic() - began)

    def write_usage(self, rows: list[IntervalRow]) -> None:
        """Store rows as they are (a benchmark's fill), numbered as given."""

        def write(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO usage_intervals ({_INTERVAL_COLUMNS}) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                    "last_seen_at = excluded.last_seen_at, ended_at = excluded.ended_at",
                    rows,
                )
            _renumber(conn, "usage_intervals")

        if rows:
            self._run(write)

    def intervals_between(self, start: float, end: float, ttl: float) -> list[IntervalRow]:
        with self._usage_lock:
            self.usage_commits.flush_locked()
        return self._run(lambda conn: _intervals_between(conn, start, end, ttl))

    def prune_usage(self, before: float, ttl: float) -> int:
        def prune(conn: psycopg.Connection[Any]) -> int:
            cursor = conn.execute(
                "DELETE FROM usage_intervals WHERE coalesce(ended_at, last_seen_at + %s) < %s",
                [ttl, before],
            )
            conn.execute("DELETE FROM service_spans WHERE ended_at < %s", [before])
            return cursor.rowcount

        return self._run(prune)

    def usage_row_count(self) -> int:
        return int(self._read("SELECT count(*) AS n FROM usage_intervals")[0]["n"])

    # --- deployment and shared state -------------------------------------------------------

    def deployment(self) -> dict[str, Any] | None:
        rows = self._read("SELECT id, deployment_id, deployment_time FROM deployment WHERE id = 1")
        return rows[0] if rows else None

    def create_deployment(
        self, deployment_id: str, deployment_time: float, runtime_state: str
    ) -> dict[str, Any]:
        def create(conn: psycopg.Connection[Any]) -> dict[str, Any]:
            # replicas starting together: the first row stays, every replica reads it back
            conn.execute(
                "INSERT INTO deployment (id, deployment_id, deployment_time) VALUES (1, %s, %s) "
                "ON CONFLICT (id) DO NOTHING",
                [deployment_id, deployment_time],
            )
            conn.execute(
                "INSERT INTO service_state (id, runtime_state, high_water_at) "
                "VALUES (1, %s, %s) ON CONFLICT (id) DO NOTHING",
                [runtime_state, deployment_time],
            )
            with conn.cursor(row_factory=dict_row) as cursor:
                row = cursor.execute(
                    "SELECT id, deployment_id, deployment_time FROM deployment WHERE id = 1"
                ).fetchone()
            assert row is not None
            return row

        return self._run(create)

    def service_state(self) -> dict[str, Any]:
        return self._read("SELECT * FROM service_state WHERE id = 1")[0]

    def shared_state(self) -> SharedState:
        def read(conn: psycopg.Connection[Any]) -> SharedState:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            with conn.cursor(row_factory=dict_row) as cursor:

                def one(query: str) -> dict[str, Any] | None:
                    return cursor.execute(query.encode()).fetchone()

                state = one("SELECT * FROM service_state WHERE id = 1")
                assert state is not None
                evaluation = one("SELECT * FROM day_evaluations ORDER BY day DESC LIMIT 1")
                return SharedState(
                    revision=state["revision"],
                    standing=StandingRow(state["runtime_state"], state["grace_ends_at"]),
                    high_water_at=state["high_water_at"] or 0.0,
                    active=one(
                        "SELECT * FROM licenses WHERE status = 'active' ORDER BY id DESC LIMIT 1"
                    ),
                    pending=one(
                        "SELECT * FROM licenses WHERE status = 'pending' ORDER BY id DESC LIMIT 1"
                    ),
                    last_evaluation=(
                        dict(evaluation, peak_instances=[]) if evaluation is not None else None
                    ),
                    last_state_change=maybe(
                        state_change_row,
                        one("SELECT * FROM state_changes ORDER BY id DESC LIMIT 1"),
                    ),
                )

        return self._run(read)

    def revision(self) -> int:
        return int(self._read("SELECT revision FROM service_state WHERE id = 1")[0]["revision"])

    def wait_for_change(self, timeout: float) -> None:
        """Block until another replica notifies a change, or `timeout` passes."""
        with self._listener_lock:
            if self._closed.is_set():
                return
            try:
                if self._listener is None or self._listener.closed:
                    self._listener = psycopg.connect(
                        self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                    )
                    self._listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                    pass
            except psycopg.Error as error:
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
                raise StoreError(f"cannot listen for changes: {error}") from error

    @staticmethod
    def _next_revision(conn: psycopg.Connection[Any], expected: int) -> int:
        """Inside a transaction: move the revision on from `expected` and tell the replicas."""
        row = conn.execute(
            "UPDATE service_state SET revision = revision + 1 WHERE id = 1 AND revision = %s "
            "RETURNING revision",
            [expected],
        ).fetchone()
        if row is None:
            raise StaleState(f"the shared state moved on from revision {expected}")
        # delivered when (and only if) the transaction commits
        conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(row[0])])
        return int(row[0])

    @staticmethod
    def _update_state(
        conn: psycopg.Connection[Any],
        standing: StandingRow,
        change: StateChangeRow | None,
        high_water_at: float,
    ) -> None:
        conn.execute(
            "UPDATE service_state SET runtime_state = %s, grace_ends_at = %s, "
            "high_water_at = GREATEST(coalesce(high_water_at, 0), %s) WHERE id = 1",
            [standing.runtime_state, standing.grace_ends_at, high_water_at],
        )
        if change is not None:
            conn.execute(
                "INSERT INTO state_changes "
                "(changed_at, state_before, state_after, grace_ends_at, cause) "
                "VALUES (%s, %s, %s, %s, %s)",
                [
                    change.changed_at,
                    change.state_before,
                    change.state_after,
                    change.grace_ends_at,
                    change.cause,
                ],
            )

    def save_time(self, high_water_at: float, spans: list[tuple[float, float]]) -> float:
        def save(conn: psycopg.Connection[Any]) -> float:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO service_spans (replica_id, started_at, ended_at) "
                    "VALUES (%s, %s, %s) ON CONFLICT (replica_id, started_at) DO UPDATE SET "
                    "ended_at = GREATEST(service_spans.ended_at, excluded.ended_at)",
                    [(self._replica_id, start, end) for start, end in spans],
                )
            row = conn.execute(
                "UPDATE service_state SET high_water_at = GREATEST(coalesce(high_water_at, 0), %s) "
                "WHERE id = 1 RETURNING high_water_at",
                [high_water_at],
            ).fetchone()
            assert row is not None
            return float(row[0])

        return self._run(save)

    def spans_between(self, start: float, end: float) -> list[tuple[float, float]]:
        return self._run(lambda conn: _spans_between(conn, start, end))

    def license_file_token(self) -> str | None:
        value = self.service_state()["license_file_token_sha256"]
        return str(value) if value else None

    def save_license_file_token(self, token_sha256: str) -> None:
        self._run(
            lambda conn: conn.execute(
                "UPDATE service_state SET license_file_token_sha256 = %s WHERE id = 1",
                [token_sha256],
            )
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
        """Judge and store one day in one transaction, one replica at a time: a replica that
        dies in the middle leaves nothing, and the next one finds the day still to do."""
        with self._usage_lock:
            # this replica's queued reports count in the day they were stamped in
            self.usage_commits.flush_locked()

        def evaluate(conn: psycopg.Connection[Any]) -> tuple[DayOutcome, int]:
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", EVALUATION_LOCK)
            revision = self._next_revision(conn, expected_revision)
            outcome = judge(
                _intervals_between(conn, starts_at, ends_at, self._ttl),
                _spans_between(conn, starts_at, ends_at),
            )
            _insert(
                conn,
                "day_evaluations",
                dict(
                    outcome.evaluation,
                    peak_instances=json.dumps(outcome.evaluation["peak_instances"]),
                ),
            )
            self._update_state(conn, outcome.standing, outcome.change, high_water_at)
            return outcome, revision

        return self._run(evaluate)

    # --- licenses ---------------------------------------------------------------------------

    def licenses_with_status(self, status: str) -> list[dict[str, Any]]:
        return self._read("SELECT * FROM licenses WHERE status = %s ORDER BY id", [status])

    def license_history(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._read("SELECT * FROM licenses ORDER BY id DESC LIMIT %s", [limit])

    def add_pending_license(
        self, row: dict[str, Any], at: float, high_water_at: float, *, expected_revision: int
    ) -> int:
        def add(conn: psycopg.Connection[Any]) -> int:
            revision = self._next_revision(conn, expected_revision)
            conn.execute(
                "UPDATE licenses SET status = 'replaced', ended_at = %s WHERE status = 'pending'",
                [at],
            )
            _insert(conn, "licenses", dict(row, status="pending"))
            conn.execute(
                "UPDATE service_state SET high_water_at = GREATEST(coalesce(high_water_at, 0), %s) "
                "WHERE id = 1",
                [high_water_at],
            )
            return revision

        return self._run(add)

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
        def activate(conn: psycopg.Connection[Any]) -> int:
            revision = self._next_revision(conn, expected_revision)
            conn.execute(
                "UPDATE licenses SET status = 'superseded', ended_at = %s WHERE status = 'active'",
                [at],
            )
            if was_pending:
                conn.execute(
                    "UPDATE licenses SET status = 'active', activated_at = %s "
                    "WHERE status = 'pending' AND token_sha256 = %s",
                    [at, row["token_sha256"]],
                )
            else:
                _insert(conn, "licenses", dict(row, status="active", activated_at=at))
            self._update_state(conn, standing, change, high_water_at)
            return revision

        return self._run(activate)

    # --- history ------------------------------------------------------------------------------

    def day_evaluations(
        self, limit: int, *, with_instances: bool = True, day: str | None = None
    ) -> list[dict[str, Any]]:
        if day:
            rows = self._read("SELECT * FROM day_evaluations WHERE day = %s", [day])
        else:
            rows = self._read("SELECT * FROM day_evaluations ORDER BY day DESC LIMIT %s", [limit])
        for row in rows:
            row["peak_instances"] = (
                json.loads(row["peak_instances"] or "[]") if with_instances else []
            )
        return rows

    def peak_instances(self, day: str) -> list[tuple[str, int]] | None:
        rows = self._read("SELECT peak_instances FROM day_evaluations WHERE day = %s", [day])
        if not rows:
            return None
        return [(str(i), int(c)) for i, c in json.loads(rows[0]["peak_instances"] or "[]")]

    def state_changes(self, limit: int) -> list[StateChangeRow]:
        rows = self._read("SELECT * FROM state_changes ORDER BY id DESC LIMIT %s", [limit])
        return [state_change_row(r) for r in rows]

    # --- moving a deployment in -------------------------------------------------------------------

    def is_empty(self) -> bool:
        def count(conn: psycopg.Connection[Any]) -> int:
            total = 0
            for table in TABLES:
                query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                row = conn.execute(query).fetchone()
                total += int(row[0]) if row else 0
            return total

        return self._run(count) == 0

    def import_tables(self, tables: dict[str, list[dict[str, Any]]]) -> None:
        """Copy whole tables into an empty database in one transaction; StoreError if not empty."""

        def copy(conn: psycopg.Connection[Any]) -> None:
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
            for table in TABLES:
                query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
                row = conn.execute(query).fetchone()
                if row and row[0]:
                    raise StoreError(
                        f"the target database is not empty (table {table} has rows): "
                        "a deployment is moved into an empty database only"
                    )
            for table in TABLES:
                for row in tables.get(table, []):
                    _insert(conn, table, row)
            for table in ("licenses", "state_changes", "usage_intervals"):
                _renumber(conn, table)

        self._run(copy)


def _insert(conn: psycopg.Connection[Any], table: str, row: dict[str, Any]) -> None:
    columns = list(row)
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(sql.Placeholder() for _ in columns),
    )
    conn.execute(query, [row[c] for c in columns])


def _renumber(conn: psycopg.Connection[Any], table: str) -> None:
    """After rows came with their own ids: the next id a row gets follows the highest."""
    query = sql.SQL(
        "SELECT setval(pg_get_serial_sequence({table}, 'id'), "
        "coalesce((SELECT max(id) FROM {ident}), 0) + 1, false)"
    ).format(table=sql.Literal(table), ident=sql.Identifier(table))
    conn.execute(query)


def _intervals_between(
    conn: psycopg.Connection[Any], start: float, end: float, ttl: float
) -> list[IntervalRow]:
    rows = conn.execute(
        f"SELECT {_INTERVAL_COLUMNS} FROM usage_intervals WHERE started_at < %s "
        "AND coalesce(ended_at, last_seen_at + %s) > %s",
        [end, ttl, start],
    ).fetchall()
    return [tuple(r) for r in rows]


def _spans_between(
    conn: psycopg.Connection[Any], start: float, end: float
) -> list[tuple[float, float]]:
    rows = conn.execute(
        "SELECT started_at, ended_at FROM service_spans WHERE started_at < %s AND ended_at > %s",
        [end, start],
    ).fetchall()
    return [(r[0], r[1]) for r in rows]
