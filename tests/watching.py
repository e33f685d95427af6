"""A WatchEnforcement subscriber for the tests: a thread collects the stream's messages."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType

from licensing.client import LicensingClient, LicensingError
from licensing.v1 import licensing_pb2 as pb

# a liveness bound, never a speed requirement
ARRIVES_WITHIN = 10.0

Message = pb.WatchEnforcementResponse


class Subscriber:
    """Watches through `client` until closed; `next()` hands the messages over in order."""

    def __init__(self, client: LicensingClient) -> None:
        self.stream = client.watch_enforcement()
        self._messages: queue.Queue[Message | LicensingError | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.stream:
                self._messages.put(message)
        except LicensingError as error:
            self._messages.put(error)
        self._messages.put(None)

    def next(self, timeout: float = ARRIVES_WITHIN) -> Message | None:
        """The next message; None once the stream has ended. Raises what ended it badly."""
        item = self._messages.get(timeout=timeout)
        if isinstance(item, LicensingError):
            raise item
        return item

    def next_change(self, timeout: float = ARRIVES_WITHIN) -> Message:
        """The next message that is not a heartbeat."""
        while True:
            message = self.next(timeout)
            assert message is not None, "the stream ended"
            if message.event != pb.WATCH_ENFORCEMENT_EVENT_HEARTBEAT:
                return message

    def until(self, wanted: Callable[[Message], bool], timeout: float = ARRIVES_WITHIN) -> Message:
        while True:
            message = self.next_change(timeout)
            if wanted(message):
                return message

    def close(self) -> None:
        self.stream.cancel()
        self._thread.join(ARRIVES_WITHIN)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
