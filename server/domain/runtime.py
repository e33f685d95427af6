"""The runtime state machine: each day's peak against the licensed quota.

The grace period belongs to an *overage episode*, not to a license: the first
over-quota judgement opens the episode and fixes its grace end; only a
midnight that judges an observed day within the quota closes it. While it is
open, going over quota again resumes it with its original grace end, so
swapping licenses back and forth never buys more grace.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# the state and its record are shared with the decision table, which the client package owns
from licensing.decision import NORMAL as NORMAL
from licensing.decision import RuntimeState as RuntimeState
from licensing.decision import Standing as Standing

GRACE_DAYS = 7
# By default a day is observed when the service ran for at least half of it.
OBSERVED_SHARE = 0.5


@dataclass(frozen=True)
class Judgement:
    """One peak judged against one quota: at a midnight, or at a license change."""

    peak_cores: int
    max_dp_cores: int
    # the evaluation's midnight, or the moment the license changed
    at: float
    # the grace end an episode opened by this judgement gets
    new_grace_ends_at: float
    # the service ran for enough of the day for a peak within the quota to prove something
    observed: bool = True
    # only a midnight closes an episode; a license change that covers the peak does not
    at_midnight: bool = True


def judge(before: Standing, judgement: Judgement) -> Standing:
    """Apply the transition table to one peak."""
    if judgement.peak_cores <= judgement.max_dp_cores:
        if not judgement.observed:
            return before  # a day the service did not watch proves nothing
        if judgement.at_midnight:
            return NORMAL
        return Standing(RuntimeState.NORMAL, before.episode_grace_ends_at)
    grace_ends_at = before.episode_grace_ends_at
    if grace_ends_at is None:
        return Standing(RuntimeState.DP_CORE_EXCEEDED, judgement.new_grace_ends_at)
    if before.state is RuntimeState.RESTRICTED or judgement.at >= grace_ends_at:
        return Standing(RuntimeState.RESTRICTED, grace_ends_at)
    return Standing(RuntimeState.DP_CORE_EXCEEDED, grace_ends_at)


def is_observed(
    observed_seconds: float, starts_at: float, ends_at: float, share: float = OBSERVED_SHARE
) -> bool:
    return observed_seconds >= share * (ends_at - starts_at)


def observed_seconds(spans: list[tuple[float, float]], starts_at: float, ends_at: float) -> float:
    """How long the service ran within [starts_at, ends_at), from its (start, end) spans.

    With several replicas each stores its own spans, and the service ran while any one of
    them did: overlapping spans count once.
    """
    covered = 0.0
    reached = starts_at
    for start, end in sorted(spans):
        begins, ends = max(start, reached), min(end, ends_at)
        if begins < ends:
            covered += ends - begins
            reached = ends
    return covered


@dataclass(frozen=True)
class DayWindow:
    """One evaluated day: its label and the instants [starts_at, ends_at) it covers."""

    day: date
    starts_at: float
    ends_at: float


@dataclass(frozen=True)
class Calendar:
    """Calendar days in the configured time zone."""

    zone: ZoneInfo

    def day_of(self, when: float) -> date:
        return datetime.fromtimestamp(when, self.zone).date()

    def start_of(self, day: date) -> float:
        """The midnight that starts `day`, as seconds since the epoch."""
        return datetime.combine(day, time(0), self.zone).timestamp()

    def end_of(self, day: date) -> float:
        return self.start_of(day + timedelta(days=1))

    def first_window(self, deployed_at: float) -> DayWindow:
        day = self.day_of(deployed_at)
        return DayWindow(day, self.start_of(day), self.end_of(day))

    def window_after(self, last: DayWindow) -> DayWindow:
        """The day after `last`, starting where `last` ended.

        Each instant belongs to exactly one evaluated day: when the time zone
        changed since `last` was evaluated, the next day starts at `last`'s end
        and ends at the first midnight of this zone after it, so that day is
        longer or shorter, and no hour is skipped or judged twice.
        """
        day = last.day + timedelta(days=1)
        while self.end_of(day) <= last.ends_at:
            day += timedelta(days=1)
        return DayWindow(day, last.ends_at, self.end_of(day))

    def grace_end_after_midnight(self, midnight: float) -> float:
        """7 calendar days after a midnight of this zone."""
        return self.start_of(self.day_of(midnight) + timedelta(days=GRACE_DAYS))


def grace_end_after_moment(at: float) -> float:
    """A grace period that starts at a license change ends 7 days later."""
    return at + GRACE_DAYS * 86_400.0
