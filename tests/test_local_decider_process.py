"""LocalDecider against a real `python -m licensing_server` process that is killed and restarted.

The only waits are bounded polls for an outcome (the decider noticing the
silence, the restarted server serving); no speed is asserted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from conftest import (
    CONTROL_PLANE_TOKEN,
    DAY,
    ServerProcess,
    Vendor,
    deployment_pins,
)
from licensing.client import LocalDecider, Operation, StalePolicy
from licensing.v1 import licensing_pb2 as pb

# bounds on waiting for something that must happen; far above what it takes
WITHIN = 20.0
MAX_STALENESS = 1.0


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WITHIN
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {WITHIN:g} s"
        time.sleep(0.02)


def licensed_snapshot(decider: LocalDecider) -> bool:
    snapshot = decider.snapshot
    return snapshot is not None and snapshot.HasField("license")


def test_the_decider_outlives_a_killed_server_and_resubscribes_when_it_comes_back(
    tmp_path: Path, vendor: Vendor, server_processes: Callable[..., ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    pins = deployment_pins(time.time())
    server = server_processes(data_dir, vendor, *pins, "--log-level", "WARNING").start()
    now = time.time()
    with server.client() as admin:
        admin.upload(vendor.issue(effective_at=now - DAY, expires_at=now + 365 * DAY))

    def decider(policy: StalePolicy) -> LocalDecider:
        return LocalDecider(
            server.target,
            token=CONTROL_PLANE_TOKEN,
            max_staleness=MAX_STALENESS,
            on_stale=policy,
            initial_backoff=0.05,
            max_backoff=0.5,
        )

    with decider(StalePolicy.STATIC) as static, decider(StalePolicy.CLOSED) as closed:
        for each in (static, closed):
            eventually(lambda d=each: licensed_snapshot(d), "the first snapshot")
        licensed = static.check_write("route", Operation.CREATE)
        assert licensed.allowed
        assert licensed.reason == pb.DECISION_REASON_LICENSED
        updates = static.updates, closed.updates

        server.kill()  # SIGKILL: no goodbye, no end of stream
        assert static.check_write("route", Operation.CREATE) == licensed
        eventually(lambda: static.stale and closed.stale, "staleness")
        assert static.check_write("route", Operation.CREATE) == licensed
        denied = closed.check_write("route", Operation.CREATE)
        assert not denied.allowed
        assert denied.reason == pb.DECISION_REASON_STALE
        assert closed.check_write("route", Operation.READ).allowed

        # the same port and data directory: the deciders find it by themselves
        server_processes(
            data_dir, vendor, *pins, "--log-level", "WARNING", port=server.port
        ).start()
        eventually(
            lambda: static.updates > updates[0] and closed.updates > updates[1],
            "resubscribing",
        )
        eventually(lambda: closed.check_write("route", Operation.CREATE).allowed, "fresh answers")
        assert static.check_write("route", Operation.CREATE) == licensed
