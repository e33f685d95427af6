"""Idle watchers: a process that holds many WatchEnforcement streams open and reads them.

It says `ready` on a line once every stream has its first snapshot, holds
them until SIGTERM, then prints one JSON line: how many messages arrived and
which errors ended streams. Streams are spread over connections of their own,
below the server's per-connection stream limit, as separate clients would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from contextlib import suppress

import grpc
from licensing.v1 import licensing_pb2 as pb

from .common import SERVICE, START_TIMEOUT, TOKEN_ENV

# below the server's default of 100 concurrent streams per connection
STREAMS_PER_CONNECTION = 90


async def hold(target: str, token: str, count: int) -> dict[str, object]:
    metadata = (("authorization", f"Bearer {token}"),)
    subscribed = 0
    messages = 0
    errors: dict[str, int] = {}
    everyone = asyncio.Event()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    async def watch(channel: grpc.aio.Channel) -> None:
        nonlocal subscribed, messages
        # the messages stay bytes: this process should cost its CPU as little as it can
        call = channel.unary_stream(
            f"/{SERVICE}/WatchEnforcement",
            request_serializer=pb.WatchEnforcementRequest.SerializeToString,
        )
        first = True
        try:
            async for _ in call(pb.WatchEnforcementRequest(), metadata=metadata):
                messages += 1
                if first:
                    first = False
                    subscribed += 1
                    if subscribed == count:
                        everyone.set()
        except grpc.aio.AioRpcError as error:
            if not stopping.is_set():
                errors[error.code().name] = errors.get(error.code().name, 0) + 1

    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(-(-count // STREAMS_PER_CONNECTION))
    ]
    tasks = [
        asyncio.create_task(watch(channels[n // STREAMS_PER_CONNECTION])) for n in range(count)
    ]
    try:
        await asyncio.wait_for(everyone.wait(), START_TIMEOUT * 2)
        print("ready", flush=True)
        await stopping.wait()
    finally:
        for task in tasks:
            task.cancel()
        with suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()
    return {"subscribed": subscribed, "messages": messages, "errors": errors}


def cmd_hold_watchers(args: argparse.Namespace) -> int:
    result = asyncio.run(hold(args.target, os.environ.get(TOKEN_ENV, ""), args.count))
    print(json.dumps(result), flush=True)
    return 0
