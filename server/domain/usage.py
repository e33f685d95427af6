"""Core usage: which gateway instances count at an instant, and a day's peak.

An instance counts from a report until its next report, until `ttl` after its
last report, or until it reports that it is stopping. Consecutive reports of
the same cores extend one interval, so storage grows with changes in usage,
not with the number of reports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from licensing_server.domain.refusal import Refused, quote

# the other forms date.fromisoformat takes (20270105, 2027-W01-1) name no stored day
DAY_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
INSTANCE_ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
MAX_CORES = 4096
DEFAULT_HISTORY_DAYS = 30
MAX_HISTORY_DAYS = 3660


class UsageRejected(Refused):
    pass


def check_report(instance_id: str, cores: int, stopping: bool) -> None:
    """A report names an instance and the cores it can use; anything else changes nothing."""
    if not INSTANCE_ID_PATTERN.fullmatch(instance_id):
        raise UsageRejected(
            "INVALID_INSTANCE_ID",
            "instance_id must be 1 to 128 characters of letters, digits and '._:-'",
        )
    if stopping and cores == 0:
        return
    if not 1 <= cores <= MAX_CORES:
        raise UsageRejected(
            "INVALID_CORES",
            f"cores must be 1 to {MAX_CORES} (or 0 together with stopping); got {cores}",
        )


def check_history_request(days: int, day: str) -> None:
    """Usage history: how many days back (0 for the default), or one day by its date."""
    if not 0 <= days <= MAX_HISTORY_DAYS:
        raise Refused(
            "INVALID_ARGUMENT",
            f"days must be 0 (meaning {DEFAULT_HISTORY_DAYS}) to {MAX_HISTORY_DAYS}; got {days}",
        )
    if day:
        check_day(day)


def check_day(day: str) -> None:
    """A day named by its date, exactly YYYY-MM-DD (days are stored under that name)."""
    try:
        if not DAY_PATTERN.fullmatch(day):
            raise ValueError(day)
        date.fromisoformat(day)
    except ValueError:
        raise Refused(
            "INVALID_ARGUMENT", f"day must be a date, YYYY-MM-DD; got {quote(day)}"
        ) from None


# (interval_id, instance_id, cores, started_at, last_seen_at, ended_at): one stored row.
IntervalRow = tuple[int, str, int, float, float, float | None]


@dataclass(slots=True)
class UsageInterval:
    """A span during which one instance counted with the same cores."""

    interval_id: int
    instance_id: str
    cores: int
    started_at: float
    last_seen_at: float
    ended_at: float | None = None

    def row(self) -> IntervalRow:
        return (
            self.interval_id,
            self.instance_id,
            self.cores,
            self.started_at,
            self.last_seen_at,
            self.ended_at,
        )


def placed_after(received_at: float, evaluated_until: float) -> float:
    """When a report counts: never inside a day already judged, which never changes again.

    Where several processes take reports, one may commit a report stamped just before a
    midnight after another evaluated that day; it then counts from the day's end.
    """
    return max(received_at, evaluated_until)


def counting_until(row: IntervalRow, ttl: float) -> float:
    """The instant an interval stops counting."""
    ended_at = row[5]
    return ended_at if ended_at is not None else row[4] + ttl


class UsageTracker:
    """The live intervals, one per instance. Not thread-safe: the caller serialises."""

    def __init__(self, ttl: float, live: Iterable[UsageInterval] = (), next_id: int = 1) -> None:
        self.ttl = ttl
        self._live: dict[str, UsageInterval] = {i.instance_id: i for i in live}
        self._next_id = next_id
        # counts instances starting or stopping: the current total can only change with it
        self.version = 0

    def report(self, instance_id: str, cores: int, stopping: bool, now: float) -> list[IntervalRow]:
        """Apply one report; returns the rows to store."""
        changed: list[IntervalRow] = []
        current = self._live.get(instance_id)
        if current is not None:
            # a report never moves an interval back in time
            now = max(now, current.last_seen_at)
            if now >= current.last_seen_at + self.ttl:
                changed.append(self._close(current, current.last_seen_at + self.ttl))
                current = None
        if current is not None and not stopping and current.cores == cores:
            current.last_seen_at = now
            changed.append(current.row())
            return changed
        if current is not None:
            current.last_seen_at = now
            changed.append(self._close(current, now))
        if not stopping:
            started = UsageInterval(self._next_id, instance_id, cores, now, now)
            self._next_id += 1
            self._live[instance_id] = started
            self.version += 1
            changed.append(started.row())
        return changed

    def live_rows(self) -> list[IntervalRow]:
        return [interval.row() for interval in self._live.values()]

    def expire(self, now: float) -> list[IntervalRow]:
        """Close the intervals of instances silent for longer than the TTL."""
        return [
            self._close(interval, interval.last_seen_at + self.ttl)
            for interval in list(self._live.values())
            if now >= interval.last_seen_at + self.ttl
        ]

    def _close(self, interval: UsageInterval, at: float) -> IntervalRow:
        interval.ended_at = at
        del self._live[interval.instance_id]
        self.version += 1
        return interval.row()

    def current_total(self, now: float) -> tuple[int, int]:
        """(total cores, instances) counting at `now`."""
        return counting_total(
            ((i.cores, i.last_seen_at) for i in self._live.values()), self.ttl, now
        )


def counting_total(
    intervals: Iterable[tuple[int, float]], ttl: float, now: float
) -> tuple[int, int]:
    """(total cores, instances) of the live intervals, as (cores, last_seen_at), counting at
    `now`: those reported to within the TTL."""
    total = count = 0
    for cores, last_seen_at in intervals:
        if now < last_seen_at + ttl:
            total += cores
            count += 1
    return total, count


class FleetView:
    """The live intervals of a fleet that other writers report to as well: what a read of
    the database found, with the rows this writer stored since. Not thread-safe.

    Held as plain (cores, started_at, last_seen_at) tuples by instance: a fleet read again
    and again leaves no objects behind for the garbage collector to walk (an interval
    object each made it walk the whole fleet at every full collection).
    """

    def __init__(
        self,
        ttl: float,
        instance_ids: Iterable[str] = (),
        cores: Iterable[int] = (),
        started_at: Iterable[float] = (),
        last_seen_at: Iterable[float] = (),
    ) -> None:
        self.ttl = ttl
        self._live: dict[str, tuple[int, float, float]] = dict(
            zip(instance_ids, zip(cores, started_at, last_seen_at, strict=True), strict=True)
        )
        # counts instances starting or stopping: the current total can only change with it
        self.version = 0

    def follow(self, rows: Iterable[IntervalRow]) -> None:
        """Take rows a writer stored, in order: an open one is its instance's live
        interval, a closed one ends it."""
        for _, instance_id, cores, started_at, last_seen_at, ended_at in rows:
            current = self._live.get(instance_id)
            if ended_at is None:
                if current is None or current[0] != cores:
                    self.version += 1
                self._live[instance_id] = (cores, started_at, last_seen_at)
            elif current is not None and current[1] == started_at:
                del self._live[instance_id]
                self.version += 1

    def current_total(self, now: float) -> tuple[int, int]:
        """(total cores, instances) counting at `now`."""
        return counting_total(
            ((cores, last_seen_at) for cores, _, last_seen_at in self._live.values()),
            self.ttl,
            now,
        )


@dataclass(frozen=True)
class DayPeak:
    peak_cores: int
    # The first instant the peak was reached; None for a day without usage.
    peak_at: float | None
    # (instance_id, cores) of the instances counting at peak_at.
    instances: tuple[tuple[str, int], ...]


def peak_between(rows: Iterable[IntervalRow], start: float, end: float, ttl: float) -> DayPeak:
    """The largest total of cores at any instant of [start, end)."""
    clipped: list[tuple[float, float, str, int]] = []
    events: list[tuple[float, int]] = []
    for row in rows:
        begins = max(row[3], start)
        ends = min(counting_until(row, ttl), end)
        if begins < ends:
            clipped.append((begins, ends, row[1], row[2]))
            events.append((begins, row[2]))
            # at one instant, an interval that ends sorts before one that starts
            events.append((ends, -row[2]))
    events.sort()
    peak = total = 0
    peak_at: float | None = None
    for when, delta in events:
        total += delta
        if total > peak:
            peak, peak_at = total, when
    if peak_at is None:
        return DayPeak(0, None, ())
    instances = sorted(
        (instance_id, cores)
        for begins, ends, instance_id, cores in clipped
        if begins <= peak_at < ends
    )
    return DayPeak(peak, peak_at, tuple(instances))
