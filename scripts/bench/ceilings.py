"""The ceilings: no-op servers that answer the hot paths with constant responses.

The ceiling proper is a `grpc.aio` server of the same model as ours (one
event loop, the same channel options and limits), whose handlers return a
response our server really gave, already built: what remains is gRPC itself.
A no-op thread-pool `grpc.server` runs beside it for the record.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import Any

import grpc

from licensing_server.config import load_config
from licensing_server.limits import channel_options

from .common import HOT_METHODS, MESSAGES, SERVICE

# a no-op server that outlives a crashed orchestrator stops by itself
NOOP_MAX_SECONDS = 4 * 3600.0


def load_constant_responses(path: Path) -> dict[str, Any]:
    """Responses our server really gave (hex of the bytes), parsed into messages once."""
    raw = json.loads(path.read_text())
    return {m: MESSAGES[m][1].FromString(bytes.fromhex(raw[m])) for m in HOT_METHODS}


def noop_handlers(
    responses: dict[str, Any], make: Callable[[Any], Callable[..., Any]]
) -> grpc.GenericRpcHandler:
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(
            make(responses[method]),
            request_deserializer=MESSAGES[method][0].FromString,
            response_serializer=MESSAGES[method][1].SerializeToString,
        )
        for method in HOT_METHODS
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


async def serve_noop_aio(port: int, responses: dict[str, Any]) -> None:
    def make(response: Any) -> Callable[[Any, Any], Any]:
        async def handle(request: Any, context: Any) -> Any:
            return response

        return handle

    # the server model of ours: the default limits, as `license-server` starts with them
    defaults = load_config([], {})
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 0), *channel_options(defaults)],
        maximum_concurrent_rpcs=defaults.max_concurrent_rpcs,
    )
    server.add_generic_rpc_handlers((noop_handlers(responses, make),))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"noop-server: cannot listen on port {port}")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await server.start()
    with suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), NOOP_MAX_SECONDS)
    await server.stop(0.5)


def serve_noop_thread(port: int, responses: dict[str, Any], workers: int) -> None:
    def make(response: Any) -> Callable[[Any, Any], Any]:
        def handle(request: Any, context: Any) -> Any:
            return response

        return handle

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers), options=[("grpc.so_reuseport", 0)]
    )
    server.add_generic_rpc_handlers((noop_handlers(responses, make),))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"noop-server: cannot listen on port {port}")
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server.start()
    stopping.wait(NOOP_MAX_SECONDS)
    server.stop(0.5).wait()


def cmd_noop_server(args: argparse.Namespace) -> int:
    responses = load_constant_responses(Path(args.responses))
    if args.kind == "thread":
        serve_noop_thread(args.port, responses, args.workers)
    else:
        asyncio.run(serve_noop_aio(args.port, responses))
    return 0
