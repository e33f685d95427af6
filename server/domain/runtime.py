"""The runtime state machine: each day's peak against the licensed quota."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

GRACE_DAYS = 7


class RuntimeState(StrEnum):
    NORMAL = "NORMAL"
    DP_CORE_EXCEEDED = "DP_CORE_EXCEEDED"
    RESTRICTED = "RESTRICTED"


@dataclass(frozen=True)
class Standing:
    """The runtime state and, while DP_CORE_EXCEEDED, when its grace period ends."""

    state: RuntimeState
    grace_ends_at: float | None = None


NORMAL = Standing(RuntimeState.NORMAL)


def judge(
    before: Standing, peak_cores: int, max_dp_cores: int, at: float, grace_ends: float
) -> Standing:
    """Apply the transition table to one day's peak.

    `at` is the evaluation's midnight (or the moment a license changed), and
    `grace_ends` the end a grace period starting at `at` would have.
    """
    if peak_cores <= max_dp_cores:
        return NORMAL
    if before.state is RuntimeState.NORMAL:
        return Standing(RuntimeState.DP_CORE_EXCEEDED, grace_ends)
    if before.state is RuntimeState.DP_CORE_EXCEEDED:
        assert before.grace_ends_at is not None
        if at >= before.grace_ends_at:
            return Standing(RuntimeState.RESTRICTED)
        return before
    return Standing(RuntimeState.RESTRICTED)


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

    def grace_end_after_midnight(self, day: date) -> float:
        """7 days after the midnight that starts `day`, in calendar days."""
        return self.start_of(day + timedelta(days=GRACE_DAYS))


def grace_end_after_moment(at: float) -> float:
    """A grace period that starts at a license change ends 7 days later."""
    return at + GRACE_DAYS * 86_400.0
