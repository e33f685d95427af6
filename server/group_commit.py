"""The group commit as seen from the event loop: one commit at a time off the loop (on the
commit lane), carrying every report recorded before it started.

Reports are applied in memory on the loop (no thread hop) and wait here for the
commit that makes them durable. The first caller to find no commit running
leads one, in its own coroutine: a lone gateway pays for one hop to the lane
and nothing else. Callers arriving while it runs wait for it to end and, if
their reports came too late for it, the first of them leads the next one for
all.

Once reports have been seen arriving together, a commit first gives the calls
in flight time to join it: GATHER_SECONDS, or the time a commit usually takes
if that is longer (at most MAX_GATHER_SECONDS). Under load, one hop and one
transaction serve many reports, and a store whose commits take round trips
(PostgreSQL) spends them on several reports at a time instead of a few. The
usual time is a moving average: gathering for as long as the last commit
took, as this once did, made one slow commit (PostgreSQL or the host busy for
a moment) the start of a run of them, each gathering longer and carrying more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

GATHER_SECONDS = 0.001
MAX_GATHER_SECONDS = 0.010
# how much each commit moves the usual commit time (a moving average)
COMMIT_TIME_WEIGHT = 0.2


class Ticket(Protocol):
    done: bool


class GroupCommit:
    def __init__(
        self,
        commit: Callable[[], None],
        offload: Callable[[Callable[[], float]], Awaitable[float]],
        gather_seconds: float = GATHER_SECONDS,
        max_gather_seconds: float = MAX_GATHER_SECONDS,
    ) -> None:
        self._commit = commit
        self._offload = offload
        self._gather_seconds = gather_seconds
        self._max_gather_seconds = max_gather_seconds
        # the usual time a commit takes where it runs
        self._commit_seconds = 0.0
        self._committing = False
        # one future per caller waiting for the running commit to end: a caller that gives
        # up cancels its own, never the others'
        self._followers: list[asyncio.Future[None]] = []
        # callers waiting now, and whether the last commit started with more than one of them
        self._waiting = 0
        self._together = False

    async def wait(self, ticket: Ticket) -> None:
        """Return once a commit has carried `ticket` (its outcome is in the ticket)."""
        self._waiting += 1
        try:
            while not ticket.done:
                if self._committing:
                    ended = asyncio.get_running_loop().create_future()
                    self._followers.append(ended)
                    await ended
                else:
                    await self._lead()
        finally:
            self._waiting -= 1

    def _timed_commit(self) -> float:
        """The commit, and how long it took where it ran (not counting the hand-over)."""
        started = time.perf_counter()
        self._commit()
        return time.perf_counter() - started

    @property
    def gather_seconds(self) -> float:
        """How long a commit waits for reports arriving together to join it."""
        return min(max(self._gather_seconds, self._commit_seconds), self._max_gather_seconds)

    async def _lead(self) -> None:
        """One commit, run by this caller for every report queued when it starts."""
        self._committing = True
        try:
            if self._together:
                # calls already received record their reports and join this commit
                await asyncio.sleep(self.gather_seconds)
            self._together = self._waiting > 1
            took = await self._offload(self._timed_commit)
            self._commit_seconds += COMMIT_TIME_WEIGHT * (took - self._commit_seconds)
        except asyncio.CancelledError:
            if not self._followers:
                # the caller gave up, and no one else would commit what is queued
                asyncio.ensure_future(self._offload(self._timed_commit)).add_done_callback(
                    _retrieved
                )
            raise
        finally:
            self._committing = False
            followers, self._followers = self._followers, []
            for ended in followers:
                if not ended.done():
                    ended.set_result(None)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A commit no caller awaits: its outcome is in the tickets, so nothing is left to report."""
    if not future.cancelled():
        future.exception()
