"""Time sources. Every rule that depends on time takes a clock or a `now`."""

from __future__ import annotations

import threading

# the clocks and the day are shared with the client package, which decides with them too
from licensing.clock import SECONDS_PER_DAY as SECONDS_PER_DAY
from licensing.clock import Clock as Clock
from licensing.clock import SystemClock as SystemClock

# Differences of up to this between the wall clock and service time are not a clock step.
CLOCK_STEP_TOLERANCE = 1.0


class ManualClock:
    """A clock that moves only when told to: tests walk through weeks in microseconds.

    `advance` and `set` forward let time pass (both clocks move); `set` backward
    steps the wall clock back while no time passes; `step` moves the wall clock
    alone, either way, as an operator setting the clock (or a host waking from
    a suspend) does.
    """

    def __init__(self, start: float) -> None:
        self._now = start
        self._monotonic = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def set(self, when: float) -> None:
        with self._lock:
            self._monotonic += max(0.0, when - self._now)
            self._now = when

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            self._monotonic += seconds
            return self._now

    def step(self, when: float) -> None:
        with self._lock:
            self._now = when


class ServiceTime:
    """The time every rule is judged against: the wall clock, but never running backwards.

    It starts at the later of the wall clock and the persisted high-water mark
    (the latest time seen before). From then on it is the later of the wall
    clock and the last reading plus the monotonic time elapsed since: a clock
    stepped back neither brings an expired license or a passed grace end back,
    nor stops time for usage (instances still lapse, and instances that never
    ran together are never added together).

    A wall clock that runs ahead of the time that really passed (a host waking
    from a suspend, a clock stepped forward) opens a new *span*: the service
    observed none of the gap. `span_started_at` is where the current span began.
    """

    def __init__(self, clock: Clock, high_water_at: float) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        wall = clock.now()
        # the wall clock as the latest reading saw it
        self.last_wall = wall
        self._last = max(wall, high_water_at)
        self._last_monotonic = clock.monotonic()
        self.span_started_at = self._last
        # (started_at, ended_at) of spans a forward jump closed, until the store has them
        self.closed_spans: list[tuple[float, float]] = []

    def now(self) -> float:
        wall = self._clock.now()
        monotonic = self._clock.monotonic()
        with self._lock:
            moved = self._last + max(0.0, monotonic - self._last_monotonic)
            if wall > moved + CLOCK_STEP_TOLERANCE:
                self.closed_spans.append((self.span_started_at, moved))
                self.span_started_at = wall
            self._last = now = max(wall, moved)
            self._last_monotonic = monotonic
            self.last_wall = wall
        return now

    def raise_to(self, high_water_at: float) -> None:
        """Never run behind `high_water_at`: the latest time another replica has seen."""
        with self._lock:
            self._last = max(self._last, high_water_at)

    def take_closed_spans(self) -> list[tuple[float, float]]:
        with self._lock:
            spans, self.closed_spans = self.closed_spans, []
        return spans
