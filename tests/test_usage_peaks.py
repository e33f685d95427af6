"""Which instances count at an instant, and a day's peak: the usage rules as plain Python."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from licensing_server.domain.refusal import Refused
from licensing_server.domain.usage import (
    MAX_CORES,
    FleetView,
    IntervalRow,
    UsageRejected,
    UsageTracker,
    check_day,
    check_history_request,
    check_report,
    peak_between,
    placed_after,
)

TTL = 30.0
DAY_START = 1_000_000.0
DAY_END = DAY_START + 86_400.0


class Fleet:
    """A tracker plus every row it asked to store, keyed by interval id as the store keeps them."""

    def __init__(self, ttl: float = TTL) -> None:
        self.tracker = UsageTracker(ttl)
        self.rows: dict[int, IntervalRow] = {}

    def report(self, instance_id: str, cores: int, at: float, stopping: bool = False) -> None:
        for row in self.tracker.report(instance_id, cores, stopping, at):
            self.rows[row[0]] = row

    def expire(self, at: float) -> None:
        for row in self.tracker.expire(at):
            self.rows[row[0]] = row

    def peak(self, start: float = DAY_START, end: float = DAY_END) -> int:
        return peak_between(self.rows.values(), start, end, self.tracker.ttl).peak_cores


# --- what counts -------------------------------------------------------------------


def test_an_instance_counts_from_its_report_until_ttl_after_its_last_report() -> None:
    fleet = Fleet()
    fleet.report("gw-1", 8, DAY_START + 100)
    assert fleet.tracker.current_total(DAY_START + 100) == (8, 1)
    assert fleet.tracker.current_total(DAY_START + 100 + TTL - 0.001) == (8, 1)
    assert fleet.tracker.current_total(DAY_START + 100 + TTL) == (0, 0)


def test_an_instance_that_keeps_reporting_keeps_counting() -> None:
    fleet = Fleet()
    for n in range(10):
        fleet.report("gw-1", 8, DAY_START + 10 * n)
    assert fleet.tracker.current_total(DAY_START + 90 + TTL - 1) == (8, 1)


def test_an_instance_stops_counting_ttl_after_its_last_report() -> None:
    fleet = Fleet()
    fleet.report("gw-1", 8, DAY_START)
    fleet.expire(DAY_START + TTL)
    # an instance starting just as the first one lapses does not overlap it
    fleet.report("gw-2", 8, DAY_START + TTL)
    assert fleet.rows[1][5] == DAY_START + TTL
    assert fleet.peak() == 8


def test_an_instance_reporting_stopping_stops_counting_at_once() -> None:
    fleet = Fleet()
    fleet.report("gw-1", 8, DAY_START)
    fleet.report("gw-1", 0, DAY_START + 5, stopping=True)
    assert fleet.tracker.current_total(DAY_START + 5) == (0, 0)
    fleet.report("gw-2", 8, DAY_START + 6)
    assert fleet.peak() == 8


def test_without_stopping_a_replacement_within_the_ttl_counts_twice() -> None:
    fleet = Fleet()
    fleet.report("gw-1", 8, DAY_START)
    fleet.report("gw-2", 8, DAY_START + 6)
    assert fleet.peak() == 16


def test_a_report_after_the_ttl_lapsed_starts_a_new_interval_without_filling_the_gap() -> None:
    fleet = Fleet()
    fleet.report("gw-1", 8, DAY_START)
    fleet.report("gw-2", 8, DAY_START + 50)
    fleet.report("gw-1", 8, DAY_START + 100)
    gw_1 = [(r[3], r[5]) for r in sorted(fleet.rows.values()) if r[1] == "gw-1"]
    assert gw_1 == [(DAY_START, DAY_START + TTL), (DAY_START + 100, None)]
    # gw-2 counted [50, 80), while gw-1 was silent: they never overlap
    assert fleet.peak() == 8


def test_a_change_of_cores_ends_one_interval_and_starts_the_next_at_the_same_instant() -> None:
    fleet = Fleet()
    fleet.report("gw-1", 8, DAY_START)
    fleet.report("gw-1", 4, DAY_START + 10)
    assert fleet.tracker.current_total(DAY_START + 10) == (4, 1)
    assert fleet.peak() == 8
    assert fleet.peak(DAY_START + 10, DAY_END) == 4


def test_reports_of_the_same_cores_extend_one_interval() -> None:
    fleet = Fleet()
    for n in range(8_640):
        fleet.report("gw-1", 8, DAY_START + 10 * n)
    assert len(fleet.rows) == 1


# --- the day's peak ----------------------------------------------------------------


def test_the_total_is_the_sum_of_the_instances_counting_at_an_instant() -> None:
    fleet = Fleet()
    fleet.report("gw-1", 8, DAY_START)
    fleet.report("gw-2", 4, DAY_START + 1)
    fleet.report("gw-3", 2, DAY_START + 2)
    assert fleet.tracker.current_total(DAY_START + 2) == (14, 3)


def test_a_day_without_reports_has_peak_0() -> None:
    peak = peak_between([], DAY_START, DAY_END, TTL)
    assert (peak.peak_cores, peak.peak_at, peak.instances) == (0, None, ())


def test_the_peak_is_the_largest_total_at_any_instant_and_names_its_instances() -> None:
    fleet = Fleet()
    fleet.report("gw-a", 8, DAY_START + 100)
    fleet.report("gw-b", 8, DAY_START + 110)
    fleet.report("gw-c", 4, DAY_START + 5_000)
    peak = peak_between(fleet.rows.values(), DAY_START, DAY_END, TTL)
    assert peak.peak_cores == 16
    assert peak.peak_at == DAY_START + 110
    assert peak.instances == (("gw-a", 8), ("gw-b", 8))


def test_an_interval_across_midnight_counts_on_both_days() -> None:
    fleet = Fleet()
    for n in range(7):
        fleet.report("gw-1", 8, DAY_END - 30 + 10 * n)
    assert fleet.peak(DAY_START, DAY_END) == 8
    assert fleet.peak(DAY_END, DAY_END + 86_400) == 8


def test_an_interval_that_ended_before_the_day_does_not_count() -> None:
    fleet = Fleet()
    fleet.report("gw-1", 8, DAY_START - 100)
    fleet.expire(DAY_START)
    assert fleet.peak() == 0


def test_a_rolling_restart_with_stopping_is_not_counted_twice() -> None:
    fleet = Fleet()
    for n in range(10):
        fleet.report(f"old-{n}", 4, DAY_START)
    at = DAY_START + 60
    for n in range(10):
        # each old instance is replaced in turn, all within one TTL
        fleet.report(f"old-{n}", 0, at, stopping=True)
        fleet.report(f"new-{n}", 4, at)
        at += 2
    assert fleet.peak() == 40


# --- what a report may say -----------------------------------------------------------


@pytest.mark.parametrize("instance_id", ["", "x" * 129, "gw 1", "gw/1", "gw\n1", "gw-ü", "gw;drop"])
def test_a_bad_instance_id_is_rejected(instance_id: str) -> None:
    with pytest.raises(UsageRejected) as raised:
        check_report(instance_id, 8, False)
    assert raised.value.reason == "INVALID_INSTANCE_ID"


def test_a_refused_report_says_what_a_good_one_looks_like() -> None:
    with pytest.raises(UsageRejected) as bad_id:
        check_report("gw 1", 8, False)
    assert bad_id.value.message == (
        "instance_id must be 1 to 128 characters of letters, digits and '._:-'"
    )
    with pytest.raises(UsageRejected) as bad_cores:
        check_report("gw-1", 0, False)
    assert bad_cores.value.message == "cores must be 1 to 4096 (or 0 together with stopping); got 0"


@pytest.mark.parametrize(
    ("cores", "stopping"), [(0, False), (-1, False), (-1, True), (MAX_CORES + 1, False)]
)
def test_bad_cores_are_rejected(cores: int, stopping: bool) -> None:
    with pytest.raises(UsageRejected) as raised:
        check_report("gw-1", cores, stopping)
    assert raised.value.reason == "INVALID_CORES"


@pytest.mark.parametrize(
    ("instance_id", "cores", "stopping"),
    [
        ("a", 1, False),
        ("x" * 128, MAX_CORES, False),
        ("gw-1.zone_a:8080", 8, False),
        ("gw-1", 0, True),
    ],
)
def test_a_good_report_is_accepted_and_counts_its_cores_or_stops_the_instance(
    instance_id: str, cores: int, stopping: bool
) -> None:
    check_report(instance_id, cores, stopping)
    fleet = Fleet()
    fleet.report(instance_id, 2, DAY_START)
    fleet.report(instance_id, cores, DAY_START + 1, stopping=stopping)
    if stopping:
        assert fleet.tracker.current_total(DAY_START + 1) == (0, 0)
        assert fleet.rows[1][1:] == (instance_id, 2, DAY_START, DAY_START + 1, DAY_START + 1)
    else:
        assert fleet.tracker.current_total(DAY_START + 1) == (cores, 1)
        assert fleet.peak(DAY_START + 1, DAY_END) == cores
        assert fleet.rows[2][1:] == (instance_id, cores, DAY_START + 1, DAY_START + 1, None)


# --- what a usage history request may ask ------------------------------------------------


@pytest.mark.parametrize(
    ("days", "day"), [(0, ""), (3660, ""), (1, "2027-01-05"), (0, "2028-02-29")]
)
def test_a_history_of_0_to_3660_days_or_of_one_dated_day_may_be_asked_for(
    days: int, day: str
) -> None:
    check_history_request(days, day)


@pytest.mark.parametrize("days", [-1, 3661])
def test_a_history_of_more_than_3660_days_or_of_negative_days_is_refused(days: int) -> None:
    with pytest.raises(Refused) as raised:
        check_history_request(days, "")
    assert (raised.value.reason, raised.value.message) == (
        "INVALID_ARGUMENT",
        f"days must be 0 (meaning 30) to 3660; got {days}",
    )


@pytest.mark.parametrize(
    ("day", "quoted"),
    [
        ("yesterday", "'yesterday'"),
        ("2027-02-29", "'2027-02-29'"),
        ("9" * 100, "'" + "9" * 40 + "'... (100 characters)"),
        # other ISO 8601 forms of a date name no stored day
        ("20270105", "'20270105'"),
        ("2027-W01-1", "'2027-W01-1'"),
    ],
    ids=["words", "no-such-date", "long", "basic-format", "week-date"],
)
def test_a_day_that_is_not_a_date_is_refused_with_a_short_quote_of_it(
    day: str, quoted: str
) -> None:
    for check in (lambda: check_history_request(0, day), lambda: check_day(day)):
        with pytest.raises(Refused) as raised:
            check()
        assert (raised.value.reason, raised.value.message) == (
            "INVALID_ARGUMENT",
            f"day must be a date, YYYY-MM-DD; got {quoted}",
        )


# --- what the service watches to know the current total changed ------------------------


def test_the_trackers_version_moves_forward_whenever_an_instance_starts_or_stops_counting() -> None:
    fleet = Fleet()
    versions = [fleet.tracker.version]

    def moved() -> bool:
        versions.append(fleet.tracker.version)
        return versions[-1] > versions[-2]

    fleet.report("gw-1", 8, DAY_START)
    assert moved(), "started"
    fleet.report("gw-1", 8, DAY_START + 10)
    assert not moved(), "the same cores again change nothing"
    fleet.report("gw-2", 4, DAY_START + 11)
    assert moved(), "another started"
    fleet.report("gw-1", 0, DAY_START + 12, stopping=True)
    assert moved(), "stopped"
    fleet.expire(DAY_START + 11 + TTL)
    assert moved(), "lapsed"
    fleet.report("gw-3", 2, DAY_START + 100)
    assert moved(), "started again"


def test_a_replica_closing_an_older_interval_leaves_the_newer_one_another_replica_opened() -> None:
    # read from the database: another replica has opened the instance's 8-core interval
    view = FleetView(TTL, ["gw-1"], [8], [DAY_START + 10], [DAY_START + 10])
    # this replica's commit of a close of the instance's earlier 4-core interval comes later
    view.follow([(1, "gw-1", 4, DAY_START, DAY_START + 5, DAY_START + 10)])
    assert view.current_total(DAY_START + 11) == (8, 1)


def test_a_replica_stopping_an_instance_it_reported_to_several_times_ends_it_in_its_view() -> None:
    view = FleetView(TTL)
    view.follow([(1, "gw-1", 4, DAY_START, DAY_START, None)])
    view.follow([(1, "gw-1", 4, DAY_START, DAY_START + 5, None)])  # extended
    view.follow([(1, "gw-1", 4, DAY_START, DAY_START + 8, DAY_START + 8)])  # stopping
    assert view.current_total(DAY_START + 9) == (0, 0)


@pytest.mark.parametrize(
    "short",
    [
        ("instance_ids",),
        ("cores",),
        ("started_at",),
        ("last_seen_at",),
        ("instance_ids", "cores"),
        ("instance_ids", "last_seen_at"),
    ],
)
def test_a_fleet_read_whose_columns_disagree_in_length_is_refused_whole(
    short: tuple[str, ...],
) -> None:
    columns: dict[str, list[Any]] = {
        "instance_ids": ["gw-1", "gw-2"],
        "cores": [4, 8],
        "started_at": [DAY_START, DAY_START],
        "last_seen_at": [DAY_START, DAY_START],
    }
    for name in short:
        columns[name] = columns[name][:1]
    with pytest.raises(ValueError):
        FleetView(TTL, **columns)


def test_the_fleet_view_moves_its_version_when_an_instance_starts_stops_or_changes_cores() -> None:
    view = FleetView(TTL)
    versions = [view.version]
    for row in [
        (1, "gw-1", 4, DAY_START, DAY_START, None),  # starts
        (1, "gw-1", 4, DAY_START, DAY_START + 10, None),  # extends: the total cannot change
        (2, "gw-1", 8, DAY_START + 20, DAY_START + 20, None),  # changes cores
        (2, "gw-1", 8, DAY_START + 20, DAY_START + 25, DAY_START + 25),  # stops
    ]:
        view.follow([row])
        versions.append(view.version)
    assert versions == [0, 1, 1, 2, 3]


def test_reading_a_large_fleet_leaves_nothing_for_the_garbage_collector_to_walk() -> None:
    instances = 20_000
    gc.collect()
    before = len(gc.get_objects())
    view = FleetView(
        TTL,
        [f"gw-{n}" for n in range(instances)],
        [4] * instances,
        [DAY_START] * instances,
        [DAY_START] * instances,
    )
    gc.collect()
    # a replica reads the fleet every second or so: objects per instance would make every
    # full collection walk the whole fleet, stalling the event loop for milliseconds
    assert len(gc.get_objects()) - before < 100
    assert view.current_total(DAY_START) == (4 * instances, instances)


def test_a_report_committed_after_its_day_was_judged_counts_from_the_days_end() -> None:
    # another replica judged the day ending at DAY_END before this report committed
    assert placed_after(DAY_END - 1, evaluated_until=DAY_END) == DAY_END
    assert placed_after(DAY_END + 5, evaluated_until=DAY_END) == DAY_END + 5
