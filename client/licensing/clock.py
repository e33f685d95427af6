"""Time sources, for the service and a client deciding locally alike.

Every rule that depends on time takes a clock or a `now`, so a test can move
through days in microseconds.
"""

from __future__ import annotations

import time
from typing import Protocol

SECONDS_PER_DAY = 86_400.0


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch: the wall clock, which an operator or NTP may step."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never step: how much time really passed."""
        ...


class SystemClock:
    """The machine's clocks."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
