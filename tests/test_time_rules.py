"""The rules of time through a real server: time zones changed between runs, a clock behind
the latest time seen, observed days, overage episodes, and what a failed write leaves behind.

Day n is the UTC calendar day that starts `day(n)`; the deployment starts on
day 0 (2027-01-01) at 10:00. The evaluation at the start of day n + 1 judges day n.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
import pytest
from conftest import DAY, START, Harness, Vendor, midnight_after, read_only
from licensing.client import LicensingError, Operation
from licensing.v1 import licensing_pb2 as pb

from licensing_server.store import StoreError

# storage is part of every rule here: each test runs on SQLite and on PostgreSQL
pytestmark = pytest.mark.both_backends

QUOTA = 16
OVER = 20
BURST = 40
HOUR = 3600.0


def day(n: int) -> float:
    return midnight_after(START, n)


def utc(*fields: int) -> float:
    return datetime(*fields, tzinfo=UTC).timestamp()  # type: ignore[misc]


def evaluated_days(harness: Harness) -> list[pb.DayUsage]:
    """Every stored evaluation, oldest first."""
    return list(reversed(harness.control_plane.usage_history(days=100).days))


def use_on_day(harness: Harness, n: int, cores: int = OVER) -> None:
    harness.advance_to(day(n) + 12 * HOUR)
    harness.gateway.report_usage("gw-1", cores)


def down(
    harness: Harness,
    make_harness: Callable[..., Harness],
    stops_at: float,
    starts_at: float,
    *extra: str,
) -> Harness:
    """Run until `stops_at`, stop, and start again (on the same data) at `starts_at`."""
    harness.advance_to(stops_at)
    harness.running.stop(grace=0.5)
    harness.clock.set(starts_at)
    return make_harness(*extra)


# --- each instant belongs to exactly one evaluated day ----------------------------------


@pytest.mark.parametrize(
    ("first_zone", "first_day_ends_at", "second_zone", "burst_at"),
    [
        # a burst in the hours Los Angeles' next day would have left out
        ("UTC", utc(2027, 1, 2), "America/Los_Angeles", utc(2027, 1, 2, 3)),
        # a burst on the UTC day already judged, which Tokyo's next day would have judged again
        ("UTC", utc(2027, 1, 2), "Asia/Tokyo", utc(2027, 1, 1, 21)),
        # a burst in the 24 hours Honolulu's next day would have skipped
        ("Pacific/Kiritimati", utc(2027, 1, 2, 10), "Pacific/Honolulu", utc(2027, 1, 2, 13)),
    ],
)
def test_after_a_time_zone_change_each_instant_is_judged_in_exactly_one_day(
    make_harness: Callable[..., Harness],
    vendor: Vendor,
    first_zone: str,
    first_day_ends_at: float,
    second_zone: str,
    burst_at: float,
) -> None:
    first = make_harness("--timezone", first_zone)
    first.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    if burst_at < first_day_ends_at:
        first.advance_to(burst_at)
        first.gateway.report_usage("gw-burst", BURST)
    first.advance_to(first_day_ends_at + 60)
    assert len(evaluated_days(first)) == 1
    first.running.stop(grace=0.5)

    second = make_harness("--timezone", second_zone)
    if burst_at >= first_day_ends_at:
        second.advance_to(burst_at)
        second.gateway.report_usage("gw-burst", BURST)
    second.advance_to(first_day_ends_at + 3 * DAY)

    days = evaluated_days(second)
    assert len(days) >= 3
    # the days tile time: each starts where the one before it ended
    for previous, following in itertools.pairwise(days):
        assert following.start_time.ToSeconds() == previous.end_time.ToSeconds()
    assert days[0].end_time.ToSeconds() == int(first_day_ends_at)
    # the burst is in exactly one day, the one whose window holds it
    [burst_day] = [d for d in days if d.peak_cores == BURST]
    assert burst_day.start_time.ToSeconds() <= burst_at < burst_day.end_time.ToSeconds()
    assert [d.peak_cores for d in days if d is not burst_day] == [0] * (len(days) - 1)


def test_the_first_day_after_changing_utc_to_los_angeles_runs_from_utc_midnight_to_la_midnight(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    first = make_harness()
    first.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    first.advance_to(day(1) + 60)
    first.running.stop(grace=0.5)
    second = make_harness("--timezone", "America/Los_Angeles")
    second.advance_to(utc(2027, 1, 3, 8) + 60)
    [utc_day, la_day] = evaluated_days(second)
    assert (utc_day.day, la_day.day) == ("2027-01-01", "2027-01-02")
    # 32 hours: from 2027-01-02T00:00Z to the Los Angeles midnight that ends 2027-01-02
    assert la_day.start_time.ToSeconds() == int(utc(2027, 1, 2))
    assert la_day.end_time.ToSeconds() == int(utc(2027, 1, 3, 8))


# --- a clock behind the latest time seen ------------------------------------------------


def test_usage_time_moves_on_from_the_latest_time_seen_while_the_clock_is_behind(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    harness.advance_to(START + HOUR)
    harness.gateway.report_usage("gw-1", 10)
    latest = START + HOUR

    # the clock is set back a day; a minute passes; gw-1 has lapsed, and gw-2 starts
    harness.clock.set(START + HOUR - DAY)
    harness.clock.advance(60)
    answer = harness.gateway.report_usage("gw-2", 10)
    assert answer.receive_time.ToSeconds() == int(latest + 60)
    status = harness.control_plane.status()
    assert status.clock.moved_back
    assert (status.current_total_cores, status.live_instances) == (10, 1)

    # the two gateways never ran together: the day's peak is 10, within the quota
    harness.clock.advance(DAY)
    harness.service.tick()
    [evaluated] = evaluated_days(harness)
    assert evaluated.peak_cores == 10
    assert evaluated.state_after == pb.RUNTIME_STATE_NORMAL


def test_the_latest_time_seen_is_stored_without_waiting_for_a_state_change(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    harness.advance_to(START + 3 * HOUR)
    # nothing changed but the time: a kill -9 now must not forget it
    assert harness.running.store.service_state()["high_water_at"] == START + 3 * HOUR


# --- observed days ----------------------------------------------------------------------


def test_a_day_the_server_was_down_cannot_clear_an_overage(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    first = make_harness()
    first.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    for n in range(3):
        use_on_day(first, n)
    # down for all of day 3: the 20 cores in use that day are not reported
    second = down(first, make_harness, day(3) + 60, day(4) + HOUR)
    for n in range(4, 8):
        use_on_day(second, n)
    second.advance_to(day(8))

    days = {d.day: d for d in evaluated_days(second)}
    quiet = days["2027-01-04"]
    assert (quiet.peak_cores, quiet.observed) == (0, False)
    assert quiet.observed_duration.ToSeconds() == 60
    assert quiet.state_before == quiet.state_after == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    # the grace that began at the start of day 1 ends at the start of day 8, downtime or not
    status = second.control_plane.status()
    assert status.state == pb.RUNTIME_STATE_RESTRICTED
    assert [d.observed for d in days.values()] == [True] * 3 + [False] + [True] * 4


def test_a_day_the_host_was_suspended_through_is_not_observed(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    use_on_day(harness, 0)
    use_on_day(harness, 1)
    # the host sleeps from the start of day 2 until day 3: the wall clock jumps, the
    # monotonic clock does not
    harness.advance_to(day(2) + 60)
    harness.clock.step(day(3) + 60)
    harness.service.tick()
    days = {d.day: d for d in evaluated_days(harness)}
    asleep = days["2027-01-03"]
    assert (asleep.observed, asleep.observed_duration.ToSeconds()) == (False, 60)
    assert asleep.state_after == pb.RUNTIME_STATE_DP_CORE_EXCEEDED


def test_stopping_the_server_one_day_a_week_does_not_keep_an_overage_from_restriction(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    harness = make_harness()
    harness.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    for n in range(22):
        if n % 7 == 3:
            harness = down(harness, make_harness, day(n) + 60, day(n + 1) + 60)
            continue
        use_on_day(harness, n, BURST)
    harness.advance_to(day(22))
    states = {d.day: d.state_after for d in evaluated_days(harness)}
    assert states["2027-01-08"] == pb.RUNTIME_STATE_RESTRICTED
    assert all(
        state == pb.RUNTIME_STATE_RESTRICTED
        for label, state in states.items()
        if label >= "2027-01-08"
    )


def test_a_grace_end_that_passes_during_an_unobserved_day_applies_at_the_next_evaluation(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    first = make_harness()
    first.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    for n in range(7):
        use_on_day(first, n)
    # down for all of day 7; the grace ends at the start of day 8, during the downtime
    second = down(first, make_harness, day(7) + 60, day(9) + HOUR)
    days = {d.day: d for d in evaluated_days(second)}
    assert days["2027-01-08"].state_after == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    use_on_day(second, 9)
    second.advance_to(day(10))
    assert second.control_plane.status().state == pb.RUNTIME_STATE_RESTRICTED


# --- overage episodes -------------------------------------------------------------------


def test_swapping_licenses_back_and_forth_never_buys_more_grace(
    harness: Harness, vendor: Vendor
) -> None:
    small = vendor.issue(serial_number="LIC-SMALL", max_dp_cores=QUOTA)
    big = vendor.issue(serial_number="LIC-TRIAL", max_dp_cores=64, free_trial=True)
    harness.admin.upload(small)
    use_on_day(harness, 0)
    use_on_day(harness, 1)
    assert harness.control_plane.status().grace_end_time.ToSeconds() == int(day(8))

    harness.advance_to(day(2) + HOUR)
    covered = harness.admin.upload(big)
    assert covered.state == pb.RUNTIME_STATE_NORMAL
    status = harness.control_plane.status()
    assert status.episode_grace_end_time.ToSeconds() == int(day(8))

    harness.advance_to(day(2) + 2 * HOUR)
    again = harness.admin.upload(small)
    assert again.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert again.grace_end_time.ToSeconds() == int(day(8))

    # and after the grace end, swapping is RESTRICTED at once
    for n in range(2, 8):
        use_on_day(harness, n)
    harness.advance_to(day(8) + HOUR)
    assert harness.control_plane.status().state == pb.RUNTIME_STATE_RESTRICTED
    assert harness.admin.upload(big).state == pb.RUNTIME_STATE_NORMAL
    assert harness.admin.upload(small).state == pb.RUNTIME_STATE_RESTRICTED


def test_an_episode_closes_at_a_midnight_judging_an_observed_day_within_quota(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-SMALL", max_dp_cores=QUOTA))
    use_on_day(harness, 0)
    harness.advance_to(day(1))
    harness.advance_to(day(1) + HOUR)
    harness.admin.upload(vendor.issue(serial_number="LIC-BIG", max_dp_cores=64))
    use_on_day(harness, 1, 8)
    harness.advance_to(day(2))
    status = harness.control_plane.status()
    assert status.state == pb.RUNTIME_STATE_NORMAL
    assert not status.HasField("episode_grace_end_time")
    # a new overage is a new episode, with a grace of its own
    harness.advance_to(day(2) + HOUR)
    again = harness.admin.upload(vendor.issue(serial_number="LIC-SMALL-2", max_dp_cores=4))
    assert again.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert again.grace_end_time.ToSeconds() == int(day(2) + HOUR + 7 * DAY)


# --- the truth at every instant ---------------------------------------------------------


def test_after_a_grace_end_passes_mid_day_answers_say_it_ended(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-BIG", max_dp_cores=32))
    use_on_day(harness, 0)
    harness.advance_to(day(1) + 10 * HOUR)
    small = vendor.issue(serial_number="LIC-SMALL", max_dp_cores=QUOTA)
    assert harness.admin.upload(small).grace_end_time.ToSeconds() == int(day(8) + 10 * HOUR)
    for n in range(1, 9):
        use_on_day(harness, n)
    # past the grace end, before the midnight that judges the day
    decision = harness.control_plane.check_write("route", Operation.CREATE)
    assert decision.allowed
    assert decision.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert "ended" in decision.message
    assert "which ends" not in decision.message
    [warning] = [w for w in decision.warnings if w.kind == pb.WARNING_KIND_DP_CORE_EXCEEDED]
    assert "ended" in warning.message

    # the what-if of the license in force predicts what uploading it does: nothing
    what_if = harness.admin.validate(small)
    assert what_if.already_active
    assert what_if.resulting_state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    uploaded = harness.admin.upload(small)
    assert uploaded.unchanged
    assert uploaded.state == what_if.resulting_state

    harness.advance_to(day(9))
    assert harness.control_plane.status().state == pb.RUNTIME_STATE_RESTRICTED


def test_check_write_answers_a_due_pending_license_from_memory_and_writes_nothing(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-OLD", features=[]))
    takes_over_at = START + 2 * HOUR
    harness.admin.upload(
        vendor.issue(serial_number="LIC-NEW", effective_at=takes_over_at, features=["portal"])
    )
    store = harness.running.store
    harness.clock.set(takes_over_at)
    decision = harness.control_plane.check_write("route", Operation.CREATE, feature="portal")
    assert decision.allowed
    assert decision.license_serial_number == "LIC-NEW"
    assert harness.control_plane.status().license.serial_number == "LIC-NEW"
    # the takeover is the evaluator's work, not the caller's
    assert [r["serial_number"] for r in store.licenses_with_status("pending")] == ["LIC-NEW"]
    harness.service.tick()
    assert [r["serial_number"] for r in store.licenses_with_status("active")] == ["LIC-NEW"]
    assert store.licenses_with_status("pending") == []


# --- a failed write changes nothing -----------------------------------------------------


def test_a_pending_license_whose_takeover_fails_to_store_stays_pending_and_takes_over_later(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-OLD"))
    takes_over_at = START + 2 * HOUR
    harness.admin.upload(vendor.issue(serial_number="LIC-NEW", effective_at=takes_over_at))
    store = harness.running.store
    harness.clock.set(takes_over_at + 1)
    with read_only(store), pytest.raises(StoreError):
        harness.service.tick()
    assert [r["serial_number"] for r in store.licenses_with_status("pending")] == ["LIC-NEW"]
    decision = harness.control_plane.check_write("route", Operation.CREATE)
    assert decision.license_serial_number == "LIC-NEW"

    # the storage is back: the next tick takes over, at the license's effective time
    harness.service.tick()
    [active] = store.licenses_with_status("active")
    assert (active["serial_number"], active["activated_at"]) == ("LIC-NEW", takes_over_at)
    assert harness.control_plane.status().license_applied_time.ToSeconds() == int(takes_over_at)


def test_a_report_that_could_not_be_stored_changes_nothing_not_even_in_memory(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    harness.gateway.report_usage("gw-1", 8)
    store = harness.running.store
    with read_only(store):
        for instance in ("gw-1", *(f"gw-{n}" for n in range(2, 20))):
            with pytest.raises(LicensingError) as refused:
                harness.gateway.report_usage(instance, 12)
            assert (refused.value.code, refused.value.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "STORAGE_UNAVAILABLE",
            )
        status = harness.control_plane.status()
        assert (status.current_total_cores, status.live_instances) == (8, 1)

    harness.advance(10)
    harness.gateway.report_usage("gw-1", 8)
    harness.advance_to(day(1))
    [evaluated] = evaluated_days(harness)
    assert evaluated.peak_cores == 8
    assert store.usage_row_count() == 1


def test_the_share_of_a_day_that_makes_it_observed_is_configurable(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    first = make_harness("--observed-day-share", "0.1")
    first.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    use_on_day(first, 0)
    # up for the first three hours of day 1 (an eighth of it), with no gateway reporting
    second = down(
        first, make_harness, day(1) + 3 * HOUR, day(2) + HOUR, "--observed-day-share", "0.1"
    )
    quiet = evaluated_days(second)[-1]
    assert (quiet.day, quiet.observed, quiet.peak_cores) == ("2027-01-02", True, 0)
    assert second.control_plane.status().state == pb.RUNTIME_STATE_NORMAL
