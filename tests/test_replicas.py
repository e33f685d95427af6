"""Several replicas on one PostgreSQL database: any replica serves, none counts twice, a change
through one is in force on all within a second, and a lost replica or connection loses nothing
that was acknowledged."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from conftest import (
    ADMIN_TOKEN,
    CONTROL_PLANE_TOKEN,
    DAY,
    GATEWAY_TOKEN,
    START,
    Harness,
    ServerProcess,
    TcpProxy,
    Vendor,
    deployment_pins,
    harness_for,
    midnight_after,
    read_database,
    server_config,
    terminate_server_connections,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from licensing.client import LicensingClient, LicensingError, Operation
from licensing.v1 import licensing_pb2 as pb

from licensing_server.domain.clock import ManualClock
from licensing_server.postgres_store import PostgresStore

GATEWAYS = 200
# every instance still counts when the replicas are asked
TTL_SECONDS = "3600"
JOIN_TIMEOUT = 120.0
# the issue's bound; the tests poll longer, to report a clear failure when it is missed
PROPAGATION_BOUND = 1.0
POLL_DEADLINE = 10.0
LICENSING_SERVICE = "licensing.v1.LicenseService"


def current_license(vendor: Vendor, **overrides: object) -> str:
    """A license valid on the real clock, for replicas running on the wall clock."""
    now = time.time()
    claims: dict[str, object] = {"effective_at": now - DAY, "expires_at": now + 365 * DAY}
    claims.update(overrides)
    return vendor.issue(**claims)


def start_replicas(
    count: int,
    tmp_path: Path,
    vendor: Vendor,
    server_processes: Callable[..., ServerProcess],
    database_url: str,
    *extra: str,
) -> list[ServerProcess]:
    """`count` replica processes started together on one database (the first start races)."""
    flags = (*deployment_pins(time.time()), "--database-url", database_url, *extra)
    replicas = [server_processes(tmp_path / f"replica-{n}", vendor, *flags) for n in range(count)]
    for replica in replicas:
        replica.launch()
    for replica in replicas:
        replica.wait_serving(60)
    return replicas


def poll(check: Callable[[], bool], deadline: float = POLL_DEADLINE) -> float:
    """Seconds until `check()` held; fails after `deadline` seconds (bounded polling)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > deadline:
            raise AssertionError(f"not so after {deadline} s")
        time.sleep(0.005)
    return time.monotonic() - started


def interval_rows(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT instance_id, cores, started_at, last_seen_at, ended_at FROM usage_intervals"
        ).fetchall()


@dataclass(frozen=True)
class Acknowledged:
    instance_id: str
    cores: int
    received_at: float


def covered(acknowledged: list[Acknowledged], database_url: str) -> list[Acknowledged]:
    """The acknowledged reports that no stored interval covers (none, when nothing was lost)."""
    by_instance: dict[str, list[tuple[Any, ...]]] = {}
    for row in interval_rows(database_url):
        by_instance.setdefault(row[0], []).append(row)
    # a Timestamp carries nanoseconds; a stored time is a double
    slack = 1e-5
    return [
        ack
        for ack in acknowledged
        if not any(
            cores == ack.cores and started - slack <= ack.received_at <= last_seen + slack
            for _, cores, started, last_seen, _ in by_instance.get(ack.instance_id, [])
        )
    ]


def test_200_gateways_through_three_replicas_count_once_and_an_upload_is_everywhere_within_1s(
    tmp_path: Path,
    vendor: Vendor,
    server_processes: Callable[..., ServerProcess],
    database_url: str,
) -> None:
    replicas = start_replicas(
        3, tmp_path, vendor, server_processes, database_url, "--instance-ttl", TTL_SECONDS
    )
    gateways = [LicensingClient(r.target, token=GATEWAY_TOKEN, timeout=30) for r in replicas]
    expected: dict[str, int] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()
    start_together = threading.Barrier(GATEWAYS, timeout=JOIN_TIMEOUT)

    def gateway(n: int) -> None:
        instance_id = f"gw-{n:03d}"
        # every tenth gateway scales between its reports
        cores = [n % 8 + 1, n % 8 + 1, n % 8 + (2 if n % 10 == 0 else 1)]
        try:
            start_together.wait()
            for k, reported in enumerate(cores):
                # each report through the next replica, as a load balancer may send it
                gateways[(n + k) % 3].report_usage(instance_id, reported)
            with lock:
                expected[instance_id] = cores[-1]
        except BaseException as error:  # reported below
            with lock:
                failures.append(error)

    threads = [threading.Thread(target=gateway, args=(n,), daemon=True) for n in range(GATEWAYS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    for client in gateways:
        client.close()
    assert not failures, failures[:3]
    assert len(expected) == GATEWAYS

    fleet = (sum(expected.values()), GATEWAYS)
    for replica in replicas:
        with LicensingClient(replica.target, token=CONTROL_PLANE_TOKEN, timeout=10) as client:

            def shows_the_fleet(client: LicensingClient = client) -> bool:
                status = client.status()
                return (status.current_total_cores, status.live_instances) == fleet

            poll(shows_the_fleet)

    rows = interval_rows(database_url)
    open_rows = [row for row in rows if row[4] is None]
    assert sorted((row[0], row[1]) for row in open_rows) == sorted(expected.items())
    # one interval per instance, two where it scaled: reports through three replicas, one row
    assert len(rows) == GATEWAYS + GATEWAYS // 10

    with replicas[0].client(ADMIN_TOKEN) as admin:
        admin.upload(current_license(vendor, serial_number="LIC-EVERYWHERE"))
    uploaded = time.monotonic()
    for replica in replicas[1:]:
        with replica.client(CONTROL_PLANE_TOKEN) as client:
            poll(lambda client=client: client.status().license.serial_number == "LIC-EVERYWHERE")
            elapsed = time.monotonic() - uploaded
            assert client.check_write("route", Operation.CREATE).license_serial_number == (
                "LIC-EVERYWHERE"
            )
        assert elapsed <= PROPAGATION_BOUND, f"in force after {elapsed:.3f} s"


class Traffic:
    """Gateways reporting through every replica in turn until stopped; what was acknowledged."""

    def __init__(self, targets: list[str], gateways: int) -> None:
        self.acknowledged: list[Acknowledged] = []
        self.refused: dict[str, int] = {}
        self._targets = targets
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._gateway, args=(n,), daemon=True) for n in range(gateways)
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT)

    def count(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def _gateway(self, n: int) -> None:
        clients = [LicensingClient(t, token=GATEWAY_TOKEN, timeout=10) for t in self._targets]
        instance_id = f"gw-{n:03d}"
        k = 0
        try:
            while not self._stop.is_set():
                cores = 2 + (k // 5) % 2  # scales now and then
                k += 1
                try:
                    answer = clients[(n + k) % len(clients)].report_usage(instance_id, cores)
                except LicensingError as error:
                    with self._lock:
                        self.refused[error.code.name] = self.refused.get(error.code.name, 0) + 1
                    time.sleep(0.01)
                    continue
                received_at = answer.receive_time.ToNanoseconds() / 1e9
                with self._lock:
                    self.acknowledged.append(Acknowledged(instance_id, cores, received_at))
        finally:
            for client in clients:
                client.close()


def test_kill_9_of_a_replica_under_load_loses_no_acknowledged_report(
    tmp_path: Path,
    vendor: Vendor,
    server_processes: Callable[..., ServerProcess],
    database_url: str,
) -> None:
    replicas = start_replicas(
        3, tmp_path, vendor, server_processes, database_url, "--instance-ttl", TTL_SECONDS
    )
    with Traffic([r.target for r in replicas], gateways=30) as traffic:
        poll(lambda: traffic.count() >= 300, deadline=60)
        replicas[1].kill()  # SIGKILL: no drain, nothing flushed
        before = traffic.count()
        poll(lambda: traffic.count() >= before + 300, deadline=60)
    assert traffic.acknowledged
    assert covered(traffic.acknowledged, database_url) == []


def test_connections_terminated_under_load_lose_nothing_acknowledged_and_recover(
    tmp_path: Path,
    vendor: Vendor,
    server_processes: Callable[..., ServerProcess],
    database_url: str,
) -> None:
    replicas = start_replicas(
        3, tmp_path, vendor, server_processes, database_url, "--instance-ttl", TTL_SECONDS
    )
    with Traffic([r.target for r in replicas], gateways=30) as traffic:
        for _ in range(3):
            before = traffic.count()
            poll(lambda before=before: traffic.count() >= before + 200, deadline=60)
            assert terminate_server_connections(database_url) > 0
        before = traffic.count()
        # every replica takes reports again
        poll(lambda: traffic.count() >= before + 300, deadline=60)
    assert covered(traffic.acknowledged, database_url) == []
    for replica in replicas:
        with replica.client(GATEWAY_TOKEN) as gateway:
            assert gateway.report_usage("gw-after", 1).receive_time.seconds > 0
    # what a caller saw while its replica's connection was cut, if it saw anything at all
    assert set(traffic.refused) <= {"UNAVAILABLE"}, traffic.refused


def readiness(target: str, service: str) -> int:
    with grpc.insecure_channel(target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return int(answer.status)


def test_an_unreachable_database_refuses_writes_keeps_decisions_and_recovers_by_itself(
    tmp_path: Path,
    vendor: Vendor,
    server_processes: Callable[..., ServerProcess],
    database_url: str,
) -> None:
    parts = urllib.parse.urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).restore()
    through_proxy = urllib.parse.urlunsplit(
        parts._replace(netloc=f"postgres@127.0.0.1:{proxy.port}")
    )
    [replica] = start_replicas(1, tmp_path, vendor, server_processes, through_proxy)
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    with (
        replica.client(ADMIN_TOKEN) as admin,
        replica.client(GATEWAY_TOKEN) as gateway,
        replica.client(CONTROL_PLANE_TOKEN) as control_plane,
    ):
        admin.upload(current_license(vendor, serial_number="LIC-IN-FORCE"))
        acknowledged = [gateway.report_usage("gw-1", 4)]
        try:
            proxy.cut()
            poll(lambda: readiness(replica.target, LICENSING_SERVICE) == not_serving)
            # the process is alive: liveness stays SERVING, and decisions come from memory
            assert readiness(replica.target, "") == serving
            decision = control_plane.check_write("route", Operation.CREATE)
            assert (decision.allowed, decision.license_serial_number) == (True, "LIC-IN-FORCE")
            for call in (
                lambda: gateway.report_usage("gw-2", 4),
                lambda: admin.upload(current_license(vendor, serial_number="LIC-REFUSED")),
            ):
                with pytest.raises(LicensingError) as refused:
                    call()
                assert (refused.value.code, refused.value.reason) == (
                    grpc.StatusCode.UNAVAILABLE,
                    "STORAGE_UNAVAILABLE",
                )
        finally:
            proxy.restore()
        poll(lambda: readiness(replica.target, LICENSING_SERVICE) == serving, deadline=30)
        acknowledged.append(gateway.report_usage("gw-2", 4))
        assert control_plane.status().license.serial_number == "LIC-IN-FORCE"
    proxy.cut()
    rows = {(row[0], row[1]) for row in interval_rows(database_url)}
    assert rows == {("gw-1", 4), ("gw-2", 4)}
    assert "LIC-REFUSED" not in str(read_database(database_url, PostgresStore.license_history))


# --- midnight on several replicas at once ------------------------------------------------------


class ReplicaDied(Exception):
    pass


@pytest.fixture
def replica_harnesses(
    tmp_path: Path, vendor: Vendor, database_url: str
) -> Iterator[Callable[[int, ManualClock], list[Harness]]]:
    """In-process replicas on one database, sharing a manual clock."""
    stack = ExitStack()

    def start(count: int, clock: ManualClock) -> list[Harness]:
        def one(n: int) -> Harness:
            config = server_config(
                tmp_path / f"replica-{n}", vendor, "--database-url", database_url
            )
            return stack.enter_context(harness_for(config, clock))

        return [one(n) for n in range(count)]

    with stack:
        yield start


def test_each_midnight_is_judged_once_by_whichever_replica_even_when_one_dies_judging_it(
    replica_harnesses: Callable[[int, ManualClock], list[Harness]],
    vendor: Vendor,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ManualClock(START)
    replicas = replica_harnesses(3, clock)
    replicas[0].admin.upload(vendor.issue(max_dp_cores=10))
    expected_peaks = []
    for night in range(4):
        # a different replica dies judging each night
        dying = replicas[night % 3]
        # day's usage through every replica: peak 4 + 4 + 4 (+ night) cores at noon
        clock.set(midnight_after(START, night) + DAY / 2 if night else START + 3600)
        for n, replica in enumerate(replicas):
            replica.gateway.report_usage(f"gw-{n}", 4 + (night if n == 0 else 0))
        expected_peaks.append(12 + night)
        clock.set(midnight_after(START, night + 1))

        store = dying.running.store
        killed = threading.Event()

        def die_with_the_day_written(*args: Any, killed: threading.Event = killed) -> None:
            killed.set()
            raise ReplicaDied("killed inside the evaluation's transaction")

        with monkeypatch.context() as patch:
            patch.setattr(store, "_update_state", die_with_the_day_written)
            with pytest.raises(ReplicaDied):
                dying.service.tick()
        assert killed.is_set()
        # the others tick together; one judges the day, the other finds it judged
        others = [r for r in replicas if r is not dying]
        ticks = [threading.Thread(target=r.service.tick) for r in others]
        for tick in ticks:
            tick.start()
        for tick in ticks:
            tick.join(60)
        dying.service.tick()  # back: it finds the day done

    days = read_database(database_url, lambda store: store.day_evaluations(10))
    assert [(d["day"], d["peak_cores"]) for d in reversed(days)] == [
        (f"2027-01-0{n + 1}", peak) for n, peak in enumerate(expected_peaks)
    ]
    # every replica shows the state stored: over quota (15 > 10) since the first night
    answers: set[tuple[int, float, int]] = set()
    for replica in replicas:
        poll(lambda r=replica: r.control_plane.status().last_evaluated_day.day == "2027-01-04")
        status = replica.control_plane.status()
        grace_end = status.grace_end_time.seconds
        answers.add((status.state, grace_end, status.last_evaluated_day.peak_cores))
    assert answers == {(pb.RUNTIME_STATE_DP_CORE_EXCEEDED, midnight_after(START, 8), 15)}


def test_days_missed_while_every_replica_was_down_are_judged_once_when_they_start_together(
    replica_harnesses: Callable[[int, ManualClock], list[Harness]],
    tmp_path: Path,
    vendor: Vendor,
    database_url: str,
) -> None:
    clock = ManualClock(START)
    [first] = replica_harnesses(1, clock)
    first.admin.upload(vendor.issue())
    first.gateway.report_usage("gw-1", 6)
    first.running.stop(grace=0.5)
    clock.set(midnight_after(START, 5) + 60)

    started: list[Harness] = []
    lock = threading.Lock()

    def start(n: int) -> None:
        config = server_config(tmp_path / f"late-{n}", vendor, "--database-url", database_url)
        harness = harness_for(config, clock)
        entered = harness.__enter__()
        with lock:
            started.append(entered)
            stops.append(harness)

    stops: list[Any] = []
    threads = [threading.Thread(target=start, args=(n,)) for n in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(started) == 3
        days = read_database(database_url, lambda store: store.day_evaluations(10))
        assert [d["day"] for d in reversed(days)] == [f"2027-01-0{n}" for n in range(1, 6)]
        assert days[-1]["peak_cores"] == 6
        assert {h.control_plane.status().last_evaluated_day.day for h in started} == {"2027-01-05"}
    finally:
        for harness in stops:
            harness.__exit__(None, None, None)


def test_every_replica_reads_the_license_file_and_none_puts_it_back_over_a_newer_upload(
    tmp_path: Path, vendor: Vendor, database_url: str
) -> None:
    clock = ManualClock(START)
    license_path = tmp_path / "license.jws"
    license_path.write_text(vendor.issue(serial_number="LIC-FILE"))
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(
                harness_for(
                    server_config(
                        tmp_path / f"replica-{n}",
                        vendor,
                        "--database-url",
                        database_url,
                        "--license-file",
                        str(license_path),
                    ),
                    clock,
                )
            )
            for n in range(2)
        ]
        # the first replica took the file at its start; the second found it taken
        history = read_database(database_url, PostgresStore.license_history)
        assert [row["serial_number"] for row in history] == ["LIC-FILE"]
        replicas[1].admin.upload(vendor.issue(serial_number="LIC-UPLOADED"))
        for replica in replicas:
            poll(lambda r=replica: r.control_plane.status().license.serial_number == "LIC-UPLOADED")
        # a replica started now reads the unchanged file: it does not undo the upload
        late = stack.enter_context(
            harness_for(
                server_config(
                    tmp_path / "replica-late",
                    vendor,
                    "--database-url",
                    database_url,
                    "--license-file",
                    str(license_path),
                ),
                clock,
            )
        )
        assert late.control_plane.status().license.serial_number == "LIC-UPLOADED"
        assert len(read_database(database_url, PostgresStore.license_history)) == 2
