"""What a client may hold on the gRPC server: calls, streams, message sizes, idle connections.

The ping policy is set so real clients are not punished: gRPC libraries send
keepalive pings at most every 10 s (their minimum), and the server accepts
them every `min_client_ping_interval` (5 s), with or without calls in
progress, so only a client pinging faster than any library does collects
strikes.
"""

from __future__ import annotations

from licensing_server.config import Config


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def channel_options(config: Config) -> list[tuple[str, int]]:
    """The gRPC core arguments for the configured limits (`max_concurrent_rpcs` is the
    server's own parameter, not an argument)."""
    return [
        ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        # the stream limit counts once the client has acknowledged it: a client that opens
        # many calls on a new connection before the server's settings arrive is not refused
        ("grpc.http.overload_protection", 0),
        ("grpc.max_receive_message_length", config.max_receive_message_bytes),
        ("grpc.max_send_message_length", config.max_send_message_bytes),
        ("grpc.keepalive_time_ms", _ms(config.keepalive_time)),
        ("grpc.keepalive_timeout_ms", _ms(config.keepalive_timeout)),
        ("grpc.max_connection_idle_ms", _ms(config.max_connection_idle)),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(config.min_client_ping_interval)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", config.max_ping_strikes),
    ]
