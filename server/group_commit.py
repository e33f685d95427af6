"""The group commit as seen from the event loop: one commit in the blocking pool at a time,
carrying every report recorded before it started.

Reports are applied in memory on the loop (no thread hop) and wait here for the
commit that makes them durable. While one commit runs, the reports arriving
meanwhile queue up, and the first of them to find no commit running starts the
next one for all of them. A commit is short next to the work of answering a
call, so once reports have been seen arriving together, a commit first gives
the calls in flight GATHER_SECONDS to join it: under load, one hop to the pool
and one transaction serve many reports. A lone gateway never waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

GATHER_SECONDS = 0.001


class Ticket(Protocol):
    done: bool


class GroupCommit:
    def __init__(
        self,
        commit: Callable[[], None],
        offload: Callable[[Callable[[], None]], Awaitable[Any]],
        gather_seconds: float = GATHER_SECONDS,
    ) -> None:
        self._commit = commit
        self._offload = offload
        self._gather_seconds = gather_seconds
        self._running: asyncio.Future[None] | None = None
        # callers waiting now, and whether the last commit carried more than one of them
        self._waiting = 0
        self._together = False

    async def wait(self, ticket: Ticket) -> None:
        """Return once a commit has carried `ticket` (its outcome is in the ticket)."""
        self._waiting += 1
        try:
            while not ticket.done:
                running = self._running
                if running is None:
                    running = self._running = asyncio.ensure_future(self._run())
                # shielded: a caller that gives up does not cancel the commit others wait for
                await asyncio.shield(running)
        finally:
            self._waiting -= 1

    async def _run(self) -> None:
        try:
            # calls already received record their reports and join this commit
            await asyncio.sleep(self._gather_seconds if self._together else 0)
            self._together = self._waiting > 1
            await self._offload(self._commit)
        finally:
            self._running = None
