"""LocalDecider: CheckWrite answered in-process, equal to the service's own answer.

A real server on port 0 and the decider share the manual clock, so both
decide at the same instant; time moves without the evaluator where a test
says so, and the decider must then apply the change by itself.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from conftest import (
    CONTROL_PLANE_TOKEN,
    DAY,
    START,
    Harness,
    Vendor,
    free_port,
    midnight_after,
)
from licensing.client import (
    LicensingError,
    LocalDecider,
    Operation,
    SnapshotUnavailable,
    StalePolicy,
)
from licensing.snapshot import timestamp
from licensing.v1 import licensing_pb2 as pb
from watching import ARRIVES_WITHIN

from licensing_server.domain.clock import ManualClock

RESOURCES = ["route", "license", "portal"]
FEATURES = ["", "api7-gateway", "api7-portal"]
# what the service refuses to answer: the decider must refuse it the same way
INVALID = [("", Operation.CREATE, ""), ("route", 0, ""), ("route", Operation.READ, "f" * 129)]


@pytest.fixture
def decider_for(harness: Harness) -> Iterator[Callable[..., LocalDecider]]:
    made: list[LocalDecider] = []

    def make(**options: Any) -> LocalDecider:
        options.setdefault("clock", harness.clock)
        decider = LocalDecider(harness.target, token=CONTROL_PLANE_TOKEN, **options)
        made.append(decider)
        return decider

    yield make
    for decider in made:
        decider.close()


def in_step(decider: LocalDecider, harness: Harness) -> None:
    """Wait until the decider holds the snapshot the service publishes now."""
    deadline = time.monotonic() + ARRIVES_WITHIN
    while True:
        seen = decider.updates
        snapshot = decider.snapshot
        if snapshot is not None and snapshot.version == harness.running.feed.published.version:
            return
        assert decider.wait_for_update(seen, deadline - time.monotonic()), "no update arrived"


def service_answer(
    harness: Harness, resource: str, operation: int, feature: str
) -> pb.CheckWriteResponse | LicensingError:
    try:
        return harness.control_plane.check_write(resource, operation, feature)
    except LicensingError as error:
        return error


def local_answer(
    decider: LocalDecider, resource: str, operation: int, feature: str
) -> pb.CheckWriteResponse | LicensingError:
    try:
        return decider.check_write(resource, operation, feature)
    except LicensingError as error:
        return error


def assert_answers_equal(decider: LocalDecider, harness: Harness) -> None:
    asked = [*itertools.product(RESOURCES, Operation, FEATURES), *INVALID]
    for resource, operation, feature in asked:
        ours = local_answer(decider, resource, operation, feature)
        theirs = service_answer(harness, resource, operation, feature)
        if isinstance(theirs, LicensingError):
            assert isinstance(ours, LicensingError), (resource, operation, feature)
            assert (ours.code, ours.reason, ours.message) == (
                theirs.code,
                theirs.reason,
                theirs.message,
            )
        else:
            assert ours == theirs, (resource, operation, feature)


def at(harness: Harness, when: float) -> None:
    """Move the clock without letting the service act on it (no evaluation, no push)."""
    harness.clock.set(when)


def test_local_decisions_equal_check_write_through_a_real_server(
    harness: Harness, vendor: Vendor, decider_for: Callable[..., LocalDecider]
) -> None:
    decider = decider_for()
    in_step(decider, harness)
    assert_answers_equal(decider, harness)  # no license ever installed

    ends_at = START + 40 * DAY + 0.5
    harness.admin.upload(vendor.issue(max_dp_cores=16, expires_at=ends_at))
    in_step(decider, harness)
    assert_answers_equal(decider, harness)

    # over the quota: exceeded from the next midnight, with a grace end
    harness.gateway.report_usage("gw-1", 20)
    harness.advance_to(midnight_after(START))
    in_step(decider, harness)
    assert decider.snapshot is not None
    assert decider.snapshot.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert_answers_equal(decider, harness)

    # a renewal waiting to take over, with another quota and more features
    renewal_at = START + 3 * DAY + 0.25
    harness.admin.upload(
        vendor.issue(
            serial_number="LIC-0002",
            effective_at=renewal_at,
            expires_at=START + 400 * DAY,
            max_dp_cores=8,
            features=["api7-gateway", "api7-portal"],
        )
    )
    in_step(decider, harness)
    for when in (math.nextafter(renewal_at, 0), renewal_at, math.nextafter(renewal_at, math.inf)):
        at(harness, when)
        assert_answers_equal(decider, harness)

    # the takeover applied, then a week over the new quota: restricted
    harness.advance_to(renewal_at)
    in_step(decider, harness)
    assert_answers_equal(decider, harness)
    for n in range(3, 12):
        harness.advance_to(midnight_after(START, n) + 12 * 3600)
        harness.gateway.report_usage("gw-1", 20)
    harness.advance_to(midnight_after(START, 12))
    in_step(decider, harness)
    assert decider.snapshot is not None
    assert decider.snapshot.state == pb.RUNTIME_STATE_RESTRICTED
    assert_answers_equal(decider, harness)


def over_quota_until(harness: Harness, day: int) -> None:
    """20 cores at noon of every day up to `day`, each midnight evaluated (quota 16)."""
    today = int((harness.clock.now() - midnight_after(START, 0)) // DAY)
    for n in range(today, day):
        if harness.clock.now() < midnight_after(START, n) + DAY / 2:
            harness.advance_to(midnight_after(START, n) + DAY / 2)
        harness.gateway.report_usage("gw-1", 20)
    harness.advance_to(midnight_after(START, day))


def around(instant: float) -> list[float]:
    return [math.nextafter(instant, 0), instant, math.nextafter(instant, math.inf)]


def test_local_decisions_equal_check_write_at_the_instants_where_they_change_by_themselves(
    harness: Harness, vendor: Vendor, decider_for: Callable[..., LocalDecider]
) -> None:
    """A grace that began at a license change ends mid-day; then the warning window, the end."""
    harness.admin.upload(vendor.issue(max_dp_cores=32))
    over_quota_until(harness, 1)
    harness.advance_to(midnight_after(START) + 3600.125)
    grace_end = harness.clock.now() + 7 * DAY
    ends_at = START + 45 * DAY + 0.5
    harness.admin.upload(
        vendor.issue(serial_number="LIC-0002", max_dp_cores=16, expires_at=ends_at)
    )
    decider = decider_for()
    in_step(decider, harness)
    assert decider.snapshot is not None
    assert decider.snapshot.grace_end_time == timestamp(grace_end)

    over_quota_until(harness, 8)
    in_step(decider, harness)
    assert decider.snapshot is not None
    assert decider.snapshot.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    messages = []
    for when in around(grace_end):
        at(harness, when)
        assert_answers_equal(decider, harness)
        messages.append(decider.check_write("route", Operation.CREATE).message)
    assert "which ends" in messages[0]
    assert "ended" in messages[1] and "ended" in messages[2]

    over_quota_until(harness, 9)
    in_step(decider, harness)
    assert decider.snapshot is not None
    assert decider.snapshot.state == pb.RUNTIME_STATE_RESTRICTED
    for instant in (ends_at - 30 * DAY, ends_at):
        harness.advance_to(math.nextafter(instant, 0) - DAY / 4)
        in_step(decider, harness)
        for when in around(instant):
            at(harness, when)
            assert_answers_equal(decider, harness)


def test_the_decider_applies_time_driven_changes_on_time_with_the_service_gone(
    harness: Harness, vendor: Vendor, decider_for: Callable[..., LocalDecider]
) -> None:
    ends_at = START + 40 * DAY + 0.5
    harness.admin.upload(vendor.issue(expires_at=ends_at))
    decider = decider_for()
    in_step(decider, harness)
    harness.running.stop(grace=0)

    at(harness, ends_at - 30 * DAY + 1)
    warned = decider.check_write("route", Operation.CREATE)
    assert warned.allowed
    assert [w.kind for w in warned.warnings] == [pb.WARNING_KIND_LICENSE_EXPIRING]
    at(harness, math.nextafter(ends_at, 0))
    assert decider.check_write("route", Operation.CREATE).allowed
    at(harness, ends_at)
    ended = decider.check_write("route", Operation.CREATE)
    assert not ended.allowed
    assert ended.reason == pb.DECISION_REASON_LICENSE_EXPIRED
    assert decider.check_write("route", Operation.DELETE).allowed


def test_a_pending_license_takes_over_locally_at_its_effective_time(
    harness: Harness, vendor: Vendor, decider_for: Callable[..., LocalDecider]
) -> None:
    harness.admin.upload(vendor.issue(features=["api7-gateway"]))
    renewal_at = START + DAY / 2
    harness.admin.upload(
        vendor.issue(
            serial_number="LIC-0002",
            effective_at=renewal_at,
            features=["api7-gateway", "api7-portal"],
        )
    )
    decider = decider_for()
    in_step(decider, harness)
    harness.running.stop(grace=0)
    before = decider.check_write("portal", Operation.CREATE, "api7-portal")
    assert before.reason == pb.DECISION_REASON_FEATURE_NOT_LICENSED
    at(harness, renewal_at)
    after = decider.check_write("portal", Operation.CREATE, "api7-portal")
    assert after.allowed
    assert after.license_serial_number == "LIC-0002"


def test_fail_closed_denies_creates_and_updates_once_stale_and_fail_static_keeps_deciding(
    harness: Harness, vendor: Vendor, decider_for: Callable[..., LocalDecider]
) -> None:
    harness.admin.upload(vendor.issue())
    closed = decider_for(max_staleness=60.0, on_stale=StalePolicy.CLOSED)
    static = decider_for(max_staleness=60.0)
    in_step(closed, harness)
    in_step(static, harness)
    harness.running.stop(grace=0)
    assert not closed.stale
    assert closed.check_write("route", Operation.CREATE).allowed

    harness.clock.advance(61)
    assert closed.stale and static.stale
    for operation in (Operation.CREATE, Operation.UPDATE):
        denied = closed.check_write("route", operation)
        assert not denied.allowed
        assert denied.reason == pb.DECISION_REASON_STALE
        assert "fail-closed" in denied.message
        assert denied.license_serial_number == "LIC-0001"
        assert denied.state == pb.RUNTIME_STATE_NORMAL
    assert closed.check_write("route", Operation.READ).allowed
    assert closed.check_write("route", Operation.DELETE).allowed
    assert closed.check_write("license", Operation.UPDATE).allowed
    kept = static.check_write("route", Operation.CREATE)
    assert kept.allowed
    assert kept.reason == pb.DECISION_REASON_LICENSED


def test_heartbeats_keep_a_decider_fresh_while_nothing_changes(
    harness: Harness, decider_for: Callable[..., LocalDecider]
) -> None:
    harness.running.feed.heartbeat_interval = 0.05
    decider = decider_for(max_staleness=60.0)
    in_step(decider, harness)
    harness.clock.advance(61)
    deadline = time.monotonic() + ARRIVES_WITHIN
    while decider.stale and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not decider.stale
    assert decider.last_update == harness.clock.now()


def test_a_decider_whose_clock_is_behind_never_decides_before_the_services_time(
    harness: Harness, vendor: Vendor, decider_for: Callable[..., LocalDecider]
) -> None:
    ends_at = START + DAY / 4
    harness.admin.upload(vendor.issue(expires_at=ends_at))
    decider = decider_for(clock=ManualClock(START - 2 * DAY))
    in_step(decider, harness)
    assert decider.check_write("route", Operation.CREATE).allowed
    # the service reaches the end and says so; the decider's own clock is still 2 days behind
    harness.advance_to(ends_at)
    deadline = time.monotonic() + ARRIVES_WITHIN
    while decider.check_write("route", Operation.CREATE).allowed:
        assert time.monotonic() < deadline, "the end never reached the decider"
        time.sleep(0.01)
    assert (
        decider.check_write("route", Operation.CREATE).reason == pb.DECISION_REASON_LICENSE_EXPIRED
    )


def test_before_the_first_snapshot_check_write_waits_then_raises() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    with LocalDecider(nobody, first_snapshot_timeout=0.2, max_backoff=0.1) as decider:
        with pytest.raises(SnapshotUnavailable) as raised:
            decider.check_write("route", Operation.CREATE)
        assert raised.value.code == grpc.StatusCode.UNAVAILABLE
        assert decider.stale
        assert decider.last_update is None


def test_a_decider_with_a_bad_token_says_why_it_has_no_snapshot(harness: Harness) -> None:
    with (
        LocalDecider(harness.target, token="wrong", first_snapshot_timeout=1.0) as decider,
        pytest.raises(SnapshotUnavailable) as raised,
    ):
        decider.check_write("route", Operation.CREATE)
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.reason == "INVALID_TOKEN"


def test_a_stream_that_falls_silent_is_dropped_and_subscribed_again(
    harness: Harness, decider_for: Callable[..., LocalDecider], monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = harness.running.feed
    feed.heartbeat_interval = 0.05
    decider = decider_for()
    in_step(decider, harness)
    seen = decider.updates
    # the service stops sending while its messages still promise a heartbeat every 0.05 s:
    # a peer that hangs with the connection open
    monkeypatch.setattr(feed, "_heartbeat_interval", 3600.0)
    assert decider.wait_for_update(seen, ARRIVES_WITHIN)
