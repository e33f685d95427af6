"""An answered report is durable: killing the server process with SIGKILL loses none of them."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from conftest import (
    CONTROL_PLANE_TOKEN,
    GATEWAY_TOKEN,
    Harness,
    ServerProcess,
    Vendor,
    deployment_pins,
)
from licensing.client import LicensingClient

from licensing_server.store import DATABASE_NAME

GATEWAYS = 200
# long enough that every instance still counts when the restarted server is asked
TTL_SECONDS = "3600"
JOIN_TIMEOUT = 60.0


def cores_of(n: int) -> int:
    return n % 8 + 1


def test_concurrent_reports_from_200_gateways_all_survive_a_sigkill_and_restart(
    tmp_path: Path, vendor: Vendor, server_processes: Callable[..., ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    # the same pins for both starts, on the wall clock
    flags = (*deployment_pins(time.time()), "--instance-ttl", TTL_SECONDS)
    first = server_processes(data_dir, vendor, *flags).start()
    assert first.process is not None

    acknowledged: dict[str, int] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()
    start_together = threading.Barrier(GATEWAYS, timeout=JOIN_TIMEOUT)

    def gateway(n: int) -> None:
        instance_id = f"gw-{n:03d}"
        try:
            with LicensingClient(first.target, token=GATEWAY_TOKEN, timeout=30) as client:
                start_together.wait()
                client.report_usage(instance_id, cores_of(n))
            with lock:
                acknowledged[instance_id] = cores_of(n)
        except BaseException as error:  # collected and reported below
            with lock:
                failures.append(error)

    threads = [threading.Thread(target=gateway, args=(n,), daemon=True) for n in range(GATEWAYS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    # killed at once after the last answer: no graceful shutdown, no chance to flush anything
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(10)

    assert not failures, failures[:3]
    assert not any(thread.is_alive() for thread in threads)
    assert len(acknowledged) == GATEWAYS

    with closing(sqlite3.connect(data_dir / DATABASE_NAME)) as db:
        stored = dict(db.execute("SELECT instance_id, cores FROM usage_intervals").fetchall())
    assert stored == acknowledged

    second = server_processes(data_dir, vendor, *flags).start()
    with LicensingClient(second.target, token=CONTROL_PLANE_TOKEN, timeout=10) as client:
        status = client.status()
    assert status.live_instances == GATEWAYS
    assert status.current_total_cores == sum(acknowledged.values())


@pytest.mark.both_backends
def test_reports_arriving_together_share_one_transaction(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = harness.running.store.usage_commits
    batches: list[int] = []
    flush = commits.flush_locked

    def counting_flush() -> None:
        batches.append(len(commits.queue))
        flush()

    monkeypatch.setattr(commits, "flush_locked", counting_flush)
    reports = 20
    threads = [
        threading.Thread(target=harness.gateway.report_usage, args=(f"gw-{n}", 4), daemon=True)
        for n in range(reports)
    ]
    # a commit in progress: the reports arriving meanwhile queue up behind it
    with commits.lock:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + JOIN_TIMEOUT
        while len(commits.queue) < reports and time.monotonic() < deadline:
            time.sleep(0.01)
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert [size for size in batches if size] == [reports]
    status = harness.control_plane.status()
    assert (status.current_total_cores, status.live_instances) == (4 * reports, reports)
