"""The state machine holds for any run of days: `judge` against the SPEC's transition table.

`spec_table` below is the table in the SPEC, one branch per row, written to be
read beside it. Extend it row by row when the table grows.
"""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.runtime import (
    NORMAL,
    Calendar,
    RuntimeState,
    Standing,
    grace_end_after_moment,
    judge,
)

QUOTA = 16
EXAMPLES = settings(max_examples=300)
# zones with daylight saving, with odd offsets, and on both sides of the date line
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/Los_Angeles",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Kiritimati",
    "Pacific/Honolulu",
)


def spec_table(
    before: Standing, peak_cores: int, max_cores: int, midnight: float, grace_ends: float
) -> Standing:
    """The SPEC's transition table. `grace_ends`: the end of a grace period starting now."""
    within = peak_cores <= max_cores
    exceeded = RuntimeState.DP_CORE_EXCEEDED
    if before.state is RuntimeState.NORMAL and within:
        return Standing(RuntimeState.NORMAL)
    if before.state is RuntimeState.NORMAL:
        return Standing(exceeded, grace_ends)
    if before.state is exceeded and within:
        return Standing(RuntimeState.NORMAL)  # grace cleared
    if before.state is exceeded:
        assert before.grace_ends_at is not None
        grace_ended = midnight >= before.grace_ends_at
        return Standing(RuntimeState.RESTRICTED) if grace_ended else before
    if within:  # RESTRICTED
        return Standing(RuntimeState.NORMAL)
    return Standing(RuntimeState.RESTRICTED)


# instants as whole seconds within a few weeks of 2027-01-01
instants = st.integers(1_798_761_600, 1_798_761_600 + 40 * 86_400).map(float)
standings = st.one_of(
    st.just(NORMAL),
    st.builds(lambda at: Standing(RuntimeState.DP_CORE_EXCEEDED, at), instants),
    st.just(Standing(RuntimeState.RESTRICTED)),
)
peaks = st.integers(0, 2 * QUOTA)
# first days anywhere, and often a few days before a clock change in Europe, the USA or Lord Howe
DAYLIGHT_SAVING_CHANGES = [
    date(2027, 3, 14),
    date(2027, 3, 28),
    date(2027, 4, 4),
    date(2027, 10, 3),
    date(2027, 10, 31),
    date(2027, 11, 7),
]
first_days = st.one_of(
    st.dates(date(2026, 1, 1), date(2030, 12, 31)),
    st.builds(
        lambda change, before: change - timedelta(days=before),
        st.sampled_from(DAYLIGHT_SAVING_CHANGES),
        st.integers(0, 10),
    ),
)


@EXAMPLES
@given(standings, peaks, st.integers(1, 2 * QUOTA), instants, instants)
def test_every_judgement_follows_the_transition_table(
    before: Standing, peak: int, max_cores: int, midnight: float, grace_ends: float
) -> None:
    after = judge(before, peak, max_cores, midnight, grace_ends)
    assert after == spec_table(before, peak, max_cores, midnight, grace_ends)
    # the grace end is there exactly while DP_CORE_EXCEEDED
    assert (after.grace_ends_at is not None) == (after.state is RuntimeState.DP_CORE_EXCEEDED)


def run_of_days(zone: str, first_day: date, over_quota: list[bool]) -> list[RuntimeState]:
    """Judge each day at the midnight that ends it, from NORMAL; the state after each day."""
    calendar = Calendar(ZoneInfo(zone))
    standing, states = NORMAL, []
    for n, over in enumerate(over_quota):
        next_day = first_day + timedelta(days=n + 1)
        peak = QUOTA + 1 if over else QUOTA
        standing = judge(
            standing,
            peak,
            QUOTA,
            calendar.start_of(next_day),
            calendar.grace_end_after_midnight(next_day),
        )
        states.append(standing.state)
    return states


@EXAMPLES
@given(
    st.sampled_from(ZONES),
    first_days,
    # runs of days over or within the quota
    st.lists(st.tuples(st.booleans(), st.integers(1, 12)), max_size=5).map(
        lambda runs: [over for over, days in runs for _ in range(days)]
    ),
)
def test_days_over_quota_in_a_row_are_exceeded_for_seven_evaluations_then_restricted(
    zone: str, first_day: date, over_quota: list[bool]
) -> None:
    """In any zone, across daylight saving: the state follows the count of over-quota days."""
    in_a_row = 0
    expected = []
    for over in over_quota:
        in_a_row = in_a_row + 1 if over else 0
        if in_a_row == 0:
            expected.append(RuntimeState.NORMAL)
        elif in_a_row <= 7:
            expected.append(RuntimeState.DP_CORE_EXCEEDED)
        else:
            expected.append(RuntimeState.RESTRICTED)
    assert run_of_days(zone, first_day, over_quota) == expected


@EXAMPLES
@given(
    st.lists(st.tuples(st.integers(1, 3 * 86_400), peaks, st.integers(1, 2 * QUOTA)), max_size=30)
)
def test_a_grace_end_is_fixed_when_the_overage_starts_and_restriction_comes_only_after_it(
    judgements: list[tuple[int, int, int]],
) -> None:
    """Midnights and license changes (any quota, at any moment): a grace end never moves."""
    standing, at = NORMAL, 1_798_761_600.0
    for gap, peak, max_cores in judgements:
        at += gap
        after = judge(standing, peak, max_cores, at, grace_end_after_moment(at))
        if standing.state is RuntimeState.DP_CORE_EXCEEDED:
            assert standing.grace_ends_at is not None
            if after.state is RuntimeState.DP_CORE_EXCEEDED:
                assert after.grace_ends_at == standing.grace_ends_at
            if after.state is RuntimeState.RESTRICTED:
                assert at >= standing.grace_ends_at
        if after.state is RuntimeState.RESTRICTED:
            assert standing.state is not RuntimeState.NORMAL, "never straight to RESTRICTED"
        standing = after
