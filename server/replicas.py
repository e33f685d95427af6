"""Keeps one replica in step with the others that share its database.

A thread waits for another replica's change (LISTEN/NOTIFY wakes it at once;
it looks anyway every half second, should a notification be lost while its
connection was down), reloads the shared state when its revision moved, and
reads the fleet's live usage for GetStatus. Whether the database answers is
the replica's readiness: NOT_SERVING while it does not, SERVING again as soon
as it does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from licensing_server.service import LicensingService
from licensing_server.storage import Storage

log = logging.getLogger("licensing")

# the longest a replica goes without looking, and so the age of GetStatus' fleet totals
SYNC_INTERVAL = 0.5


class ReplicaSync:
    def __init__(
        self,
        service: LicensingService,
        store: Storage,
        on_ready: Callable[[bool], None],
        interval: float = SYNC_INTERVAL,
    ) -> None:
        self._service = service
        self._store = store
        self._on_ready = on_ready
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replica-sync", daemon=True)
        self.ready = True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._service.sync()
                self._store.wait_for_change(self._interval)
            except Exception as error:
                self._set_ready(False, str(error))
                self._stop.wait(self._interval)
            else:
                self._set_ready(True, "")

    def _set_ready(self, ready: bool, why: str) -> None:
        if ready == self.ready:
            return
        self.ready = ready
        if ready:
            log.warning("the database answers again: serving every call")
        else:
            log.error(
                "the database cannot be reached (%s): NOT_SERVING for readiness; CheckWrite "
                "answers from memory, reports and uploads are refused until it is back",
                why,
            )
        self._on_ready(ready)
