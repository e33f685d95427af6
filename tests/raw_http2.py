"""A bare HTTP/2 client for the robustness tests: it opens gRPC calls and then misbehaves.

No gRPC library would leave a call half-open or stop reading on purpose, so
these connections speak HTTP/2 through `h2` over a plain socket: a proper
connection preface and settings acknowledgement, then whatever frames the
test wants, and nothing more.
"""

from __future__ import annotations

import socket
import struct
import time

import h2.config
import h2.connection
import h2.events

IO_TIMEOUT = 10.0


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


class RawConnection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())
        # a well-behaved start: take the server's settings (its stream limit) and acknowledge them
        self._read_until(h2.events.RemoteSettingsChanged)

    def _read_until(self, wanted: type[h2.events.Event]) -> None:
        deadline = time.monotonic() + IO_TIMEOUT
        while time.monotonic() < deadline:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            events = self.h2.receive_data(data)
            self.sock.sendall(self.h2.data_to_send())
            if any(isinstance(event, wanted) for event in events):
                return
        raise TimeoutError(f"no {wanted.__name__} within {IO_TIMEOUT} s")

    def open_call(self, method: str, token: str | None = None, message: bytes | None = None) -> int:
        """Start a call; with a message it is complete, without one it stays half-open."""
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", method),
            (":authority", f"127.0.0.1:{self.port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        if token is not None:
            headers.append(("authorization", f"Bearer {token}"))
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, headers, end_stream=False)
        if message is not None:
            self.h2.send_data(stream_id, grpc_frame(message), end_stream=True)
        self.sock.sendall(self.h2.data_to_send())
        return stream_id

    def round_trip(self) -> None:
        """A PING and its answer: the server has read every frame sent before it.

        Answers read on the way are never acknowledged, so the server gets no flow-control
        credit back for them: to the server this client still has not taken them.
        """
        self.h2.ping(b"liveness")
        self.sock.sendall(self.h2.data_to_send())
        self._read_until(h2.events.PingAckReceived)

    def close(self) -> None:
        self.sock.close()
