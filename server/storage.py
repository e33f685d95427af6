"""The storage interface: what the service, the meter, the deployment loader and the license
file watcher need from a database, whichever one it is.

Two implementations: `server.store.Store` (SQLite in the data directory, one process, the
embedded default) and `server.postgres_store.PostgresStore` (PostgreSQL, shared by any number
of replicas). Both run the same numbered migrations (`server.migrations`) and apply the same
rules from `server.domain`; only where the data lives, and how writers are kept apart, differ.

Shared state (the licenses, the runtime state and its overage episode, the evaluated days)
carries a *revision*: every write names the revision it was computed from and is refused with
`StaleState` when another writer moved it since, so a replica never writes a decision it made
on state it had not seen.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from licensing_server.domain.usage import IntervalRow


class StoreError(Exception):
    """The database could not be read or written; nothing of the failed call was stored."""


class StaleState(Exception):
    """Another replica changed the shared state since this one read it: reload, then decide."""


@dataclass(frozen=True)
class StandingRow:
    """The runtime state as stored: the state and the open overage episode's grace end."""

    runtime_state: str
    grace_ends_at: float | None


@dataclass(frozen=True)
class StateChangeRow:
    changed_at: float
    state_before: str
    state_after: str
    grace_ends_at: float | None
    cause: str


@dataclass(frozen=True)
class UsageReport:
    """One checked gateway report, stamped with the service time it was received at."""

    instance_id: str
    cores: int
    stopping: bool
    received_at: float


@dataclass(frozen=True)
class SharedState:
    """Everything a replica keeps in memory of the shared state, read at one moment."""

    revision: int
    standing: StandingRow
    high_water_at: float
    # the newest license row with that status, if any
    active: dict[str, Any] | None
    pending: dict[str, Any] | None
    # the latest evaluated day, without its peak instances
    last_evaluation: dict[str, Any] | None
    last_state_change: StateChangeRow | None


@dataclass(frozen=True)
class DayOutcome:
    """What judging one day decided: its row, the new standing and the change, if any."""

    evaluation: dict[str, Any]
    standing: StandingRow
    change: StateChangeRow | None


# Judges a day from the usage intervals and service spans stored for its window. Called inside
# the transaction that stores its answer, so the day is stored whole or not at all.
DayJudge = Callable[[list[IntervalRow], list[tuple[float, float]]], DayOutcome]

Item = TypeVar("Item")
Row = TypeVar("Row")


def maybe(convert: Callable[[dict[str, Any]], Row], row: dict[str, Any] | None) -> Row | None:
    return convert(row) if row is not None else None


def state_change_row(row: Mapping[str, Any]) -> StateChangeRow:
    return StateChangeRow(
        row["changed_at"],
        row["state_before"],
        row["state_after"],
        row["grace_ends_at"],
        row["cause"],
    )


class UsageTicket(Generic[Item]):
    __slots__ = ("done", "error", "item")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.error: BaseException | None = None


def batches(items: list[Item], size: int | None) -> Iterator[list[Item]]:
    """`items` in order, `size` at a time (all at once without a size)."""
    step = size or max(1, len(items))
    for start in range(0, len(items), step):
        yield items[start : start + step]


class GroupCommit(Generic[Item]):
    """Usage queued together is written in one transaction by whichever caller commits first.

    `write` stores a batch atomically or raises; `lock` is held while it runs (the SQLite
    store shares it with every other use of its one connection). With `max_batch`, a longer
    queue is written in transactions of at most that many items, in order, each one's
    tickets succeeding or failing together.
    """

    def __init__(
        self,
        lock: threading.Lock,
        write: Callable[[list[Item]], None],
        max_batch: int | None = None,
    ) -> None:
        self.lock = lock
        self._write = write
        self._max_batch = max_batch
        self._queue_lock = threading.Lock()
        self.queue: list[UsageTicket[Item]] = []

    def enqueue(self, item: Item) -> UsageTicket[Item]:
        ticket = UsageTicket(item)
        with self._queue_lock:
            self.queue.append(ticket)
        return ticket

    def commit(self, ticket: UsageTicket[Item]) -> None:
        """Return once the ticket's item is committed (by whichever caller takes the lock)."""
        if not ticket.done:
            with self.lock:
                if not ticket.done:
                    self.flush_locked()
        if ticket.error is not None:
            raise StoreError(f"usage could not be stored: {ticket.error}") from ticket.error

    def flush(self) -> None:
        """Write everything queued now, in one transaction (a failure marks the tickets)."""
        with self.lock:
            self.flush_locked()

    def flush_locked(self) -> None:
        """With `lock` held: write everything queued now (not what is queued meanwhile)."""
        for batch in batches(self.take_queued(), self._max_batch):
            try:
                self._write([ticket.item for ticket in batch])
            except Exception as error:
                self.fail(batch, error)
                continue
            for ticket in batch:
                ticket.done = True

    def take_queued(self) -> list[UsageTicket[Item]]:
        with self._queue_lock:
            batch, self.queue = self.queue, []
        return batch

    @staticmethod
    def fail(batch: Sequence[UsageTicket[Item]], error: BaseException) -> None:
        for ticket in batch:
            ticket.error = error
            ticket.done = True


class Storage(Protocol):
    """One database of one deployment; every method raises StoreError when it cannot work."""

    @property
    def shared(self) -> bool:
        """Whether other processes (replicas) may change the data: then memory must follow it."""
        ...

    def close(self) -> None: ...

    # --- deployment ------------------------------------------------------------------

    def deployment(self) -> dict[str, Any] | None: ...

    def create_deployment(
        self, deployment_id: str, deployment_time: float, runtime_state: str
    ) -> dict[str, Any]:
        """Store a new deployment unless one exists; return the stored one (the first wins)."""
        ...

    # --- shared state ------------------------------------------------------------------

    def shared_state(self) -> SharedState: ...

    def revision(self) -> int: ...

    def wait_for_change(self, timeout: float) -> None:
        """Block until another replica may have changed the shared state, or `timeout`."""
        ...

    def add_pending_license(
        self, row: dict[str, Any], at: float, high_water_at: float, *, expected_revision: int
    ) -> int:
        """Keep a license until its effective time, replacing one waiting; the new revision."""
        ...

    def activate_license(
        self,
        row: dict[str, Any],
        at: float,
        standing: StandingRow,
        change: StateChangeRow | None,
        high_water_at: float,
        *,
        was_pending: bool,
        expected_revision: int,
    ) -> int:
        """Put a license in force (a new one, or the pending one taking over); the new revision."""
        ...

    def evaluate_day(
        self,
        starts_at: float,
        ends_at: float,
        judge: DayJudge,
        high_water_at: float,
        *,
        expected_revision: int,
    ) -> tuple[DayOutcome, int]:
        """Judge and store one day in one transaction; at most one writer evaluates at a time."""
        ...

    def save_time(self, high_water_at: float, spans: list[tuple[float, float]]) -> float:
        """Store the latest time seen and this process's spans; the highest time any saw."""
        ...

    def spans_between(self, start: float, end: float) -> list[tuple[float, float]]: ...

    def license_file_token(self) -> str | None: ...

    def save_license_file_token(self, token_sha256: str) -> None: ...

    # --- usage -------------------------------------------------------------------------

    def open_usage(self, ttl: float) -> None:
        """Get ready to take reports of instances that count `ttl` after their last report."""
        ...

    def enqueue_usage(self, report: UsageReport) -> UsageTicket[Any]:
        """Queue a report, in the order reports were stamped; `commit_usage` makes it durable."""
        ...

    def commit_usage(self, ticket: UsageTicket[Any]) -> None:
        """Return once the ticket is committed; raises StoreError (memory left as stored) if
        it could not be. A ticket a flush already failed raises at once."""
        ...

    def flush_usage(self) -> None:
        """Commit every queued ticket now, in one transaction; the outcome is in the tickets."""
        ...

    def expire_usage(self, now: float) -> None:
        """Close the intervals of instances silent for longer than the TTL."""
        ...

    def live_usage(self, now: float) -> tuple[int, int]:
        """(total cores, instances) counting at `now`, over every process taking reports."""
        ...

    @property
    def usage_version(self) -> int:
        """Moves whenever the live total may have changed."""
        ...

    def refresh_live_usage(self, now: float) -> None:
        """Read the live total afresh where other processes take reports too."""
        ...

    def intervals_between(self, start: float, end: float, ttl: float) -> list[IntervalRow]: ...

    def prune_usage(self, before: float, ttl: float) -> int: ...

    def usage_row_count(self) -> int: ...

    # --- history -----------------------------------------------------------------------

    def licenses_with_status(self, status: str) -> list[dict[str, Any]]: ...

    def license_history(self, limit: int = 100) -> list[dict[str, Any]]: ...

    def day_evaluations(
        self, limit: int, *, with_instances: bool = True, day: str | None = None
    ) -> list[dict[str, Any]]: ...

    def peak_instances(self, day: str) -> list[tuple[str, int]] | None: ...

    def state_changes(self, limit: int) -> list[StateChangeRow]: ...
