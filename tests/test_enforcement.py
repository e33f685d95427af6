"""Metering and enforcement through a real server: both tables of the rules, on a manual clock.

Day n is the UTC calendar day that starts `day(n)`; the deployment starts on
day 0 at 10:00. The evaluation at the start of day n + 1 judges day n.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from conftest import DAY, START, Harness, Vendor, midnight_after
from licensing.client import LicensingError, Operation
from licensing.v1 import licensing_pb2 as pb

from licensing_server.domain.license import iso_time

# storage is part of every rule here: each test runs on SQLite and on PostgreSQL
pytestmark = pytest.mark.both_backends

QUOTA = 16
OVER = 20
HOUR = 3600.0
WRITES = [Operation.CREATE, Operation.UPDATE]


def day(n: int) -> float:
    """The midnight that starts day n."""
    return midnight_after(START, n)


def use_on_day(harness: Harness, n: int, cores: int, instance: str = "gw-1") -> None:
    """One gateway report at noon of day n (evaluating the days before it first)."""
    harness.advance_to(day(n) + 12 * HOUR)
    harness.gateway.report_usage(instance, cores)


def evaluate(harness: Harness, n: int) -> pb.GetStatusResponse:
    """Let the evaluation at the start of day n + 1 judge day n; returns the status after it."""
    harness.advance_to(day(n + 1))
    return harness.control_plane.status()


def over_quota_from_day_0(
    harness: Harness, vendor: Vendor, days: int
) -> list[pb.RuntimeState.ValueType]:
    """A 16-core license, 20 cores in use every day; returns the state after each evaluation."""
    harness.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    states = []
    for n in range(days):
        use_on_day(harness, n, OVER)
        states.append(evaluate(harness, n).state)
    return states


def history(harness: Harness) -> pb.GetUsageHistoryResponse:
    return harness.control_plane.usage_history(days=100, include_peak_instances=True)


def assert_deletes_reads_and_the_license_are_allowed(harness: Harness) -> None:
    for resource, operation, reason in [
        ("route", Operation.DELETE, pb.DECISION_REASON_DELETE),
        ("route", Operation.READ, pb.DECISION_REASON_READ),
        ("license", Operation.CREATE, pb.DECISION_REASON_LICENSE_RESOURCE),
        ("license", Operation.UPDATE, pb.DECISION_REASON_LICENSE_RESOURCE),
        ("license", Operation.DELETE, pb.DECISION_REASON_LICENSE_RESOURCE),
    ]:
        decision = harness.control_plane.check_write(resource, operation)
        assert decision.allowed, (resource, operation)
        assert decision.reason == reason


def assert_writes_denied(harness: Harness, reason: pb.DecisionReason.ValueType) -> None:
    for operation in WRITES:
        decision = harness.control_plane.check_write("route", operation)
        assert not decision.allowed
        assert decision.reason == reason
        assert decision.message


# --- the transition table, row by row, through the server -----------------------------


def test_normal_with_peak_within_quota_stays_normal(harness: Harness, vendor: Vendor) -> None:
    harness.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    use_on_day(harness, 0, QUOTA)
    status = evaluate(harness, 0)
    assert status.state == pb.RUNTIME_STATE_NORMAL
    assert status.last_evaluated_day.day == "2027-01-01"
    assert status.last_evaluated_day.peak_cores == QUOTA
    assert not status.HasField("grace_end_time")


def test_normal_with_peak_over_quota_becomes_dp_core_exceeded_with_grace_ending_7_days_later(
    harness: Harness, vendor: Vendor
) -> None:
    [state] = over_quota_from_day_0(harness, vendor, 1)
    assert state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    status = harness.control_plane.status()
    assert status.grace_end_time.seconds == int(day(1) + 7 * DAY)
    assert status.last_evaluated_day.state_before == pb.RUNTIME_STATE_NORMAL
    assert status.last_evaluated_day.state_after == pb.RUNTIME_STATE_DP_CORE_EXCEEDED


def test_dp_core_exceeded_with_peak_within_quota_returns_to_normal(
    harness: Harness, vendor: Vendor
) -> None:
    over_quota_from_day_0(harness, vendor, 1)
    use_on_day(harness, 1, QUOTA)
    status = evaluate(harness, 1)
    assert status.state == pb.RUNTIME_STATE_NORMAL
    assert not status.HasField("grace_end_time")


def test_dp_core_exceeded_with_peak_over_quota_before_the_grace_end_stays_exceeded(
    harness: Harness, vendor: Vendor
) -> None:
    states = over_quota_from_day_0(harness, vendor, 7)
    assert states == [pb.RUNTIME_STATE_DP_CORE_EXCEEDED] * 7
    # the grace end does not move while the state stays exceeded
    assert harness.control_plane.status().grace_end_time.seconds == int(day(8))


def test_dp_core_exceeded_with_peak_over_quota_once_the_grace_ended_becomes_restricted(
    harness: Harness, vendor: Vendor
) -> None:
    states = over_quota_from_day_0(harness, vendor, 8)
    assert states[-1] == pb.RUNTIME_STATE_RESTRICTED
    status = harness.control_plane.status()
    assert not status.HasField("grace_end_time")
    assert status.last_evaluated_day.state_before == pb.RUNTIME_STATE_DP_CORE_EXCEEDED


def test_restricted_with_peak_within_quota_returns_to_normal(
    harness: Harness, vendor: Vendor
) -> None:
    over_quota_from_day_0(harness, vendor, 8)
    use_on_day(harness, 8, QUOTA)
    assert evaluate(harness, 8).state == pb.RUNTIME_STATE_NORMAL
    assert harness.control_plane.check_write("route", Operation.CREATE).allowed


def test_restricted_with_peak_over_quota_stays_restricted(harness: Harness, vendor: Vendor) -> None:
    over_quota_from_day_0(harness, vendor, 8)
    use_on_day(harness, 8, OVER)
    assert evaluate(harness, 8).state == pb.RUNTIME_STATE_RESTRICTED


def test_over_quota_from_day_0_is_exceeded_from_day_1_and_restricted_from_day_8_not_day_7(
    harness: Harness, vendor: Vendor
) -> None:
    states = over_quota_from_day_0(harness, vendor, 9)
    # states[n] is the state from the evaluation at the start of day n + 1
    assert states[:7] == [pb.RUNTIME_STATE_DP_CORE_EXCEEDED] * 7
    assert states[7:] == [pb.RUNTIME_STATE_RESTRICTED] * 2
    days = {d.day: d for d in history(harness).days}
    assert days["2027-01-07"].state_after == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert days["2027-01-08"].state_after == pb.RUNTIME_STATE_RESTRICTED
    assert days["2027-01-08"].evaluation_time.seconds == int(day(8))


def test_writes_are_allowed_until_the_evaluation_at_the_start_of_day_8(
    harness: Harness, vendor: Vendor
) -> None:
    over_quota_from_day_0(harness, vendor, 7)
    use_on_day(harness, 7, OVER)
    harness.advance_to(day(8) - 1)
    last_second = harness.control_plane.check_write("route", Operation.CREATE)
    assert last_second.allowed
    assert last_second.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    harness.advance_to(day(8))
    first_second = harness.control_plane.check_write("route", Operation.CREATE)
    assert not first_second.allowed
    assert first_second.reason == pb.DECISION_REASON_RESTRICTED


# --- the decision table, row by row, through the server ---------------------------------


def test_normal_with_an_active_license_allows_create_update_delete_read_and_license(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue())
    for operation in WRITES:
        decision = harness.control_plane.check_write("route", operation)
        assert decision.allowed
        assert decision.reason == pb.DECISION_REASON_LICENSED
        assert decision.state == pb.RUNTIME_STATE_NORMAL
        assert decision.license_serial_number == "LIC-0001"
        assert decision.message
        assert list(decision.warnings) == []
    assert_deletes_reads_and_the_license_are_allowed(harness)


def test_dp_core_exceeded_allows_create_with_a_warning_naming_the_grace_end(
    harness: Harness, vendor: Vendor
) -> None:
    over_quota_from_day_0(harness, vendor, 1)
    grace_end = iso_time(day(8))
    for operation in WRITES:
        decision = harness.control_plane.check_write("route", operation)
        assert decision.allowed
        assert decision.reason == pb.DECISION_REASON_GRACE_PERIOD
        assert decision.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
        assert decision.license_serial_number == "LIC-0001"
        assert grace_end in decision.message
        [warning] = decision.warnings
        assert warning.kind == pb.WARNING_KIND_DP_CORE_EXCEEDED
        assert grace_end in warning.message
    assert_deletes_reads_and_the_license_are_allowed(harness)


def test_restricted_denies_create_but_allows_delete_read_and_license(
    harness: Harness, vendor: Vendor
) -> None:
    over_quota_from_day_0(harness, vendor, 8)
    assert_writes_denied(harness, pb.DECISION_REASON_RESTRICTED)
    decision = harness.control_plane.check_write("route", Operation.CREATE)
    assert decision.state == pb.RUNTIME_STATE_RESTRICTED
    assert decision.license_serial_number == "LIC-0001"
    assert [w.kind for w in decision.warnings] == [pb.WARNING_KIND_RESTRICTED]
    assert_deletes_reads_and_the_license_are_allowed(harness)
    # uploading a license is itself allowed while restricted
    harness.admin.upload(vendor.issue(serial_number="LIC-0002", max_dp_cores=QUOTA))


def test_an_expired_license_denies_create_but_allows_delete_read_and_license(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(expires_at=START + 2 * DAY))
    harness.advance_to(START + 2 * DAY)
    assert_writes_denied(harness, pb.DECISION_REASON_LICENSE_EXPIRED)
    decision = harness.control_plane.check_write("route", Operation.CREATE)
    assert decision.license_serial_number == "LIC-0001"
    assert pb.WARNING_KIND_LICENSE_EXPIRED in [w.kind for w in decision.warnings]
    assert_deletes_reads_and_the_license_are_allowed(harness)


def test_no_license_ever_installed_denies_create_but_allows_delete_read_and_license(
    harness: Harness,
) -> None:
    assert_writes_denied(harness, pb.DECISION_REASON_NO_LICENSE)
    decision = harness.control_plane.check_write("route", Operation.CREATE)
    assert decision.license_serial_number == ""
    assert decision.state == pb.RUNTIME_STATE_NORMAL
    assert_deletes_reads_and_the_license_are_allowed(harness)


def test_a_feature_the_license_lacks_denies_create_but_allows_delete_read_and_license(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(features=["api7-gateway"]))
    for operation in WRITES:
        decision = harness.control_plane.check_write("portal", operation, feature="api7-portal")
        assert not decision.allowed
        assert decision.reason == pb.DECISION_REASON_FEATURE_NOT_LICENSED
        assert "api7-portal" in decision.message
    for operation, reason in [
        (Operation.DELETE, pb.DECISION_REASON_DELETE),
        (Operation.READ, pb.DECISION_REASON_READ),
    ]:
        decision = harness.control_plane.check_write("portal", operation, feature="api7-portal")
        assert decision.allowed
        assert decision.reason == reason
    assert harness.control_plane.check_write(
        "route", Operation.CREATE, feature="api7-gateway"
    ).allowed
    assert_deletes_reads_and_the_license_are_allowed(harness)


def test_a_license_ending_within_30_days_warns_in_check_write_and_status(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(expires_at=START + 20.5 * DAY))
    decision = harness.control_plane.check_write("route", Operation.CREATE)
    assert decision.allowed
    [warning] = decision.warnings
    assert warning.kind == pb.WARNING_KIND_LICENSE_EXPIRING
    assert "in 20 days" in warning.message
    assert pb.WARNING_KIND_LICENSE_EXPIRING in [
        w.kind for w in harness.control_plane.status().warnings
    ]


# --- a license change re-evaluates the last evaluated day --------------------------------


def test_a_normal_deployment_with_a_new_license_below_its_last_peak_gets_7_days_grace(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-BIG", max_dp_cores=32))
    use_on_day(harness, 0, OVER)
    assert evaluate(harness, 0).state == pb.RUNTIME_STATE_NORMAL
    uploaded_at = day(1) + 9.5 * HOUR
    harness.advance_to(uploaded_at)
    response = harness.admin.upload(vendor.issue(serial_number="LIC-SMALL", max_dp_cores=QUOTA))
    assert response.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert response.grace_end_time.seconds == int(uploaded_at + 7 * DAY)
    status = harness.control_plane.status()
    assert status.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert status.grace_end_time.seconds == int(uploaded_at + 7 * DAY)
    change = status.last_state_change
    assert change.change_time.seconds == int(uploaded_at)
    assert "LIC-SMALL" in change.cause


def test_a_grace_period_started_by_an_upload_becomes_restricted_at_the_first_midnight_after_it(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-BIG", max_dp_cores=32))
    use_on_day(harness, 0, OVER)
    evaluate(harness, 0)
    uploaded_at = day(1) + 9.5 * HOUR
    harness.advance_to(uploaded_at)
    harness.admin.upload(vendor.issue(serial_number="LIC-SMALL", max_dp_cores=QUOTA))
    states = []
    for n in range(1, 9):
        use_on_day(harness, n, OVER)
        states.append(evaluate(harness, n).state)
    # the grace ends on day 8 at 09:30: the midnight that starts day 8 is still within it
    assert states[:7] == [pb.RUNTIME_STATE_DP_CORE_EXCEEDED] * 7
    assert states[7] == pb.RUNTIME_STATE_RESTRICTED


def test_a_license_with_a_higher_quota_ends_restricted_immediately(
    harness: Harness, vendor: Vendor
) -> None:
    over_quota_from_day_0(harness, vendor, 8)
    uploaded_at = day(8) + 3 * HOUR
    harness.advance_to(uploaded_at)
    response = harness.admin.upload(vendor.issue(serial_number="LIC-0002", max_dp_cores=32))
    assert response.state == pb.RUNTIME_STATE_NORMAL
    decision = harness.control_plane.check_write("route", Operation.CREATE)
    assert decision.allowed
    assert decision.license_serial_number == "LIC-0002"
    change = harness.control_plane.status().last_state_change
    assert (change.state_before, change.state_after) == (
        pb.RUNTIME_STATE_RESTRICTED,
        pb.RUNTIME_STATE_NORMAL,
    )
    assert change.change_time.seconds == int(uploaded_at)


def test_a_license_with_a_higher_quota_ends_dp_core_exceeded_immediately(
    harness: Harness, vendor: Vendor
) -> None:
    over_quota_from_day_0(harness, vendor, 3)
    response = harness.admin.upload(vendor.issue(serial_number="LIC-0002", max_dp_cores=OVER))
    assert response.state == pb.RUNTIME_STATE_NORMAL
    assert not response.HasField("grace_end_time")


def test_a_new_license_still_below_the_peak_never_moves_the_grace_end_later(
    harness: Harness, vendor: Vendor
) -> None:
    over_quota_from_day_0(harness, vendor, 3)
    grace_end = harness.control_plane.status().grace_end_time.seconds
    assert grace_end == int(day(8))
    harness.advance_to(day(3) + 10 * HOUR)
    response = harness.admin.upload(vendor.issue(serial_number="LIC-0002", max_dp_cores=18))
    assert response.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert response.grace_end_time.seconds == grace_end
    assert harness.control_plane.status().grace_end_time.seconds == grace_end


def test_a_new_license_still_below_the_peak_keeps_a_restricted_deployment_restricted(
    harness: Harness, vendor: Vendor
) -> None:
    over_quota_from_day_0(harness, vendor, 8)
    response = harness.admin.upload(vendor.issue(serial_number="LIC-0002", max_dp_cores=OVER - 1))
    assert response.state == pb.RUNTIME_STATE_RESTRICTED
    assert not harness.control_plane.check_write("route", Operation.CREATE).allowed


def test_a_pending_license_with_a_higher_quota_takes_over_at_its_effective_time_by_itself(
    harness: Harness, vendor: Vendor
) -> None:
    over_quota_from_day_0(harness, vendor, 8)
    effective_at = day(8) + 15 * HOUR
    response = harness.admin.upload(
        vendor.issue(serial_number="LIC-RENEWAL", effective_at=effective_at, max_dp_cores=32)
    )
    assert response.pending
    assert response.state == pb.RUNTIME_STATE_RESTRICTED
    harness.advance_to(effective_at - 1)
    assert harness.control_plane.status().state == pb.RUNTIME_STATE_RESTRICTED
    # the evaluator's next wake-up, a while after the effective time
    harness.advance_to(effective_at + 20)
    status = harness.control_plane.status()
    assert status.state == pb.RUNTIME_STATE_NORMAL
    assert status.license.serial_number == "LIC-RENEWAL"
    assert status.license_applied_time.seconds == int(effective_at)
    change = status.last_state_change
    assert change.change_time.seconds == int(effective_at)
    assert "LIC-RENEWAL" in change.cause
    assert "pending" in change.cause


def test_every_state_change_is_recorded_with_its_time_and_cause(
    harness: Harness, vendor: Vendor
) -> None:
    over_quota_from_day_0(harness, vendor, 8)
    uploaded_at = day(8) + 3 * HOUR
    harness.advance_to(uploaded_at)
    harness.admin.upload(vendor.issue(serial_number="LIC-0002", max_dp_cores=32))
    changes = list(reversed(history(harness).state_changes))
    assert [(c.state_before, c.state_after) for c in changes] == [
        (pb.RUNTIME_STATE_NORMAL, pb.RUNTIME_STATE_DP_CORE_EXCEEDED),
        (pb.RUNTIME_STATE_DP_CORE_EXCEEDED, pb.RUNTIME_STATE_RESTRICTED),
        (pb.RUNTIME_STATE_RESTRICTED, pb.RUNTIME_STATE_NORMAL),
    ]
    assert [c.change_time.seconds for c in changes] == [int(day(1)), int(day(8)), int(uploaded_at)]
    assert "evaluation of 2027-01-01" in changes[0].cause
    assert changes[0].grace_end_time.seconds == int(day(8))
    assert "evaluation of 2027-01-08" in changes[1].cause
    assert "LIC-0002" in changes[2].cause
    assert all(c.cause for c in changes)


# --- usage: who counts, and the day's peak -------------------------------------------------


def test_report_usage_answers_the_state_and_when_to_report_next(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue())
    answer = harness.gateway.report_usage("gw-1", 8)
    assert answer.state == pb.RUNTIME_STATE_NORMAL
    assert answer.receive_time.seconds == int(START)
    # about 10 s, jittered so a fleet does not report in lockstep
    assert 9.0 <= answer.next_report_in.ToTimedelta().total_seconds() <= 11.0


def test_an_instance_stops_counting_ttl_after_its_last_report(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue())
    harness.gateway.report_usage("gw-1", 8)
    harness.advance_to(START + 29)
    status = harness.control_plane.status()
    assert (status.current_total_cores, status.live_instances) == (8, 1)
    harness.advance_to(START + 30)
    status = harness.control_plane.status()
    assert (status.current_total_cores, status.live_instances) == (0, 0)
    # a second instance starting once the first lapsed does not add to it
    harness.gateway.report_usage("gw-2", 8)
    assert evaluate(harness, 0).last_evaluated_day.peak_cores == 8


def test_the_instance_ttl_is_configurable(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness("--instance-ttl", "60")
    harness.gateway.report_usage("gw-1", 8)
    harness.advance_to(START + 59)
    assert harness.control_plane.status().live_instances == 1
    harness.advance_to(START + 60)
    assert harness.control_plane.status().live_instances == 0


def test_an_instance_reporting_stopping_stops_counting_at_once(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue())
    harness.gateway.report_usage("gw-1", 8)
    harness.advance_to(START + 5)
    harness.gateway.report_usage("gw-1", 0, stopping=True)
    status = harness.control_plane.status()
    assert (status.current_total_cores, status.live_instances) == (0, 0)
    harness.advance_to(START + 6)
    harness.gateway.report_usage("gw-2", 8)
    assert evaluate(harness, 0).last_evaluated_day.peak_cores == 8


def test_a_rolling_restart_of_the_fleet_is_not_counted_twice(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(max_dp_cores=QUOTA))
    fleet = [f"gw-old-{n}" for n in range(4)]
    for instance in fleet:
        harness.gateway.report_usage(instance, 4)
    at = START + 10
    for n, old in enumerate(fleet):
        # one instance at a time: the old one says it is stopping, its replacement starts
        harness.advance_to(at)
        harness.gateway.report_usage(old, 0, stopping=True)
        harness.gateway.report_usage(f"gw-new-{n}", 4)
        at += 3
    status = harness.control_plane.status()
    assert (status.current_total_cores, status.live_instances) == (16, 4)
    evaluated = evaluate(harness, 0)
    assert evaluated.last_evaluated_day.peak_cores == 16
    assert evaluated.state == pb.RUNTIME_STATE_NORMAL


def test_the_instances_at_a_days_peak_are_recorded(harness: Harness, vendor: Vendor) -> None:
    harness.admin.upload(vendor.issue())
    harness.gateway.report_usage("gw-a", 8)
    harness.gateway.report_usage("gw-b", 4)
    harness.advance_to(START + 3600)
    harness.gateway.report_usage("gw-c", 2)
    evaluate(harness, 0)
    [evaluated] = history(harness).days
    assert evaluated.day == "2027-01-01"
    assert evaluated.peak_cores == 12
    assert evaluated.max_dp_cores == 16
    assert evaluated.peak_time.seconds == int(START)
    assert sorted((i.instance_id, i.cores) for i in evaluated.peak_instances) == [
        ("gw-a", 8),
        ("gw-b", 4),
    ]
    assert evaluated.license_serial_number == "LIC-0001"


def test_a_day_without_reports_has_peak_0(harness: Harness, vendor: Vendor) -> None:
    harness.admin.upload(vendor.issue())
    status = evaluate(harness, 0)
    assert status.last_evaluated_day.peak_cores == 0
    assert not status.last_evaluated_day.HasField("peak_time")


def test_storage_grows_with_changes_in_usage_not_with_reports(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue())
    store = harness.running.store
    before = store.usage_row_count()
    harness.gateway.report_usage("gw-1", 8)
    # every 10 s for a day; straight into the running service, as 8,640 gRPC round trips
    # would only make the test slow
    for n in range(1, 8_640):
        harness.clock.set(START + 10 * n)
        harness.service.report_usage("gw-1", 8, False)
    assert store.usage_row_count() - before <= 3
    evaluated = evaluate(harness, 1)
    assert [d.peak_cores for d in history(harness).days] == [8, 8]
    assert evaluated.current_total_cores == 0


# --- bad input changes nothing ---------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_id", "cores", "stopping", "reason"),
    [
        ("", 8, False, "INVALID_INSTANCE_ID"),
        ("x" * 129, 8, False, "INVALID_INSTANCE_ID"),
        ("gw 1", 8, False, "INVALID_INSTANCE_ID"),
        ("gw/1", 8, False, "INVALID_INSTANCE_ID"),
        ("gw-ü", 8, False, "INVALID_INSTANCE_ID"),
        ("gw-1", 0, False, "INVALID_CORES"),
        ("gw-1", -1, False, "INVALID_CORES"),
        ("gw-1", 4097, False, "INVALID_CORES"),
    ],
    ids=[
        "empty-id",
        "129-char-id",
        "space-in-id",
        "slash-in-id",
        "non-ascii-id",
        "0-cores-not-stopping",
        "negative-cores",
        "4097-cores",
    ],
)
def test_a_bad_usage_report_is_invalid_argument_with_a_reason_and_stores_nothing(
    harness: Harness, instance_id: str, cores: int, stopping: bool, reason: str
) -> None:
    store = harness.running.store
    before = store.usage_row_count()
    with pytest.raises(LicensingError) as raised:
        harness.gateway.report_usage(instance_id, cores, stopping=stopping)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.reason == reason
    assert raised.value.message
    assert store.usage_row_count() == before
    status = harness.control_plane.status()
    assert (status.current_total_cores, status.live_instances) == (0, 0)


def test_the_edges_of_a_good_usage_report_are_accepted(harness: Harness) -> None:
    harness.gateway.report_usage("x" * 128, 4096)
    harness.gateway.report_usage("gw-1.zone_a:8080", 1)
    harness.gateway.report_usage("gw-1.zone_a:8080", 0, stopping=True)
    status = harness.control_plane.status()
    assert (status.current_total_cores, status.live_instances) == (4096, 1)


@pytest.mark.parametrize(
    ("resource_type", "operation", "reason"),
    [
        ("", Operation.CREATE, "INVALID_RESOURCE_TYPE"),
        ("r" * 129, Operation.CREATE, "INVALID_RESOURCE_TYPE"),
        ("route", pb.OPERATION_UNSPECIFIED, "INVALID_OPERATION"),
        ("route", 99, "INVALID_OPERATION"),
    ],
    ids=[
        "empty-resource-type",
        "129-char-resource-type",
        "unspecified-operation",
        "unknown-operation",
    ],
)
def test_a_bad_write_check_is_invalid_argument_with_a_reason(
    harness: Harness, vendor: Vendor, resource_type: str, operation: int, reason: str
) -> None:
    harness.admin.upload(vendor.issue())
    with pytest.raises(LicensingError) as raised:
        harness.control_plane.check_write(resource_type, operation)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.reason == reason
    assert raised.value.message


def test_a_feature_longer_than_128_characters_is_invalid_argument_with_a_short_message(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue())
    at_the_limit = harness.control_plane.check_write("route", Operation.CREATE, "f" * 128)
    assert at_the_limit.reason == pb.DECISION_REASON_FEATURE_NOT_LICENSED
    assert len(at_the_limit.message) < 300

    for feature in ("f" * 129, "f" * 100_000):
        with pytest.raises(LicensingError) as raised:
            harness.control_plane.check_write("route", Operation.CREATE, feature)
        assert (raised.value.code, raised.value.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FEATURE",
        )
        assert 0 < len(raised.value.message) < 300


@pytest.mark.parametrize(
    ("role", "call"),
    [
        ("gateway", lambda c: c.check_write("route", Operation.CREATE)),
        ("gateway", lambda c: c.status()),
        ("control_plane", lambda c: c.report_usage("gw-1", 8)),
    ],
    ids=[
        "gateway-calls-check-write",
        "gateway-calls-get-status",
        "control-plane-calls-report-usage",
    ],
)
def test_a_caller_in_the_wrong_role_is_permission_denied(
    harness: Harness, role: str, call: Callable[..., object]
) -> None:
    with pytest.raises(LicensingError) as raised:
        call(getattr(harness, role))
    assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.reason == "ROLE_NOT_ALLOWED"
    assert harness.running.store.usage_row_count() == 0
