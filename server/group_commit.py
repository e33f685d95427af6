"""The group commit as seen from the event loop: one commit in the blocking pool at a time,
carrying every report recorded before it started.

Reports are applied in memory on the loop (no thread hop) and wait here for the
commit that makes them durable. While one commit runs, the reports arriving
meanwhile queue up, and the first of them to find no commit running starts the
next one for all of them: under load, one hop to the pool and one transaction
serve many reports; a lone gateway's report gets a commit of its own at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class Ticket(Protocol):
    done: bool


class GroupCommit:
    def __init__(
        self,
        commit: Callable[[], None],
        offload: Callable[[Callable[[], None]], Awaitable[Any]],
    ) -> None:
        self._commit = commit
        self._offload = offload
        self._running: asyncio.Future[None] | None = None

    async def wait(self, ticket: Ticket) -> None:
        """Return once a commit has carried `ticket` (its outcome is in the ticket)."""
        while not ticket.done:
            running = self._running
            if running is None:
                running = self._running = asyncio.ensure_future(self._run())
            # shielded: a caller that gives up does not cancel the commit the others wait for
            await asyncio.shield(running)

    async def _run(self) -> None:
        try:
            await self._offload(self._commit)
        finally:
            self._running = None
