"""The runtime state machine and the calendar as plain Python: the transition table, row by row."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from licensing_server.domain.runtime import (
    NORMAL,
    Calendar,
    DayWindow,
    Judgement,
    RuntimeState,
    Standing,
    grace_end_after_moment,
    is_observed,
    judge,
    observed_seconds,
)

DAY = 86_400.0
HOUR = 3600.0
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


def restricted(grace_ends_at: float = GRACE_END) -> Standing:
    return Standing(RuntimeState.RESTRICTED, grace_ends_at)


def at_midnight(
    before: Standing, peak: int, midnight: float = MIDNIGHT, *, observed: bool = True
) -> Standing:
    """Judge a day's peak against QUOTA at a midnight; a new episode's grace ends 7 days on."""
    return judge(before, Judgement(peak, QUOTA, midnight, midnight + 7 * DAY, observed=observed))


def at_license_change(before: Standing, peak: int, max_dp_cores: int, moment: float) -> Standing:
    return judge(
        before,
        Judgement(peak, max_dp_cores, moment, grace_end_after_moment(moment), at_midnight=False),
    )


# --- the transition table, one test per row ------------------------------------------


def test_normal_with_peak_within_quota_stays_normal() -> None:
    assert at_midnight(NORMAL, QUOTA) == NORMAL


def test_normal_with_peak_over_quota_becomes_dp_core_exceeded_with_7_days_grace() -> None:
    after = at_midnight(NORMAL, QUOTA + 1)
    assert after == Standing(RuntimeState.DP_CORE_EXCEEDED, GRACE_END)
    assert after.grace_ends_at == datetime(2027, 1, 9, tzinfo=UTC).timestamp()


def test_dp_core_exceeded_with_peak_within_quota_returns_to_normal() -> None:
    after = at_midnight(exceeded(), QUOTA, MIDNIGHT + 3 * DAY)
    assert after == NORMAL
    assert after.grace_ends_at is None
    assert after.episode_grace_ends_at is None


def test_dp_core_exceeded_over_quota_before_the_grace_end_stays_exceeded() -> None:
    # the evaluation at the start of 2027-01-08, one day before the grace ends
    at = datetime(2027, 1, 8, tzinfo=UTC).timestamp()
    assert at_midnight(exceeded(), QUOTA + 1, at) == exceeded(GRACE_END)


def test_dp_core_exceeded_over_quota_at_the_grace_end_becomes_restricted() -> None:
    after = at_midnight(exceeded(), QUOTA + 1, GRACE_END)
    assert after.state is RuntimeState.RESTRICTED
    assert after.grace_ends_at is None


def test_dp_core_exceeded_over_quota_after_the_grace_end_becomes_restricted() -> None:
    # a late evaluation (say, after downtime) still sees that the grace ended
    late = datetime(2027, 1, 10, tzinfo=UTC).timestamp()
    assert at_midnight(exceeded(), QUOTA + 1, late).state is RuntimeState.RESTRICTED


def test_restricted_with_peak_within_quota_returns_to_normal() -> None:
    assert at_midnight(restricted(), QUOTA) == NORMAL


def test_restricted_with_peak_over_quota_stays_restricted() -> None:
    assert at_midnight(restricted(), QUOTA + 1) == restricted()


def test_a_peak_exactly_at_the_quota_is_within_it() -> None:
    assert at_midnight(NORMAL, QUOTA) == NORMAL
    assert at_midnight(NORMAL, QUOTA + 1).state is RuntimeState.DP_CORE_EXCEEDED


def test_over_quota_from_day_0_is_exceeded_from_day_1_and_restricted_from_day_8() -> None:
    standing = NORMAL
    states: dict[int, RuntimeState] = {}
    for n in range(10):
        # the evaluation at the start of day n + 1 judges day n (2027-01-01 is day 0)
        midnight = datetime(2027, 1, 2 + n, tzinfo=UTC).timestamp()
        standing = at_midnight(standing, 20, midnight)
        states[n + 1] = standing.state
    assert states[1] is RuntimeState.DP_CORE_EXCEEDED
    assert all(states[n] is RuntimeState.DP_CORE_EXCEEDED for n in range(1, 8))
    assert states[8] is RuntimeState.RESTRICTED
    assert states[9] is RuntimeState.RESTRICTED


# --- a license change stands in for the midnight ---------------------------------------


def test_a_grace_period_started_by_a_license_change_ends_7_days_after_that_moment() -> None:
    moment = datetime(2027, 1, 2, 10, 30, tzinfo=UTC).timestamp()
    assert grace_end_after_moment(moment) == datetime(2027, 1, 9, 10, 30, tzinfo=UTC).timestamp()
    assert at_license_change(NORMAL, 20, QUOTA, moment) == exceeded(
        datetime(2027, 1, 9, 10, 30, tzinfo=UTC).timestamp()
    )
    # 7 x 24 hours, whatever the calendar does in between
    assert grace_end_after_moment(utc("2027-03-25 10:30")) == utc("2027-04-01 10:30")


def test_a_license_change_still_below_the_peak_never_moves_the_grace_end_later() -> None:
    later = datetime(2027, 1, 7, tzinfo=UTC).timestamp()
    assert at_license_change(exceeded(GRACE_END), 20, 8, later) == exceeded(GRACE_END)


# --- overage episodes -------------------------------------------------------------------


def test_a_license_covering_the_peak_returns_to_normal_at_once_but_keeps_the_episode_open() -> None:
    after = at_license_change(exceeded(), 20, 32, MIDNIGHT + HOUR)
    assert after.state is RuntimeState.NORMAL
    assert after.grace_ends_at is None
    assert after.episode_grace_ends_at == GRACE_END


def test_going_over_quota_again_in_an_open_episode_resumes_its_grace_end() -> None:
    covered = at_license_change(exceeded(), 20, 32, MIDNIGHT + HOUR)
    # the smaller license again, two days later: the grace still ends on the 9th
    assert at_license_change(covered, 20, QUOTA, MIDNIGHT + 2 * DAY) == exceeded(GRACE_END)
    # or the next midnight judges an over-quota day
    assert at_midnight(covered, 20, MIDNIGHT + DAY) == exceeded(GRACE_END)


def test_going_over_quota_again_after_the_episodes_grace_end_is_restricted_at_once() -> None:
    covered = at_license_change(restricted(), 20, 32, GRACE_END + DAY)
    assert covered.state is RuntimeState.NORMAL
    after = at_license_change(covered, 20, QUOTA, GRACE_END + DAY + HOUR)
    assert after.state is RuntimeState.RESTRICTED


def test_an_episode_closes_only_at_a_midnight_judging_an_observed_day_within_quota() -> None:
    covered = at_license_change(exceeded(), 20, 32, MIDNIGHT + HOUR)
    assert at_midnight(covered, QUOTA, MIDNIGHT + DAY, observed=False) == covered
    closed = at_midnight(covered, QUOTA, MIDNIGHT + DAY)
    assert closed == NORMAL
    # a later overage opens a new episode with a new grace end
    assert at_midnight(closed, 20, MIDNIGHT + 2 * DAY) == exceeded(MIDNIGHT + 9 * DAY)


# --- observed days ----------------------------------------------------------------------


def test_an_unobserved_day_within_quota_leaves_the_state_as_it_was() -> None:
    for before in (NORMAL, exceeded(), restricted()):
        assert at_midnight(before, 0, observed=False) == before


def test_an_unobserved_day_over_quota_is_judged_like_any_other() -> None:
    assert at_midnight(NORMAL, 20, observed=False) == exceeded()
    assert at_midnight(exceeded(), 20, GRACE_END, observed=False).state is RuntimeState.RESTRICTED


def test_a_grace_end_passing_during_an_unobserved_day_applies_at_the_next_evaluation() -> None:
    quiet = at_midnight(exceeded(), 0, GRACE_END, observed=False)
    assert quiet == exceeded()
    assert at_midnight(quiet, 20, GRACE_END + DAY).state is RuntimeState.RESTRICTED


def test_a_day_is_observed_when_the_service_ran_for_at_least_half_of_it() -> None:
    start, end = MIDNIGHT, MIDNIGHT + DAY
    half = [(start - HOUR, start + 6 * HOUR), (start + 18 * HOUR, end + HOUR)]
    assert observed_seconds(half, start, end) == 12 * HOUR
    assert is_observed(12 * HOUR, start, end)
    assert not is_observed(12 * HOUR - 1, start, end)
    assert observed_seconds([(end, end + DAY)], start, end) == 0
    # the share is configurable
    assert is_observed(6 * HOUR, start, end, share=0.25)


def test_replicas_running_at_once_observe_the_time_they_overlap_once() -> None:
    start, end = MIDNIGHT, MIDNIGHT + DAY
    # three replicas: two ran the morning together, one the afternoon; one span in another
    spans = [
        (start, start + 8 * HOUR),
        (start + 2 * HOUR, start + 10 * HOUR),
        (start + 3 * HOUR, start + 4 * HOUR),
        (start + 12 * HOUR, start + 14 * HOUR),
    ]
    assert observed_seconds(spans, start, end) == 12 * HOUR
    assert not is_observed(observed_seconds(spans[:2], start, end), start, end)


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
    # the midnight that starts 2027-03-25 in Berlin (CET, UTC+1)
    midnight = datetime(2027, 3, 24, 23, tzinfo=UTC).timestamp()
    grace_end = berlin.grace_end_after_midnight(midnight)
    # 2027-04-01 starts at 22:00 UTC the day before: clocks went forward on 2027-03-28
    assert grace_end == datetime(2027, 3, 31, 22, tzinfo=UTC).timestamp()
    assert grace_end - midnight == 7 * DAY - 3600


# --- each instant in exactly one evaluated day, whatever the time zone ------------------


def utc_at(*fields: int) -> float:
    return datetime(*fields, tzinfo=UTC).timestamp()  # type: ignore[misc]


def test_the_day_after_a_utc_day_in_los_angeles_starts_where_it_ended_and_is_longer() -> None:
    last = DayWindow(date(2027, 1, 5), utc_at(2027, 1, 5), utc_at(2027, 1, 6))
    following = Calendar(ZoneInfo("America/Los_Angeles")).window_after(last)
    # the next Los Angeles midnight after 2027-01-06T00:00Z ends 2027-01-06 there (08:00Z)
    assert following == DayWindow(date(2027, 1, 6), utc_at(2027, 1, 6), utc_at(2027, 1, 7, 8))


def test_the_day_after_a_utc_day_in_tokyo_starts_where_it_ended_and_is_shorter() -> None:
    last = DayWindow(date(2027, 1, 5), utc_at(2027, 1, 5), utc_at(2027, 1, 6))
    following = Calendar(ZoneInfo("Asia/Tokyo")).window_after(last)
    assert following == DayWindow(date(2027, 1, 6), utc_at(2027, 1, 6), utc_at(2027, 1, 6, 15))


def test_from_kiritimati_to_honolulu_no_hour_is_skipped() -> None:
    # Kiritimati is UTC+14: its 2027-01-05 ends at 10:00Z on the 5th
    last = DayWindow(date(2027, 1, 5), utc_at(2027, 1, 4, 10), utc_at(2027, 1, 5, 10))
    following = Calendar(ZoneInfo("Pacific/Honolulu")).window_after(last)
    assert following.starts_at == last.ends_at
    # Honolulu (UTC-10) ends 2027-01-06 at 10:00Z on the 7th: a 48-hour day
    assert following == DayWindow(date(2027, 1, 6), utc_at(2027, 1, 5, 10), utc_at(2027, 1, 7, 10))


def test_from_honolulu_to_kiritimati_a_day_that_would_be_empty_is_passed_over() -> None:
    # Honolulu's 2027-01-05 ends at 10:00Z on the 6th, which is where Kiritimati's 06 ends too
    last = DayWindow(date(2027, 1, 5), utc_at(2027, 1, 5, 10), utc_at(2027, 1, 6, 10))
    following = Calendar(ZoneInfo("Pacific/Kiritimati")).window_after(last)
    assert following == DayWindow(date(2027, 1, 7), utc_at(2027, 1, 6, 10), utc_at(2027, 1, 7, 10))


def test_consecutive_days_in_one_zone_are_its_calendar_days() -> None:
    calendar = Calendar(ZoneInfo("Europe/Berlin"))
    first = calendar.first_window(utc_at(2027, 3, 27, 12))
    second = calendar.window_after(first)
    assert first == DayWindow(date(2027, 3, 27), utc_at(2027, 3, 26, 23), utc_at(2027, 3, 27, 23))
    # the day clocks go forward is 23 hours long
    assert second == DayWindow(date(2027, 3, 28), utc_at(2027, 3, 27, 23), utc_at(2027, 3, 28, 22))
