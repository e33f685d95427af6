"""Live usage: the in-memory tracker and its rows in the store, kept equal.

A report changes memory and queues its rows under one lock, so rows reach the
database in the order the tracker made them; it is acknowledged once the group
commit that carries it is durable. When a commit fails, the reports in it (and
any queued behind it, which were built on them) are refused, and the tracker
is rebuilt from the store: a report that was refused changes nothing, not even
in memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from licensing_server.domain.usage import IntervalRow, UsageInterval, UsageTracker
from licensing_server.store import Store, StoreError, UsageTicket


class UsageMeter:
    def __init__(self, store: Store, ttl: float) -> None:
        self._store = store
        self.ttl = ttl
        # the tracker and the order of queued rows change together under this lock
        self._lock = threading.Lock()
        self._tracker = self._load()

    def _load(self) -> UsageTracker:
        live, next_id = self._store.reset_usage()
        return UsageTracker(self.ttl, (UsageInterval(*row) for row in live), next_id=next_id)

    @property
    def version(self) -> int:
        """Moves whenever an instance starts or stops counting (or memory was rebuilt)."""
        return self._tracker.version

    def report(
        self, instance_id: str, cores: int, stopping: bool, now: Callable[[], float]
    ) -> float:
        """Apply one checked report; returns its receive time once it is durable."""
        received_at, ticket = self.record(instance_id, cores, stopping, now)
        self.commit(ticket)
        return received_at

    def record(
        self, instance_id: str, cores: int, stopping: bool, now: Callable[[], float]
    ) -> tuple[float, UsageTicket]:
        """Apply one checked report in memory and queue its rows; memory only, never blocks
        on the database. The report is durable once its ticket is committed."""
        with self._lock:
            # the receive time is read under the lock the evaluation also takes, so a report
            # stamped before midnight is queued before that midnight's evaluation reads usage
            received_at = now()
            ticket = self._store.enqueue_usage(
                self._tracker.report(instance_id, cores, stopping, received_at)
            )
        return received_at, ticket

    def expire(self, now: float) -> None:
        """Close the intervals of instances silent for longer than the TTL."""
        with self._lock:
            rows = self._tracker.expire(now)
            if not rows:
                return
            ticket = self._store.enqueue_usage(rows)
        self.commit(ticket)

    def commit(self, ticket: UsageTicket) -> None:
        """Wait until the ticket's rows are committed; raises StoreError if they could not be."""
        try:
            self._store.commit_usage(ticket)
        except StoreError:
            self.recover()
            raise

    def flush(self) -> None:
        """Commit every queued row now, in one transaction (a failure marks the tickets)."""
        self._store.flush_usage()

    def recover(self) -> None:
        """After a failed commit: rebuild memory from what the store holds (once)."""
        with self._lock:
            if self._store.usage_needs_reset:
                old_version = self._tracker.version
                self._tracker = self._load()
                self._tracker.version = old_version + 1

    def current_total(self, now: float) -> tuple[int, int]:
        """(total cores, instances) counting at `now`."""
        with self._lock:
            return self._tracker.current_total(now)

    def intervals_between(self, start: float, end: float) -> list[IntervalRow]:
        """The stored intervals that counted in [start, end), all reports queued so far included."""
        # a barrier: every report stamped before this moment has been queued, and the store
        # commits the queue before it reads; reports stamped later are stamped after `end`
        with self._lock:
            pass
        return self._store.intervals_between(start, end, self.ttl)
