"""One asyncio event loop in its own thread, and the bounded pool for blocking work.

Every edge serves from this loop: the gRPC server, and the HTTP edge beside
it (an aiohttp `AppRunner`, started with `run`). Work that may block,
a SQLite commit or read, a file read, a signature check, goes to the pool
through `offload`, so no call waits behind another's disk and no client can
hold the loop. The pool is also the loop's default executor, so
`run_in_executor(None, ...)` by any edge lands in the same bounded pool.

The group commit has a thread of its own (`commit_lane`): it runs one commit
at a time anyway, and a hand-over through a plain queue costs about half of a
pool's, which a lone gateway waiting on its commit feels.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, TypeVar

T = TypeVar("T")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 30.0


class ServerLoop:
    def __init__(self, blocking_workers: int, name: str = "server-loop") -> None:
        self._blocking = ThreadPoolExecutor(
            max_workers=blocking_workers, thread_name_prefix="blocking"
        )
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT):
            raise RuntimeError("the event loop did not start")
        self.commit_lane = Lane(self.loop, "commit")

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def _serve(self) -> None:
        # asyncio.run cancels what is left at the end and waits for the pool's work in progress
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.set_default_executor(self._blocking)
        self._stopping = asyncio.Event()
        self._started.set()
        await self._stopping.wait()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """From another thread: run `coroutine` on the loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def offload(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """On the loop: run `function(*args)` in the blocking pool; await the result."""
        return self.loop.run_in_executor(self._blocking, function, *args)

    def close(self) -> None:
        """Stop the loop once the blocking work in progress is done; idempotent."""
        if self._thread.is_alive():
            stopping = self._stopping
            assert stopping is not None
            self.loop.call_soon_threadsafe(stopping.set)
            self._thread.join(STOP_TIMEOUT)
        self.commit_lane.close()
        self._blocking.shutdown(wait=True)


class Lane:
    """One thread running blocking calls one after another, for the loop to await."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._loop = loop
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def __call__(self, function: Callable[[], T]) -> asyncio.Future[T]:
        """On the loop: run `function()` on the lane after what is queued; await the result.

        Cancelling the future only stops waiting: a call that started runs to its end."""
        future: asyncio.Future[T] = self._loop.create_future()
        self._calls.put((function, future))
        return future

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            function, future = call
            result, error = None, None
            try:
                result = function()
            except BaseException as raised:
                error = raised
            # a closed loop: no one is waiting any more
            with suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_settle, future, result, error)

    def close(self) -> None:
        """Stop once the calls queued are done; idempotent."""
        self._calls.put(None)
        self._thread.join(STOP_TIMEOUT)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
