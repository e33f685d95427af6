"""WatchEnforcement's publisher: the service's decision snapshots, fanned out to watchers.

The service replaces its `Enforcement` from its own threads (an upload in the
blocking pool, the evaluator); watchers are coroutines on the server's event
loop. A change costs the service one `call_soon_threadsafe`; on the loop,
every watcher's `asyncio.Event` is set. A watcher keeps only which kind of
message it owes and reads the latest snapshot when it sends, so a watcher
that reads slowly, or not at all, holds one message, never a backlog.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import TypeAlias

from google.protobuf.duration_pb2 import Duration
from licensing.snapshot import snapshot_proto, timestamp
from licensing.v1 import licensing_pb2 as pb

from server.domain.decision import Enforcement

log = logging.getLogger("licensing")

# the longest a stream stays silent; clients are told, and the issue asks for at most 15 s
HEARTBEAT_INTERVAL = 10.0

Kind: TypeAlias = pb.WatchEnforcementEvent.ValueType
SUBSCRIBED: Kind = pb.WATCH_ENFORCEMENT_EVENT_SUBSCRIBED
CHANGED: Kind = pb.WATCH_ENFORCEMENT_EVENT_CHANGED
TIME_PASSED: Kind = pb.WATCH_ENFORCEMENT_EVENT_TIME_PASSED
HEARTBEAT: Kind = pb.WATCH_ENFORCEMENT_EVENT_HEARTBEAT


class TooManyWatchers(Exception):
    """The feed holds as many watchers as it allows."""


@dataclass(frozen=True)
class Published:
    """One snapshot as watchers receive it, its message built once for all of them."""

    version: int
    enforcement: Enforcement
    snapshot: pb.EnforcementSnapshot


class EnforcementFeed:
    """Listens to the service (from any thread) and wakes the watchers (on the loop).

    The service calls `enforcement_replaced` and `time_passed` while it holds
    its lock, so they never run at the same time.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        now: Callable[[], float],
        max_watchers: int,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self._loop = loop
        self._now = now
        self.max_watchers = max_watchers
        self.heartbeat = Duration()
        self.heartbeat_interval = heartbeat_interval
        self._watchers: set[Watcher] = set()
        self._published: Published | None = None
        # the service time the feed last heard of: instants up to it have been announced
        self._seen_until = float("-inf")
        self._closed = False

    @property
    def heartbeat_interval(self) -> float:
        """Seconds a stream may stay silent before it gets a heartbeat."""
        return self._heartbeat_interval

    @heartbeat_interval.setter
    def heartbeat_interval(self, seconds: float) -> None:
        self._heartbeat_interval = seconds
        self.heartbeat.FromNanoseconds(round(seconds * 1e9))

    @property
    def published(self) -> Published:
        assert self._published is not None, "the service publishes before the server starts"
        return self._published

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def now(self) -> float:
        return self._now()

    # --- the service's side, any thread ------------------------------------------------

    def enforcement_replaced(self, enforcement: Enforcement, now: float) -> None:
        last = self._published
        snapshot = snapshot_proto(enforcement, last.version if last else 0)
        # a midnight that keeps the state rebuilds an equal snapshot: not a change
        if last is not None and snapshot == last.snapshot:
            self.time_passed(now)
            return
        snapshot.version += 1
        self._seen_until = max(self._seen_until, now)
        self._published = Published(snapshot.version, enforcement, snapshot)
        self._wake_threadsafe(CHANGED)

    def time_passed(self, now: float) -> None:
        """Time moved on to `now`: announce an instant the snapshot in force passed."""
        published, seen = self._published, self._seen_until
        if now <= seen:
            return
        self._seen_until = now
        if published is not None and published.enforcement.changes_between(seen, now):
            self._wake_threadsafe(TIME_PASSED)

    def _wake_threadsafe(self, event: Kind) -> None:
        if self._closed:
            return
        # a stopped loop: the server is shutting down, and no one is watching any more
        with suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake, event)

    # --- the loop's side -----------------------------------------------------------------

    def _wake(self, event: Kind) -> None:
        for watcher in self._watchers:
            watcher.owe(event)

    def subscribe(self) -> Watcher:
        """On the loop: a new watcher, owing the first message. Raises TooManyWatchers."""
        if self._closed:
            raise TooManyWatchers("the server is shutting down")
        if len(self._watchers) >= self.max_watchers:
            raise TooManyWatchers(
                f"the service already streams to {len(self._watchers)} watchers, as many as it "
                "allows at once; retry later"
            )
        watcher = Watcher(self)
        self._watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    async def close(self) -> None:
        """On the loop: end every stream (the server is shutting down)."""
        self._closed = True
        for watcher in self._watchers:
            watcher.end()


class Watcher:
    """One stream's state: the message it owes and an Event to wait on."""

    __slots__ = ("_ended", "_event", "_feed", "_owed")

    def __init__(self, feed: EnforcementFeed) -> None:
        self._feed = feed
        self._event = asyncio.Event()
        self._owed: Kind | None = SUBSCRIBED
        self._ended = False
        self._event.set()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._feed.unsubscribe(self)

    @property
    def owed(self) -> Kind | None:
        """The kind of message this watcher is to send next; None: only a heartbeat, when due."""
        return self._owed

    def owe(self, event: Kind) -> None:
        # a change outranks an instant passing: the new snapshot carries both
        if self._owed is None or event < self._owed:
            self._owed = event
        self._event.set()

    def end(self) -> None:
        self._ended = True
        self._event.set()

    async def next_message(self) -> pb.WatchEnforcementResponse | None:
        """The next message to send: at once if one is owed, else a heartbeat when due.

        None when the stream is to end.
        """
        feed = self._feed
        if not self._event.is_set():
            try:
                async with asyncio.timeout(feed.heartbeat_interval):
                    await self._event.wait()
            except TimeoutError:
                pass
        self._event.clear()
        if self._ended:
            return None
        event, self._owed = self._owed or HEARTBEAT, None
        return pb.WatchEnforcementResponse(
            event=event,
            snapshot=feed.published.snapshot,
            send_time=timestamp(feed.now()),
            heartbeat_interval=feed.heartbeat,
        )
