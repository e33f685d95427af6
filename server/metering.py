"""Live usage: reports stamped in order and made durable through the storage.

A report is stamped with the service time and queued under one lock, the lock
the evaluation also takes, so a report stamped before a midnight is stored
before that midnight's day is judged. It is acknowledged once the group commit
that carries it is durable; a report that could not be stored changes nothing,
not even in memory (the storage sees to that). How the interval rule is
applied, in memory or inside the database's transaction, is the storage's
business: see `server.storage`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from licensing_server.storage import DayJudge, DayOutcome, Storage, UsageReport, UsageTicket


class UsageMeter:
    def __init__(self, store: Storage, ttl: float) -> None:
        self._store = store
        self.ttl = ttl
        # stamping and queueing happen together under this lock, and so does an evaluation
        self._lock = threading.Lock()
        store.open_usage(ttl)

    @property
    def version(self) -> int:
        """Moves whenever the live total may have changed."""
        return self._store.usage_version

    def record(
        self, instance_id: str, cores: int, stopping: bool, now: Callable[[], float]
    ) -> tuple[float, UsageTicket[Any]]:
        """Stamp and queue one checked report, without waiting on the database; it is durable
        once its ticket is committed (`commit`, or any `flush` after this)."""
        with self._lock:
            # the receive time is read under the lock the evaluation also takes, so a report
            # stamped before midnight is queued before that midnight's evaluation reads usage
            received_at = now()
            ticket = self._store.enqueue_usage(
                UsageReport(instance_id, cores, stopping, received_at)
            )
        return received_at, ticket

    def commit(self, ticket: UsageTicket[Any]) -> None:
        """Wait until the ticket is committed; raises StoreError if it could not be."""
        self._store.commit_usage(ticket)

    def flush(self) -> None:
        """Commit every queued report now, in one transaction."""
        self._store.flush_usage()

    def expire(self, now: float) -> None:
        """Close the intervals of instances silent for longer than the TTL."""
        self._store.expire_usage(now)

    def current_total(self, now: float) -> tuple[int, int]:
        """(total cores, instances) counting at `now`."""
        return self._store.live_usage(now)

    def evaluate_day(
        self,
        starts_at: float,
        ends_at: float,
        judge: DayJudge,
        high_water_at: float,
        *,
        expected_revision: int,
    ) -> tuple[DayOutcome, int]:
        """Judge and store one day, with every report stamped before it queued first."""
        # a barrier, not a hold: every report stamped before this moment has been queued (and
        # the store commits the queue before it judges); reports stamped later come after the
        # day's end. Reports keep flowing while the day is judged.
        with self._lock:
            pass
        return self._store.evaluate_day(
            starts_at, ends_at, judge, high_water_at, expected_revision=expected_revision
        )
