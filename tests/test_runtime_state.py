"""The runtime state machine and the calendar as plain Python: the transition table, row by row."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from server.domain.runtime import (
    GRACE_DAYS,
    NORMAL,
    Calendar,
    RuntimeState,
    Standing,
    grace_end_after_moment,
    judge,
)

DAY = 86_400.0
QUOTA = 16
UTC_CALENDAR = Calendar(ZoneInfo("UTC"))
# the evaluation at the start of 2027-01-02, and the grace a NORMAL -> exceeded change there gets
MIDNIGHT = datetime(2027, 1, 2, tzinfo=UTC).timestamp()
GRACE_END = datetime(2027, 1, 9, tzinfo=UTC).timestamp()


def utc(text: str) -> float:
    """A literal UTC instant, "YYYY-MM-DD HH:MM", as seconds since the epoch."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def exceeded(grace_ends_at: float = GRACE_END) -> Standing:
    return Standing(RuntimeState.DP_CORE_EXCEEDED, grace_ends_at)


RESTRICTED = Standing(RuntimeState.RESTRICTED)


# --- the transition table, one test per row ------------------------------------------


def test_normal_with_peak_within_quota_stays_normal() -> None:
    assert judge(NORMAL, QUOTA, QUOTA, MIDNIGHT, GRACE_END) == NORMAL


def test_normal_with_peak_over_quota_becomes_dp_core_exceeded_with_7_days_grace() -> None:
    after = judge(NORMAL, QUOTA + 1, QUOTA, MIDNIGHT, GRACE_END)
    assert after == Standing(RuntimeState.DP_CORE_EXCEEDED, GRACE_END)


def test_dp_core_exceeded_with_peak_within_quota_returns_to_normal() -> None:
    after = judge(exceeded(), QUOTA, QUOTA, MIDNIGHT + 3 * DAY, GRACE_END + 3 * DAY)
    assert after == NORMAL
    assert after.grace_ends_at is None


def test_dp_core_exceeded_over_quota_before_the_grace_end_stays_exceeded() -> None:
    # the day before the grace ends: the midnight is one day short of it
    at = GRACE_END - DAY
    assert judge(exceeded(), QUOTA + 1, QUOTA, at, at + GRACE_DAYS * DAY) == exceeded(GRACE_END)


def test_dp_core_exceeded_over_quota_at_the_grace_end_becomes_restricted() -> None:
    after = judge(exceeded(), QUOTA + 1, QUOTA, GRACE_END, GRACE_END + GRACE_DAYS * DAY)
    assert after == RESTRICTED
    assert after.grace_ends_at is None


def test_dp_core_exceeded_over_quota_after_the_grace_end_becomes_restricted() -> None:
    # a late evaluation (say, after downtime) still sees that the grace ended
    assert judge(exceeded(), QUOTA + 1, QUOTA, GRACE_END + DAY, GRACE_END + 8 * DAY) == RESTRICTED


def test_restricted_with_peak_within_quota_returns_to_normal() -> None:
    assert judge(RESTRICTED, QUOTA, QUOTA, MIDNIGHT, GRACE_END) == NORMAL


def test_restricted_with_peak_over_quota_stays_restricted() -> None:
    assert judge(RESTRICTED, QUOTA + 1, QUOTA, MIDNIGHT, GRACE_END) == RESTRICTED


def test_a_peak_exactly_at_the_quota_is_within_it() -> None:
    assert judge(NORMAL, QUOTA, QUOTA, MIDNIGHT, GRACE_END) == NORMAL
    assert (
        judge(NORMAL, QUOTA + 1, QUOTA, MIDNIGHT, GRACE_END).state is RuntimeState.DP_CORE_EXCEEDED
    )


def test_over_quota_from_day_0_is_exceeded_from_day_1_and_restricted_from_day_8() -> None:
    # day 0 is 2027-01-01; the evaluation at the start of day n judges day n - 1
    standing = NORMAL
    after: dict[int, Standing] = {}
    for n in range(1, 11):
        next_day = date(2027, 1, 1) + timedelta(days=n)
        standing = judge(
            standing,
            20,
            QUOTA,
            UTC_CALENDAR.start_of(next_day),
            UTC_CALENDAR.grace_end_after_midnight(next_day),
        )
        after[n] = standing
    assert UTC_CALENDAR.start_of(date(2027, 1, 2)) == utc("2027-01-02 00:00")
    assert after[1] == exceeded(utc("2027-01-09 00:00"))
    assert all(after[n] == exceeded(utc("2027-01-09 00:00")) for n in range(1, 8))
    # the evaluation at 2027-01-09 00:00, the start of day 8, is the one at the grace end
    assert UTC_CALENDAR.start_of(date(2027, 1, 9)) == utc("2027-01-09 00:00")
    assert after[8] == RESTRICTED
    assert after[9] == after[10] == RESTRICTED


# --- a license change stands in for the midnight ---------------------------------------


def test_a_grace_period_started_by_a_license_change_ends_7_days_after_that_moment() -> None:
    moment = utc("2027-01-02 10:30")
    assert grace_end_after_moment(moment) == utc("2027-01-09 10:30")
    assert judge(NORMAL, 20, QUOTA, moment, grace_end_after_moment(moment)) == exceeded(
        utc("2027-01-09 10:30")
    )
    # 7 x 24 hours, whatever the calendar does in between
    assert grace_end_after_moment(utc("2027-03-25 10:30")) == utc("2027-04-01 10:30")


def test_a_license_change_still_below_the_peak_never_moves_the_grace_end_later() -> None:
    later = GRACE_END - 2 * DAY
    after = judge(exceeded(GRACE_END), 20, 8, later, grace_end_after_moment(later))
    assert after == exceeded(GRACE_END)


# --- calendar days in the configured time zone ---------------------------------------


def test_a_utc_day_runs_from_midnight_to_midnight() -> None:
    day = date(2027, 1, 1)
    assert UTC_CALENDAR.start_of(day) == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert UTC_CALENDAR.end_of(day) == datetime(2027, 1, 2, tzinfo=UTC).timestamp()
    assert UTC_CALENDAR.day_of(UTC_CALENDAR.end_of(day) - 0.001) == day
    assert UTC_CALENDAR.day_of(UTC_CALENDAR.end_of(day)) == date(2027, 1, 2)


def test_days_follow_the_configured_time_zone() -> None:
    tokyo = Calendar(ZoneInfo("Asia/Tokyo"))
    # 15:30 UTC is already the next day in Tokyo (UTC+9)
    when = datetime(2027, 1, 1, 15, 30, tzinfo=UTC).timestamp()
    assert tokyo.day_of(when) == date(2027, 1, 2)
    assert tokyo.start_of(date(2027, 1, 2)) == datetime(2027, 1, 1, 15, tzinfo=UTC).timestamp()


def test_a_day_with_a_daylight_saving_change_is_23_hours_long() -> None:
    berlin = Calendar(ZoneInfo("Europe/Berlin"))
    # clocks go forward on 2027-03-28 in Europe
    spring = date(2027, 3, 28)
    assert berlin.end_of(spring) - berlin.start_of(spring) == 23 * 3600


def test_the_grace_end_after_a_midnight_is_7_calendar_days_later_across_daylight_saving() -> None:
    berlin = Calendar(ZoneInfo("Europe/Berlin"))
    # 2027-03-25 starts at 00:00 CET (UTC+1); 2027-04-01 starts at 00:00 CEST (UTC+2)
    assert berlin.start_of(date(2027, 3, 25)) == utc("2027-03-24 23:00")
    grace_end = berlin.grace_end_after_midnight(date(2027, 3, 25))
    assert grace_end == utc("2027-03-31 22:00")
    assert berlin.day_of(grace_end) == date(2027, 4, 1)
    assert grace_end - utc("2027-03-24 23:00") == 7 * 24 * 3600 - 3600
