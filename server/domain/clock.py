"""Time sources. Every rule that depends on time takes a clock or a `now`."""

from __future__ import annotations

import threading
import time
from typing import Protocol

SECONDS_PER_DAY = 86_400.0


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to: tests walk through weeks in microseconds."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def set(self, when: float) -> None:
        with self._lock:
            self._now = when

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now
