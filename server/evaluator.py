"""The background thread that brings time's changes: midnight evaluations, pending takeovers."""

from __future__ import annotations

import logging
import threading

from licensing_server.service import LicensingService

log = logging.getLogger("licensing")


class Evaluator:
    """Wakes every `interval` seconds (at most 30), or sooner when a midnight or a pending
    license's takeover is due, and lets the service catch up with the clock.

    The service decides from its clock which days are complete, so a suspend, a
    restart or a clock step neither skips nor repeats a day.
    """

    def __init__(self, service: LicensingService, interval: float) -> None:
        self._service = service
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="evaluator", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self._service.close()
        except Exception:
            log.exception("could not record the end of this run")

    def _run(self) -> None:
        while not self._stop.wait(self._next_wait()):
            try:
                self._service.tick()
            except Exception:
                # a failed tick (say, a full disk) is retried at the next wake-up
                log.exception("evaluation failed; retrying in %.0f s", self._interval)

    def _next_wait(self) -> float:
        try:
            # a little after the due moment, so the change is due when the tick looks
            return min(self._interval, self._service.seconds_until_due() + 0.01)
        except Exception:
            return self._interval
