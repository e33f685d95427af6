"""`licensectl watch` as an operator runs it: a real subprocess against a real server on port 0."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from conftest import CONTROL_PLANE_TOKEN, Harness, Vendor

# liveness bounds, never speed requirements
WITHIN = 20.0


def watch_environment(harness: Harness) -> dict[str, str]:
    """The operator's environment, pointed at the harness (their own LICENSING_* left out)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LICENSING_")}
    environ.update({"LICENSING_SERVER": harness.target, "LICENSING_TOKEN": CONTROL_PLANE_TOKEN})
    return environ


class Watch:
    """`licensectl watch` running; its output lines as they come."""

    def __init__(self, harness: Harness, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "licensing.cli", "watch", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=watch_environment(harness),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def line(self) -> str:
        line = self._lines.get(timeout=WITHIN)
        assert line is not None, f"watch ended: {self.stderr()}"
        return line

    def lines_until(self, text: str) -> list[str]:
        seen = []
        while text not in (line := self.line()):
            seen.append(line)
        return [*seen, line]

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(WITHIN)

    def stderr(self) -> str:
        assert self.process.stderr is not None
        if self.process.poll() is None:
            return ""
        return self.process.stderr.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WITHIN)


@pytest.fixture
def watch(harness: Harness) -> Iterator[Watch]:
    running = Watch(harness)
    yield running
    running.stop()


def test_watch_prints_each_change_as_it_arrives_until_ctrl_c(
    harness: Harness, vendor: Vendor, watch: Watch
) -> None:
    first = watch.line()
    assert "SUBSCRIBED" in first
    assert "no license" in first
    assert "creates and updates DENIED (NO_LICENSE)" in first

    harness.admin.upload(vendor.issue(max_dp_cores=16))
    changed = watch.line()
    assert "CHANGED" in changed
    assert "license LIC-0001, 16 cores, features api7-gateway" in changed
    assert "NORMAL: creates and updates allowed (LICENSED)" in changed

    assert watch.interrupt() == 0
    assert "Traceback" not in watch.stderr()


def test_watch_shows_a_pending_license_and_warnings(
    harness: Harness, vendor: Vendor, watch: Watch
) -> None:
    watch.line()
    harness.admin.upload(vendor.issue(expires_at=harness.clock.now() + 10 * 86_400))
    changed = watch.lines_until("warning:")
    assert "ends in" not in changed[0]
    assert "license LIC-0001" in changed[-1] and "in 10 days: plan the renewal" in changed[-1]
    harness.admin.upload(
        vendor.issue(serial_number="LIC-0002", effective_at=harness.clock.now() + 86_400)
    )
    pending = watch.lines_until("pending:")
    assert "pending: license LIC-0002" in pending[-1]
    assert "takes over 2027-01-02T10:00:00Z, then NORMAL" in pending[-1]


def test_watch_json_prints_one_object_a_line(harness: Harness, vendor: Vendor) -> None:
    watch = Watch(harness, "--json")
    try:
        first = json.loads(watch.line())
        assert first["event"] == "WATCH_ENFORCEMENT_EVENT_SUBSCRIBED"
        assert first["snapshot"]["state"] == "RUNTIME_STATE_NORMAL"
        harness.admin.upload(vendor.issue())
        changed = json.loads(watch.line())
        assert changed["event"] == "WATCH_ENFORCEMENT_EVENT_CHANGED"
        assert changed["snapshot"]["license"]["serial_number"] == "LIC-0001"
        assert int(changed["snapshot"]["version"]) == int(first["snapshot"]["version"]) + 1
        assert watch.interrupt() == 0
    finally:
        watch.stop()


def test_watch_exits_quietly_when_its_reader_goes_away(harness: Harness, vendor: Vendor) -> None:
    """As in `licensectl watch | head -1`: the pipe's reader leaves after a line."""
    reader, writer = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "licensing.cli", "watch"],
        stdout=writer,
        stderr=subprocess.PIPE,
        text=True,
        env=watch_environment(harness),
    )
    os.close(writer)
    try:
        with os.fdopen(reader, "rb") as output:
            assert b"SUBSCRIBED" in output.readline()
        harness.admin.upload(vendor.issue())  # the next line meets a closed pipe
        assert process.wait(WITHIN) == 0
        assert process.stderr is not None
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WITHIN)


def test_watch_says_so_when_the_server_ends_the_stream(harness: Harness, watch: Watch) -> None:
    watch.line()
    harness.running.stop(grace=5)
    assert watch.process.wait(WITHIN) == 3
    assert "the server ended the stream" in watch.stderr()
