"""WatchEnforcement's publisher: the service's decision snapshots, fanned out to watchers.

The service replaces its `Enforcement` from its own threads (an upload in the
blocking pool, the evaluator); watchers are coroutines on the server's event
loop. A change costs the service one `call_soon_threadsafe`; on the loop,
every watcher's `asyncio.Event` is set, and the change's message is built
once for all of them. A watcher keeps only which kind of message it owes and
sends the latest snapshot, so a watcher that reads slowly, or not at all,
holds one message, never a backlog. One task sweeps for watchers due a
heartbeat, so an idle stream costs no timer of its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import TypeAlias

from google.protobuf.duration_pb2 import Duration
from licensing.snapshot import snapshot_proto, timestamp
from licensing.v1 import licensing_pb2 as pb

from licensing_server.domain.decision import Enforcement

log = logging.getLogger("licensing")

# the longest a stream stays silent; clients are told, and are promised at most 15 s
HEARTBEAT_INTERVAL = 10.0
# how often the heartbeat sweep looks for watchers that are due one, at most
HEARTBEAT_SWEEP = 0.5

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
        # in the order they subscribed: a change reaches the longest-standing watchers first
        self._watchers: dict[Watcher, None] = {}
        self._published: Published | None = None
        # the messages of the latest wake-up, built once and sent to every watcher owing one
        self._messages: dict[Kind, pb.WatchEnforcementResponse] = {}
        self._heartbeats: asyncio.Task[None] | None = None
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
        self._messages.clear()
        for watcher in self._watchers:
            watcher.owe(event)

    def message(self, kind: Kind) -> pb.WatchEnforcementResponse:
        """The message of `kind` for the snapshot published now; one object for every watcher
        the same wake-up (or heartbeat sweep) owes it to, so a change costs one build."""
        message = self._messages.get(kind)
        published = self.published
        if message is None or message.snapshot.version != published.version:
            message = pb.WatchEnforcementResponse(
                event=kind,
                snapshot=published.snapshot,
                send_time=timestamp(self._now()),
                heartbeat_interval=self.heartbeat,
            )
            self._messages[kind] = message
        return message

    def subscribe(self) -> Watcher:
        """On the loop: a new watcher, owing the first message. Raises TooManyWatchers."""
        if self._closed:
            raise TooManyWatchers("the server is shutting down")
        if len(self._watchers) >= self.max_watchers:
            raise TooManyWatchers(
                f"the service already streams to {len(self._watchers)} watchers, as many as it "
                "allows at once; retry later"
            )
        if self._heartbeats is None:
            self._heartbeats = asyncio.get_running_loop().create_task(self._sweep())
        watcher = Watcher(self)
        self._watchers[watcher] = None
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.pop(watcher, None)

    async def _sweep(self) -> None:
        """Owe a heartbeat to each watcher silent for most of the interval.

        One task for all watchers, rather than a timer re-armed by each at every
        message. Each watcher's own share of the interval spreads heartbeats that
        a change lined up over a quarter of it, in sweeps of at most half a second.
        """
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(min(HEARTBEAT_SWEEP, self._heartbeat_interval / 4))
            now = loop.time()
            self._messages.pop(HEARTBEAT, None)
            interval = self._heartbeat_interval
            for watcher in self._watchers:
                if now - watcher.sent_at >= interval * watcher.share:
                    watcher.owe(HEARTBEAT)

    async def close(self) -> None:
        """On the loop: end every stream (the server is shutting down)."""
        self._closed = True
        if self._heartbeats is not None:
            self._heartbeats.cancel()
        for watcher in self._watchers:
            watcher.end()


class Watcher:
    """One stream's state: the message it owes, an Event to wait on, when it last sent."""

    __slots__ = ("_ended", "_event", "_feed", "_owed", "sent_at", "share")

    def __init__(self, feed: EnforcementFeed) -> None:
        self._feed = feed
        self._event = asyncio.Event()
        self._owed: Kind | None = SUBSCRIBED
        self._ended = False
        self.sent_at = asyncio.get_running_loop().time()
        # its heartbeat is due after this share of the interval without a message
        self.share = random.uniform(0.7, 0.95)
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
        """The kind of message this watcher is to send next; None: nothing yet."""
        return self._owed

    def owe(self, event: Kind) -> None:
        # a change outranks an instant passing, which outranks a heartbeat: the snapshot
        # the message carries is the latest either way
        if self._owed is None or event < self._owed:
            self._owed = event
        self._event.set()

    def end(self) -> None:
        self._ended = True
        self._event.set()

    async def next_message(self) -> pb.WatchEnforcementResponse | None:
        """The next message to send, once one is owed; None when the stream is to end."""
        await self._event.wait()
        self._event.clear()
        if self._ended:
            return None
        kind, self._owed = self._owed or HEARTBEAT, None
        self.sent_at = asyncio.get_running_loop().time()
        return self._feed.message(kind)
