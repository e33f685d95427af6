"""Every completed day evaluated exactly once, in order: across downtime, restarts and clock steps.

Day n is the UTC calendar day that starts `day(n)`; the deployment starts on
day 0 at 10:00. The evaluation at the start of day n + 1 judges day n.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest
from conftest import DAY, START, Harness, Vendor, midnight_after
from licensing.v1 import licensing_pb2 as pb

# storage is part of every rule here: each test runs on SQLite and on PostgreSQL
pytestmark = pytest.mark.both_backends

QUOTA = 16
OVER = 20
HOUR = 3600.0


def day(n: int) -> float:
    return midnight_after(START, n)


def use_on_day(harness: Harness, n: int, cores: int = OVER) -> None:
    harness.advance_to(day(n) + 12 * HOUR)
    harness.gateway.report_usage("gw-1", cores)


def over_quota_on_days(harness: Harness, vendor: Vendor, days: int) -> None:
    """A 16-core license, and 20 cores in use on each of days 0 to days - 1."""
    harness.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    for n in range(days):
        use_on_day(harness, n)


def evaluated_days(harness: Harness) -> list[pb.DayUsage]:
    """Every stored evaluation, oldest first."""
    return list(reversed(harness.control_plane.usage_history(days=100).days))


def restart(harness: Harness, make_harness: Callable[..., Harness], *extra: str) -> Harness:
    """Stop the server and start a new one on the same data directory and clock."""
    harness.running.stop(grace=0.5)
    return make_harness(*extra)


def assert_evaluated_once_each_in_order(
    days: list[pb.DayUsage], first: str, count: int, license_changed: bool = False
) -> None:
    names = [d.day for d in days]
    assert names == sorted(set(names)), "a day evaluated twice or out of order"
    assert names[0] == first
    assert len(names) == count
    if not license_changed:
        # each evaluation starts from the state the one before it left
        for previous, following in itertools.pairwise(days):
            assert following.state_before == previous.state_after


def test_days_missed_while_the_server_was_down_over_three_midnights_are_evaluated_in_order_on_start(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    first = make_harness()
    over_quota_on_days(first, vendor, 2)
    assert [d.day for d in evaluated_days(first)] == ["2027-01-01"]

    # down from noon on day 1 until 01:00 on day 4: the midnights of days 2, 3 and 4 pass
    first.clock.set(day(1) + 12 * HOUR + 10)
    first.running.stop(grace=0.5)
    first.clock.set(day(4) + HOUR)
    second = make_harness()

    days = evaluated_days(second)
    assert [d.day for d in days] == ["2027-01-01", "2027-01-02", "2027-01-03", "2027-01-04"]
    assert_evaluated_once_each_in_order(days, "2027-01-01", 4)
    caught_up = days[1:]
    assert all(d.evaluation_time.seconds == int(day(4) + HOUR) for d in caught_up)
    # the day the server went down keeps the usage reported before it stopped
    assert [d.peak_cores for d in caught_up] == [OVER, 0, 0]
    # it ran for half of day 1 and none of days 2 and 3: those prove nothing, and the
    # overage stands
    assert [d.observed for d in caught_up] == [True, False, False]
    assert [d.observed_duration.ToSeconds() for d in caught_up] == [12 * 3600 + 10, 0, 0]
    assert [d.state_after for d in caught_up] == [pb.RUNTIME_STATE_DP_CORE_EXCEEDED] * 3
    status = second.control_plane.status()
    assert status.last_evaluated_day.day == "2027-01-04"
    assert status.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert status.grace_end_time.seconds == int(day(8))
    # the last change is still the one the evaluation of day 0 made at its midnight
    change = status.last_state_change
    assert change.change_time.seconds == int(day(1))
    assert "evaluation of 2027-01-01" in change.cause


def test_a_restart_right_after_an_evaluation_does_not_evaluate_again(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    first = make_harness()
    over_quota_on_days(first, vendor, 1)
    first.advance_to(day(1))
    before = evaluated_days(first)
    changes_before = list(first.control_plane.usage_history().state_changes)
    assert [d.day for d in before] == ["2027-01-01"]

    second = restart(first, make_harness)
    second.advance_to(day(1) + 1)
    assert evaluated_days(second) == before
    assert list(second.control_plane.usage_history().state_changes) == changes_before
    status = second.control_plane.status()
    assert status.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert status.grace_end_time.seconds == int(day(8))


def test_ticking_again_after_an_evaluation_does_not_evaluate_again(
    harness: Harness, vendor: Vendor
) -> None:
    over_quota_on_days(harness, vendor, 1)
    for _ in range(5):
        harness.advance_to(day(1))
    harness.advance_to(day(2) - 1)
    assert [d.day for d in evaluated_days(harness)] == ["2027-01-01"]


def test_a_clock_jumping_several_days_ahead_evaluates_every_day_between_once_in_order(
    harness: Harness, vendor: Vendor
) -> None:
    over_quota_on_days(harness, vendor, 1)
    # a suspended host waking up ten days later
    harness.advance_to(day(10) + 5 * HOUR)
    days = evaluated_days(harness)
    assert_evaluated_once_each_in_order(days, "2027-01-01", 10)
    assert days[-1].day == "2027-01-10"


def test_a_clock_stepped_back_neither_re_evaluates_nor_extends_the_grace(
    harness: Harness, vendor: Vendor
) -> None:
    over_quota_on_days(harness, vendor, 3)
    harness.advance_to(day(3) + 12 * HOUR)
    latest = day(3) + 12 * HOUR
    assert len(evaluated_days(harness)) == 3
    assert harness.control_plane.status().grace_end_time.seconds == int(day(8))

    # the system clock is set back two days, across two midnights already evaluated
    harness.advance_to(day(1) + 12 * HOUR)
    assert len(evaluated_days(harness)) == 3
    status = harness.control_plane.status()
    assert status.clock.moved_back
    assert status.clock.high_water_time.seconds == int(latest)
    assert status.clock.system_time.seconds == int(day(1) + 12 * HOUR)
    assert pb.WARNING_KIND_CLOCK_MOVED_BACK in [w.kind for w in status.warnings]
    assert status.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert status.grace_end_time.seconds == int(day(8))
    # usage while the clock is behind is recorded from the latest time seen on, as time passes
    answer = harness.gateway.report_usage("gw-1", OVER)
    assert answer.receive_time.seconds == int(latest)
    harness.advance(HOUR)
    answer = harness.gateway.report_usage("gw-1", OVER)
    assert answer.receive_time.seconds == int(latest + HOUR)
    assert len(evaluated_days(harness)) == 3

    # eleven more hours pass: day 3 is evaluated once, at the service's start of day 4, and
    # the grace still ends at the start of day 8
    harness.advance(11 * HOUR - 1)
    assert len(evaluated_days(harness)) == 3
    harness.advance(1)
    assert [d.day for d in evaluated_days(harness)][-1] == "2027-01-04"
    # the operator sets the clock right again
    harness.clock.step(harness.service.now())
    for n in range(4, 8):
        use_on_day(harness, n)
    harness.advance_to(day(8))
    days = evaluated_days(harness)
    assert_evaluated_once_each_in_order(days, "2027-01-01", 8)
    assert days[-1].day == "2027-01-08"
    assert days[-1].state_after == pb.RUNTIME_STATE_RESTRICTED
    assert days[-2].state_after == pb.RUNTIME_STATE_DP_CORE_EXCEEDED


def test_a_restart_with_the_clock_behind_does_not_re_evaluate_and_reports_the_step(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    first = make_harness()
    over_quota_on_days(first, vendor, 2)
    first.advance_to(day(2) + HOUR)
    latest = day(2) + HOUR
    before = evaluated_days(first)
    assert len(before) == 2

    first.running.stop(grace=0.5)
    first.clock.set(day(1) - HOUR)
    second = make_harness()
    assert evaluated_days(second) == before
    status = second.control_plane.status()
    assert status.clock.moved_back
    assert status.clock.high_water_time.seconds == int(latest)
    assert pb.WARNING_KIND_CLOCK_MOVED_BACK in [w.kind for w in status.warnings]
    assert status.grace_end_time.seconds == int(day(8))


def test_days_end_at_midnight_in_the_configured_time_zone(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    # 10:00 UTC on 2027-01-01 is 19:00 in Tokyo; Tokyo's midnight is 15:00 UTC
    harness = make_harness("--timezone", "Asia/Tokyo")
    harness.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    harness.gateway.report_usage("gw-1", OVER)
    harness.advance_to(START + 5 * HOUR - 1)
    assert evaluated_days(harness) == []
    harness.advance_to(START + 5 * HOUR)
    [evaluated] = evaluated_days(harness)
    assert evaluated.day == "2027-01-01"
    assert evaluated.peak_cores == OVER
    status = harness.control_plane.status()
    assert status.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    # 7 days after the Tokyo midnight that starts 2027-01-02
    assert status.grace_end_time.seconds == int(START + 5 * HOUR + 7 * DAY)


def test_the_evaluator_notices_a_date_change_by_itself(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    harness = make_harness("--evaluation-interval", "0.05")
    harness.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    harness.gateway.report_usage("gw-1", OVER)
    # move the clock without ticking: only the evaluator thread can notice
    harness.clock.set(day(1) + 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if harness.running.store.day_evaluations(10):
            break
        time.sleep(0.02)
    [evaluated] = harness.running.store.day_evaluations(10)
    assert evaluated["day"] == "2027-01-01"
    assert evaluated["state_after"] == "DP_CORE_EXCEEDED"


def test_a_pending_license_takes_over_in_order_with_the_days_missed_while_the_server_was_down(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    first = make_harness()
    over_quota_on_days(first, vendor, 8)
    first.advance_to(day(8) + HOUR)
    assert first.control_plane.status().state == pb.RUNTIME_STATE_RESTRICTED
    effective_at = day(9) + 12 * HOUR
    first.admin.upload(
        vendor.issue(serial_number="LIC-RENEWAL", effective_at=effective_at, max_dp_cores=32)
    )
    use_on_day(first, 8)

    # down from day 8 until day 11: day 8 is judged against the old license, then the renewal
    # takes over at its effective time, then days 9 and 10 are judged against it
    first.running.stop(grace=0.5)
    first.clock.set(day(11) + HOUR)
    second = make_harness()
    days = evaluated_days(second)
    assert_evaluated_once_each_in_order(days, "2027-01-01", 11, license_changed=True)
    assert [(d.day, d.license_serial_number, d.state_before, d.state_after) for d in days[-3:]] == [
        ("2027-01-09", "LIC-0001", pb.RUNTIME_STATE_RESTRICTED, pb.RUNTIME_STATE_RESTRICTED),
        ("2027-01-10", "LIC-RENEWAL", pb.RUNTIME_STATE_NORMAL, pb.RUNTIME_STATE_NORMAL),
        ("2027-01-11", "LIC-RENEWAL", pb.RUNTIME_STATE_NORMAL, pb.RUNTIME_STATE_NORMAL),
    ]
    status = second.control_plane.status()
    assert status.license.serial_number == "LIC-RENEWAL"
    assert status.license_applied_time.seconds == int(effective_at)
    change = status.last_state_change
    assert (change.state_before, change.state_after) == (
        pb.RUNTIME_STATE_RESTRICTED,
        pb.RUNTIME_STATE_NORMAL,
    )
    assert change.change_time.seconds == int(effective_at)


def test_an_instance_that_outlived_a_long_restart_is_not_counted_twice(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    first = make_harness()
    first.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    first.gateway.report_usage("gw-1", 12)
    first.running.stop(grace=0.5)
    # down for ten minutes: gw-1 lapsed 30 s after its last report
    first.clock.set(START + 600)
    second = make_harness()
    second.gateway.report_usage("gw-1", 12)
    second.gateway.report_usage("gw-2", 4)
    status = second.control_plane.status()
    assert (status.current_total_cores, status.live_instances) == (16, 2)
    second.advance_to(day(1))
    [evaluated] = evaluated_days(second)
    assert evaluated.peak_cores == 16
    assert evaluated.state_after == pb.RUNTIME_STATE_NORMAL
