"""gRPC's C core writes its own log lines (a failed TLS handshake, a port it cannot bind) straight
to file descriptor 2, past Python's logging. The server routes them into its own log, as records of
the `grpc` logger, so every line of a JSON log is JSON."""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import sys
import threading
from typing import TextIO

# I1127 10:10:10.719966   28419 ssl_transport_security.cc:2563] Handshake failed with error ...
NATIVE_LINE = re.compile(r"^([DIWEF])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ([^\]\s]+)\] ?(.*)$")
# The C core's own INFO lines are about connections (a client that spoke plaintext to a TLS
# port), not about licenses: an operator sees them with --log-level DEBUG.
LEVELS = {
    "D": logging.DEBUG,
    "I": logging.DEBUG,
    "W": logging.WARNING,
    "E": logging.ERROR,
    "F": logging.CRITICAL,
}
# how long a stop waits for the relay to log what is still in the pipe
DRAIN_SECONDS = 5.0

log = logging.getLogger("grpc")


def relay_line(line: str) -> None:
    text = line.rstrip("\r\n")
    if not text.strip():
        return
    match = NATIVE_LINE.match(text)
    if match is None:
        # not the C core's format: another native library, or absl's own preamble
        log.warning("%s", text)
        return
    letter, source, message = match.groups()
    log.log(LEVELS[letter], "%s (%s)", message, source)


class NativeLogRoute:
    """File descriptor 2 becomes a pipe that a thread reads and logs line by line; Python's own
    `sys.stderr`, where the service's log handler writes, keeps the real standard error."""

    def __init__(self) -> None:
        sys.stderr.flush()
        self._real_stderr_fd = os.dup(2)
        self.stderr: TextIO = io.TextIOWrapper(
            io.FileIO(self._real_stderr_fd, "w", closefd=False),
            encoding="utf-8",
            errors="backslashreplace",
            line_buffering=True,
        )
        self._previous_stderr = sys.stderr
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        sys.stderr = self.stderr
        self._relay = threading.Thread(
            target=self._read, args=(read_end,), name="grpc-native-log", daemon=True
        )
        self._relay.start()

    @staticmethod
    def _read(read_end: int) -> None:
        with open(read_end, encoding="utf-8", errors="backslashreplace") as pipe:
            for line in pipe:
                relay_line(line)

    def close(self) -> None:
        """Give file descriptor 2 back and log whatever the C core wrote until now."""
        os.dup2(self._real_stderr_fd, 2)  # closes the pipe's last write end: the relay ends
        self._relay.join(DRAIN_SECONDS)
        sys.stderr = self._previous_stderr
        # the log handler keeps writing to `self.stderr` until the process ends
        self.stderr.flush()


def why_cannot_listen(host: str, port: int) -> str:
    """Why an address cannot be listened on, in the operating system's words: gRPC's own error
    only says to turn its debug log on."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as error:
        return f"cannot resolve {host!r}: {error.strerror or error}"
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            # as gRPC does: a connection of an earlier run in TIME_WAIT does not stop a bind
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                return str(error.strerror or error)
    return "the address is in use or not available"
