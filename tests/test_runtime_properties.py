"""The state machine holds for any run of days: `judge` against the SPEC's transition table.

`spec_table` below is the table in the SPEC, one branch per row, written to be
read beside it. Extend it row by row when the table grows.
"""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from licensing_server.domain.runtime import (
    NORMAL,
    Calendar,
    Judgement,
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
EXCEEDED = RuntimeState.DP_CORE_EXCEEDED
RESTRICTED = RuntimeState.RESTRICTED


def spec_table(before: Standing, j: Judgement) -> Standing:
    """The SPEC, sentence by sentence: the transition table, observed days, overage episodes."""
    within = j.peak_cores <= j.max_dp_cores
    episode = before.episode_grace_ends_at  # the open episode's grace end, None when closed
    # "an unobserved day within the quota proves nothing: it leaves the state as it was"
    if within and not j.observed:
        return before
    # rows NORMAL / DP_CORE_EXCEEDED / RESTRICTED with peak <= max: NORMAL; the episode
    # "closes only at a midnight that judges an observed day within the quota"
    if within and j.at_midnight:
        return Standing(RuntimeState.NORMAL)
    if within:
        return Standing(RuntimeState.NORMAL, episode)
    # row RESTRICTED, peak > max: RESTRICTED
    if before.state is RESTRICTED:
        return Standing(RESTRICTED, episode)
    # row NORMAL, peak > max: DP_CORE_EXCEEDED, grace ending 7 days on, "or at the open overage
    # episode's grace end", "RESTRICTED at once if that end has passed"
    # row DP_CORE_EXCEEDED, peak > max: RESTRICTED once the grace ended, else as it was
    if episode is None:
        return Standing(EXCEEDED, j.new_grace_ends_at)
    return Standing(RESTRICTED if j.at >= episode else EXCEEDED, episode)


# instants as whole seconds within a few weeks of 2027-01-01
instants = st.integers(1_798_761_600, 1_798_761_600 + 40 * 86_400).map(float)
standings = st.one_of(
    st.just(NORMAL),
    # NORMAL again after a license that covered the peak, the episode still open
    st.builds(lambda at: Standing(RuntimeState.NORMAL, at), instants),
    st.builds(lambda at: Standing(EXCEEDED, at), instants),
    st.builds(lambda at: Standing(RESTRICTED, at), instants),
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


judgements = st.builds(
    Judgement,
    peaks,
    st.integers(1, 2 * QUOTA),
    instants,
    instants,
    observed=st.booleans(),
    at_midnight=st.booleans(),
)


@EXAMPLES
@given(standings, judgements)
def test_every_judgement_follows_the_transition_table(before: Standing, j: Judgement) -> None:
    after = judge(before, j)
    assert after == spec_table(before, j)
    # the grace end shows exactly while DP_CORE_EXCEEDED
    assert (after.grace_ends_at is not None) == (after.state is EXCEEDED)


def expected_by_counting(days: list[tuple[bool, bool]]) -> list[RuntimeState]:
    """A model by day numbers, not instants: the state after each day's evaluation.

    An episode opens on the first day over quota and restricts from the evaluation 7 days
    after its opening one; an observed day within quota ends it; an unobserved one within
    quota changes nothing.
    """
    opened_on: int | None = None
    state, states = RuntimeState.NORMAL, []
    for n, (over, observed) in enumerate(days):
        if over:
            if opened_on is None:
                opened_on = n
            restricted = state is RESTRICTED or n - opened_on >= 7
            state = RESTRICTED if restricted else EXCEEDED
        elif observed:
            opened_on, state = None, RuntimeState.NORMAL
        states.append(state)
    return states


def run_of_days(zone: str, first_day: date, days: list[tuple[bool, bool]]) -> list[RuntimeState]:
    """Judge each day at the midnight that ends it, from NORMAL; the state after each day."""
    calendar = Calendar(ZoneInfo(zone))
    standing, states = NORMAL, []
    for n, (over, observed) in enumerate(days):
        midnight = calendar.start_of(first_day + timedelta(days=n + 1))
        peak = QUOTA + 1 if over else QUOTA
        standing = judge(
            standing,
            Judgement(
                peak,
                QUOTA,
                midnight,
                calendar.grace_end_after_midnight(midnight),
                observed=observed,
            ),
        )
        states.append(standing.state)
    return states


@EXAMPLES
@given(
    st.sampled_from(ZONES),
    first_days,
    # runs of days over or within the quota, each observed or not
    st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(1, 12)), max_size=6).map(
        lambda runs: [(over, observed) for over, observed, days in runs for _ in range(days)]
    ),
)
def test_the_state_after_each_midnight_follows_the_days_since_the_overage_began(
    zone: str, first_day: date, days: list[tuple[bool, bool]]
) -> None:
    """In any zone, across daylight saving, with days the service did not watch."""
    assert run_of_days(zone, first_day, days) == expected_by_counting(days)


@EXAMPLES
@given(
    st.sampled_from(ZONES),
    first_days,
    st.lists(st.booleans(), max_size=40),
)
def test_days_over_quota_in_a_row_are_exceeded_for_seven_evaluations_then_restricted(
    zone: str, first_day: date, over_quota: list[bool]
) -> None:
    in_a_row, expected = 0, []
    for over in over_quota:
        in_a_row = in_a_row + 1 if over else 0
        if in_a_row == 0:
            expected.append(RuntimeState.NORMAL)
        elif in_a_row <= 7:
            expected.append(EXCEEDED)
        else:
            expected.append(RESTRICTED)
    observed_days = [(over, True) for over in over_quota]
    assert run_of_days(zone, first_day, observed_days) == expected


@EXAMPLES
@given(
    st.lists(
        st.tuples(
            st.integers(1, 3 * 86_400),
            peaks,
            st.integers(1, 2 * QUOTA),
            st.booleans(),
            st.booleans(),
        ),
        max_size=30,
    )
)
def test_an_episodes_grace_end_never_moves_and_restriction_comes_only_after_it(
    steps: list[tuple[int, int, int, bool, bool]],
) -> None:
    """Midnights and license changes (any quota, at any moment), watched or not: swapping
    licenses never buys grace."""
    standing, at = NORMAL, 1_798_761_600.0
    for gap, peak, max_cores, at_midnight, observed in steps:
        at += gap
        after = judge(
            standing,
            Judgement(
                peak,
                max_cores,
                at,
                grace_end_after_moment(at),
                observed=observed,
                at_midnight=at_midnight,
            ),
        )
        opened = standing.episode_grace_ends_at
        if opened is not None and after.episode_grace_ends_at is not None:
            assert after.episode_grace_ends_at == opened, "an open episode keeps its grace end"
        if opened is not None and after.episode_grace_ends_at is None:
            assert at_midnight and observed and peak <= max_cores, "only a watched midnight closes"
        if after.state is RESTRICTED and standing.state is not RESTRICTED:
            assert opened is not None and at >= opened, "restricted only after the grace end"
        standing = after
