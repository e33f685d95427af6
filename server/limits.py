"""What a client may hold on the gRPC server: calls, streams, message sizes, idle connections.

The ping policy is set so real clients are not punished: gRPC libraries send
keepalive pings at most every 10 s (their minimum), and the server accepts
them every `min_client_ping_interval` (5 s), with or without calls in
progress, so only a client pinging faster than any library does collects
strikes.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.config import Config


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


@dataclass(frozen=True)
class ServerLimits:
    max_concurrent_rpcs: int
    max_concurrent_streams: int
    max_receive_message_bytes: int
    max_send_message_bytes: int
    keepalive_time: float
    keepalive_timeout: float
    max_connection_idle: float
    min_client_ping_interval: float
    max_ping_strikes: int

    @staticmethod
    def from_config(config: Config) -> ServerLimits:
        return ServerLimits(
            max_concurrent_rpcs=config.max_concurrent_rpcs,
            max_concurrent_streams=config.max_concurrent_streams,
            max_receive_message_bytes=config.max_receive_message_bytes,
            max_send_message_bytes=config.max_send_message_bytes,
            keepalive_time=config.keepalive_time,
            keepalive_timeout=config.keepalive_timeout,
            max_connection_idle=config.max_connection_idle,
            min_client_ping_interval=config.min_client_ping_interval,
            max_ping_strikes=config.max_ping_strikes,
        )

    def channel_options(self) -> list[tuple[str, int]]:
        """The gRPC core arguments; `max_concurrent_rpcs` is the server's own parameter."""
        return [
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            # the stream limit counts once the client has acknowledged it: a client that opens
            # many calls on a new connection before the server's settings arrive is not refused
            ("grpc.http.overload_protection", 0),
            ("grpc.max_receive_message_length", self.max_receive_message_bytes),
            ("grpc.max_send_message_length", self.max_send_message_bytes),
            ("grpc.keepalive_time_ms", _ms(self.keepalive_time)),
            ("grpc.keepalive_timeout_ms", _ms(self.keepalive_timeout)),
            ("grpc.max_connection_idle_ms", _ms(self.max_connection_idle)),
            ("grpc.http2.min_ping_interval_without_data_ms", _ms(self.min_client_ping_interval)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_ping_strikes", self.max_ping_strikes),
        ]
