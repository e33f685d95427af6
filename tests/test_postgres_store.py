"""The PostgreSQL store on a real server: the same schema and rules as SQLite, and replicas that
never count an instance twice nor judge a day twice."""

from __future__ import annotations

import itertools
import random
import sqlite3
import tempfile
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import START
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from licensing_server.deployment import load_deployment
from licensing_server.domain.usage import IntervalRow, peak_between
from licensing_server.migrations import MIGRATIONS, TABLES
from licensing_server.postgres_store import PostgresStore
from licensing_server.storage import DayOutcome, StaleState, StandingRow, Storage, UsageReport
from licensing_server.store import DATABASE_NAME, Store

TTL = 30.0


def sqlite_columns(path: Path) -> dict[str, set[str]]:
    with closing(sqlite3.connect(path)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: {c[1] for c in db.execute(f"PRAGMA table_info({t})")} for t in tables}


def postgres_columns(url: str) -> dict[str, set[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema()"
        ).fetchall()
    columns: dict[str, set[str]] = {}
    for table, column in rows:
        columns.setdefault(table, set()).add(column)
    columns.pop("schema_version")  # SQLite keeps its version in the file header
    return columns


def test_every_migration_has_a_step_for_each_backend_numbered_in_order() -> None:
    assert [m.number for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert all(m.sqlite and m.postgresql for m in MIGRATIONS)


def test_both_backends_migrate_to_the_same_tables_and_columns(
    tmp_path: Path, database_url: str
) -> None:
    Store(tmp_path).close()
    PostgresStore(database_url).close()
    sqlite = sqlite_columns(tmp_path / DATABASE_NAME)
    assert set(sqlite) == set(TABLES)
    assert postgres_columns(database_url) == sqlite


def test_a_postgresql_database_newer_than_the_server_is_refused_and_left_alone(
    database_url: str,
) -> None:
    PostgresStore(database_url).close()
    newer = len(MIGRATIONS) + 1
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE schema_version SET version = %s", [newer])
    with pytest.raises(Exception, match="newer than this server"):
        PostgresStore(database_url)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (newer,)


def test_replicas_starting_together_migrate_once_and_agree_on_one_deployment(
    database_url: str,
) -> None:
    replicas = 6
    together = threading.Barrier(replicas, timeout=30)
    made: list[tuple[str, float, int]] = []
    failures: list[BaseException] = []

    def start() -> None:
        try:
            together.wait()
            store = PostgresStore(database_url)
            try:
                deployment = load_deployment(store, None, None, START)
                made.append(
                    (deployment.deployment_id, deployment.deployment_time, store.schema_version())
                )
            finally:
                store.close()
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=start) for _ in range(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    assert len(made) == replicas
    assert len(set(made)) == 1
    assert made[0][2] == len(MIGRATIONS)


# --- one interval rule, two backends --------------------------------------------------------

# (instance, cores, stopping, seconds since the previous report, which replica takes it)
Step = tuple[int, int, bool, float, int]

steps = st.lists(
    st.tuples(
        st.integers(0, 4),
        st.sampled_from([1, 2, 4]),
        # stopping now and then
        st.sampled_from([False, False, False, True]),
        # within the TTL, or a silence longer than it
        st.sampled_from([0.0, 1.0, 10.0, 29.0, 31.0, 90.0]),
        st.integers(0, 1),
    ),
    min_size=1,
    max_size=60,
)


def stored_usage(store: Storage, end: float) -> list[tuple[Any, ...]]:
    """Every interval as stored, without the ids each backend numbers its own way."""
    return sorted(row[1:] for row in store.intervals_between(0.0, end, TTL))


def drive(stores: list[Storage], stream: list[Step]) -> float:
    """Send the stream, each report to its replica; every 7th step a replica expires."""
    now = START
    for n, (instance, cores, stopping, gap, replica) in enumerate(stream):
        now += gap
        store = stores[replica % len(stores)]
        report = UsageReport(f"gw-{instance}", cores, stopping, now)
        store.commit_usage(store.enqueue_usage(report))
        if n % 7 == 6:
            store.expire_usage(now)
    return now


@pytest.fixture
def replicas(database_url: str) -> Any:
    made = [PostgresStore(database_url) for _ in range(2)]
    for store in made:
        store.open_usage(TTL)
    yield made
    for store in made:
        store.close()


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=steps)
def test_the_interval_rule_stores_the_same_usage_on_sqlite_and_through_two_postgresql_replicas(
    replicas: list[PostgresStore], database_url: str, stream: list[Step]
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("TRUNCATE usage_intervals")
    with tempfile.TemporaryDirectory() as directory:
        sqlite = Store(Path(directory))
        try:
            sqlite.open_usage(TTL)
            end = drive([sqlite], stream) + 2 * TTL
            expected = stored_usage(sqlite, end)
            expected_rows = sqlite.usage_row_count()
        finally:
            sqlite.close()
    drive(list(replicas), stream)
    assert stored_usage(replicas[0], end) == expected
    # storage grows with changes in usage, on both alike
    assert replicas[1].usage_row_count() == expected_rows
    rows: list[IntervalRow] = replicas[0].intervals_between(0.0, end, TTL)
    assert (
        peak_between(rows, START, end, TTL).peak_cores
        == peak_between([(0, *row) for row in expected], START, end, TTL).peak_cores
    )


def test_replicas_reporting_the_same_instances_at_once_never_count_one_twice(
    replicas: list[PostgresStore],
) -> None:
    instances, threads_per_replica, reports = 5, 3, 40
    clock_lock = threading.Lock()
    clock = [START]
    failures: list[BaseException] = []

    def gateway_traffic(store: PostgresStore, seed: int) -> None:
        chance = random.Random(seed)
        try:
            for _ in range(reports):
                with clock_lock:
                    clock[0] += 0.5
                    now = clock[0]
                report = UsageReport(
                    f"gw-{chance.randrange(instances)}", chance.choice([2, 4]), False, now
                )
                store.commit_usage(store.enqueue_usage(report))
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [
        threading.Thread(target=gateway_traffic, args=(store, 10 * n + k))
        for n, store in enumerate(replicas)
        for k in range(threads_per_replica)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures[:3]
    rows = replicas[0].intervals_between(0.0, clock[0] + TTL, TTL)
    by_instance: dict[str, list[IntervalRow]] = {}
    for row in rows:
        by_instance.setdefault(row[1], []).append(row)
    for instance_rows in by_instance.values():
        assert sum(1 for row in instance_rows if row[5] is None) == 1
        # one instance's intervals follow each other (a report stamped before the last one
        # seen counts from it, so an interval may end where it began); none overlaps another
        ordered = sorted(instance_rows, key=lambda row: (row[3], row[5] is None, row[5] or 0.0))
        for earlier, later in itertools.pairwise(ordered):
            assert earlier[5] is not None and earlier[5] <= later[3]


# --- a day is judged once --------------------------------------------------------------------


def judged(peak_cores: int) -> Any:
    def judge(intervals: list[IntervalRow], spans: list[tuple[float, float]]) -> DayOutcome:
        return DayOutcome(
            {
                "day": "2027-01-01",
                "peak_cores": peak_cores,
                "peak_at": None,
                "peak_instances": [],
                "max_dp_cores": 16,
                "license_serial_number": "LIC-0001",
                "state_before": "NORMAL",
                "state_after": "NORMAL",
                "grace_ends_at": None,
                "evaluated_at": START + 86_400,
                "starts_at": START,
                "ends_at": START + 86_400,
                "observed_seconds": 0.0,
                "observed": 0,
            },
            StandingRow("NORMAL", None),
            None,
        )

    return judge


def test_two_replicas_judging_the_same_day_at_once_store_it_once(
    replicas: list[PostgresStore],
) -> None:
    for store in replicas:
        store.create_deployment("deployment-under-test", START, "NORMAL")
    revision = replicas[0].revision()
    together = threading.Barrier(2, timeout=30)
    outcomes: list[str] = []

    def evaluate(store: PostgresStore) -> None:
        together.wait()
        try:
            store.evaluate_day(START, START + 86_400, judged(4), START, expected_revision=revision)
            outcomes.append("stored")
        except StaleState:
            outcomes.append("stale")

    threads = [threading.Thread(target=evaluate, args=(store,)) for store in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["stale", "stored"]
    assert [d["day"] for d in replicas[1].day_evaluations(10)] == ["2027-01-01"]
    assert replicas[1].revision() == revision + 1


class ReplicaDied(Exception):
    pass


def test_a_replica_that_dies_while_judging_a_day_leaves_nothing_and_another_judges_it(
    replicas: list[PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    dying, other = replicas
    dying.create_deployment("deployment-under-test", START, "NORMAL")
    revision = dying.revision()

    def die_after_writing_the_day(*args: object) -> None:
        raise ReplicaDied("killed with the day written and not committed")

    monkeypatch.setattr(dying, "_update_state", die_after_writing_the_day)
    with pytest.raises(ReplicaDied):
        dying.evaluate_day(START, START + 86_400, judged(4), START, expected_revision=revision)
    assert other.day_evaluations(10) == []
    assert other.revision() == revision

    other.evaluate_day(START, START + 86_400, judged(4), START, expected_revision=revision)
    assert [(d["day"], d["peak_cores"]) for d in dying.day_evaluations(10)] == [("2027-01-01", 4)]


# --- a whole fleet at once ------------------------------------------------------------------

# the fleet of the open-loop benchmark: far more instances than PostgreSQL's shared lock table
# holds by default (64 x 100 slots, and some slack), were they all locked in one transaction
FLEET_AT_ONCE = 20_000


def test_a_fleet_reporting_all_at_once_is_stored_in_transactions_the_lock_table_can_hold(
    replicas: list[PostgresStore],
) -> None:
    store = replicas[0]
    tickets = [
        store.enqueue_usage(UsageReport(f"gw-{n}", 2, False, START)) for n in range(FLEET_AT_ONCE)
    ]
    store.flush_usage()
    assert [t.error for t in tickets if t.error is not None] == []
    assert all(t.done for t in tickets)
    store.refresh_live_usage(START + 1)
    assert store.live_usage(START + 1) == (2 * FLEET_AT_ONCE, FLEET_AT_ONCE)


def test_a_fleet_falling_silent_all_at_once_is_expired(replicas: list[PostgresStore]) -> None:
    store = replicas[0]
    for n in range(FLEET_AT_ONCE):
        store.enqueue_usage(UsageReport(f"gw-{n}", 2, False, START))
        if n % 500 == 499:  # the fleet came up over a while
            store.flush_usage()
    store.expire_usage(START + TTL)
    rows = store.intervals_between(0.0, START + 2 * TTL, TTL)
    assert len(rows) == FLEET_AT_ONCE
    assert {row[5] for row in rows} == {START + TTL}  # every one closed where it lapsed
