"""No client can stall the service for others; SIGTERM under load loses no acknowledged report.

Each test runs the server as a real process on loopback. The only timings
asserted are the liveness bounds: a normal client's calls are answered
within 1 s (a gRPC deadline) while misbehaving connections are held open.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import grpc
import pytest
from conftest import (
    CONTROL_PLANE_TOKEN,
    DAY,
    GATEWAY_TOKEN,
    ServerProcess,
    Vendor,
    deployment_pins,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from licensing.client import LicensingClient, LicensingError, Operation
from licensing.v1 import licensing_pb2 as pb
from raw_http2 import RawConnection

from licensing_server.store import DATABASE_NAME

SERVICE = "/licensing.v1.LicenseService/"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
# the liveness bound the specification asks for
ANSWER_WITHIN = 1.0
MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc status")


@pytest.fixture
def server(
    tmp_path: Path, vendor: Vendor, server_processes: Callable[..., ServerProcess]
) -> ServerProcess:
    """A server process with a license in force (valid on the real clock)."""
    running = server_processes(
        tmp_path / "data", vendor, *deployment_pins(time.time()), "--log-level", "WARNING"
    ).start()
    now = time.time()
    with running.client() as admin:
        admin.upload(vendor.issue(effective_at=now - DAY, expires_at=now + 365 * DAY))
    return running


@contextmanager
def raw_connections(port: int, count: int) -> Iterator[list[RawConnection]]:
    with ExitStack() as stack:
        connections = []
        for _ in range(count):
            connection = RawConnection(port)
            stack.callback(connection.close)
            connections.append(connection)
        yield connections


def assert_a_normal_client_is_answered(server: ServerProcess) -> None:
    """Health, GetStatus, CheckWrite and ReportUsage, each within the liveness bound."""
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=ANSWER_WITHIN)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with LicensingClient(server.target, token=CONTROL_PLANE_TOKEN, timeout=ANSWER_WITHIN) as cp:
        assert cp.status().license_valid
        assert cp.check_write("route", Operation.CREATE).allowed
    with LicensingClient(server.target, token=GATEWAY_TOKEN, timeout=ANSWER_WITHIN) as gateway:
        assert gateway.report_usage("gw-normal", 4).state == pb.RUNTIME_STATE_NORMAL


@pytest.mark.parametrize("token", [None, CONTROL_PLANE_TOKEN], ids=["without-token", "with-token"])
def test_half_open_calls_and_idle_reflection_streams_stall_no_one(
    server: ServerProcess, token: str | None
) -> None:
    with (
        raw_connections(server.port, 50) as half_open,
        raw_connections(server.port, 4) as reflecting,
    ):
        methods = ("CheckWrite", "GetStatus", "ReportUsage", "Upload")
        for n in range(1000):
            # headers sent, the request message never
            half_open[n % 50].open_call(SERVICE + methods[n % len(methods)], token)
        for n in range(64):
            reflecting[n % 4].open_call(REFLECTION)
        for connection in (*half_open, *reflecting):
            connection.round_trip()  # the server has read every call opened above

        assert_a_normal_client_is_answered(server)


def test_a_client_that_never_reads_its_answers_does_not_grow_the_server_without_bound(
    server: ServerProcess,
) -> None:
    assert server.process is not None
    request = pb.GetStatusRequest().SerializeToString()
    assert_a_normal_client_is_answered(server)
    before = rss_bytes(server.process.pid)
    # 100 connections x 100 calls (each connection's stream limit, since no answer is ever
    # taken): the server can send each connection one flow-control window, the rest waits
    with raw_connections(server.port, 100) as connections:
        for connection in connections:
            for _ in range(100):
                connection.open_call(SERVICE + "GetStatus", CONTROL_PLANE_TOKEN, request)
            connection.round_trip()  # the server has every call of this connection
        # with the 10,000 calls held, others are served as before
        assert_a_normal_client_is_answered(server)
        during = rss_bytes(server.process.pid)
    assert during - before < 100 * MIB, f"RSS grew by {(during - before) / MIB:.0f} MiB"
    assert_a_normal_client_is_answered(server)


def test_sigterm_under_load_keeps_every_acknowledged_report_and_exits_zero(
    server: ServerProcess, tmp_path: Path
) -> None:
    assert server.process is not None
    acknowledged: list[tuple[str, int]] = []
    enough = threading.Condition()
    stop = threading.Event()

    def gateway(n: int) -> None:
        with LicensingClient(server.target, token=GATEWAY_TOKEN, timeout=10) as client:
            for report in range(100_000):
                if stop.is_set():
                    return
                # a new instance each time: each acknowledged report leaves its own row
                instance_id, cores = f"gw-{n}-{report}", report % 8 + 1
                try:
                    client.report_usage(instance_id, cores)
                except LicensingError:
                    return  # the server is going away
                with enough:
                    acknowledged.append((instance_id, cores))
                    enough.notify_all()

    threads = [threading.Thread(target=gateway, args=(n,), daemon=True) for n in range(16)]
    for thread in threads:
        thread.start()
    with enough:
        assert enough.wait_for(lambda: len(acknowledged) >= 500, timeout=60)
    exit_code = server.terminate(timeout=30)
    stop.set()
    for thread in threads:
        thread.join(30)

    assert exit_code == 0
    assert not any(thread.is_alive() for thread in threads)
    with closing(sqlite3.connect(tmp_path / "data" / DATABASE_NAME)) as db:
        stored = dict(db.execute("SELECT instance_id, cores FROM usage_intervals").fetchall())
    missing = [(i, c) for i, c in acknowledged if stored.get(i) != c]
    assert not missing, f"{len(missing)} acknowledged reports lost, e.g. {missing[:3]}"
