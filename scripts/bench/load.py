"""The load generator: a separate process that drives one server and prints one JSON line.

Closed loop: a fixed number of calls in flight, each sent as soon as the last
one came back (concurrency 1 is one blocking call after another, the
lowest-overhead client there is). Open loop: calls sent on a fixed schedule,
whatever the answers do, with latency counted from the scheduled moment, as
a fleet of gateways reporting every few seconds does. Requests are
serialized beforehand, so the generator spends nothing on protobuf.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import grpc
from licensing.v1 import licensing_pb2 as pb

from .common import (
    CALL_TIMEOUT,
    FLEET_CORES,
    SERVICE,
    START_TIMEOUT,
    TOKEN_ENV,
    fleet_ids,
    machine_busy_seconds,
    percentile,
    process_cpu_seconds,
)


def requests_for(method: str, fleet: int) -> list[bytes]:
    """Pre-serialized requests: one per instance of the fleet for ReportUsage."""
    if method == "CheckWrite":
        request = pb.CheckWriteRequest(resource_type="route", operation=pb.OPERATION_CREATE)
        return [request.SerializeToString()]
    if method == "ReportUsage":
        return [
            pb.ReportUsageRequest(instance_id=i, cores=FLEET_CORES).SerializeToString()
            for i in fleet_ids(fleet)
        ]
    if method == "GetStatus":
        return [pb.GetStatusRequest().SerializeToString()]
    raise ValueError(f"unknown method {method}")


class Window:
    """The measured stretch of a run: CPU snapshots taken by whichever call first crosses it."""

    def __init__(self, warmup: float, duration: float, server_pid: int) -> None:
        now = time.perf_counter_ns()
        self.opens_at = now + int(warmup * 1e9)
        self.closes_at = self.opens_at + int(duration * 1e9)
        self.server_pid = server_pid
        self.opened: tuple[int, float, float, float] | None = None
        self.closed: tuple[int, float, float, float] | None = None

    def _snapshot(self, now: int) -> tuple[int, float, float, float]:
        """(time, server CPU, generator CPU, whole machine's busy CPU)."""
        return (
            now,
            process_cpu_seconds(self.server_pid),
            time.process_time(),
            machine_busy_seconds(),
        )

    def running(self, now: int) -> bool:
        """Take the snapshots when due; False once the window has closed."""
        if self.opened is None and now >= self.opens_at:
            self.opened = self._snapshot(now)
        if now >= self.closes_at:
            if self.closed is None:
                self.closed = self._snapshot(now)
            return False
        return True


@dataclass
class Recorder:
    ends: array[int] = field(default_factory=lambda: array("q"))
    latencies: array[int] = field(default_factory=lambda: array("q"))
    errors: dict[str, int] = field(default_factory=dict)
    first_response: bytes | None = None

    def error(self, code: Any) -> None:
        name = getattr(code, "name", str(code))
        self.errors[name] = self.errors.get(name, 0) + 1

    def answered(self, began: int, response: bytes) -> None:
        ended = time.perf_counter_ns()
        self.ends.append(ended)
        self.latencies.append(ended - began)
        if self.first_response is None:
            self.first_response = response


def drive_blocking(
    target: str, method: str, requests: list[bytes], token: str, window: Window, rec: Recorder
) -> None:
    """Concurrency 1: one blocking call after another, the lowest-overhead client there is."""
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
        call = channel.unary_unary(f"/{SERVICE}/{method}")
        metadata = (("authorization", f"Bearer {token}"),)
        index = 0
        count = len(requests)
        while window.running(time.perf_counter_ns()):
            request = requests[index % count]
            index += 1
            began = time.perf_counter_ns()
            try:
                response = call(request, metadata=metadata, timeout=CALL_TIMEOUT)
            except grpc.RpcError as error:
                rec.error(error.code())
                continue
            rec.answered(began, response)


async def drive_aio(
    target: str,
    method: str,
    requests: list[bytes],
    token: str,
    concurrency: int,
    window: Window,
    rec: Recorder,
) -> None:
    """Many concurrent calls on one channel (one HTTP/2 connection), as a client library does."""
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), START_TIMEOUT)
        call = channel.unary_unary(f"/{SERVICE}/{method}")
        metadata = (("authorization", f"Bearer {token}"),)
        counter = itertools.count()
        count = len(requests)

        async def worker() -> None:
            while window.running(time.perf_counter_ns()):
                request = requests[next(counter) % count]
                began = time.perf_counter_ns()
                try:
                    response = await call(request, metadata=metadata, timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError as error:
                    rec.error(error.code())
                    continue
                rec.answered(began, response)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def drive_each_once(target: str, method: str, requests: list[bytes], token: str) -> int:
    """Send every request once (priming the fleet), 32 in flight; returns the failures."""
    failed = 0

    async def run() -> None:
        nonlocal failed
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary(f"/{SERVICE}/{method}")
            metadata = (("authorization", f"Bearer {token}"),)
            pending = iter(requests)

            async def worker() -> None:
                nonlocal failed
                for request in pending:
                    try:
                        await call(request, metadata=metadata, timeout=CALL_TIMEOUT)
                    except grpc.aio.AioRpcError:
                        failed += 1

            await asyncio.gather(*(worker() for _ in range(32)))

    asyncio.run(run())
    return failed


def cmd_load(args: argparse.Namespace) -> int:
    token = os.environ.get(TOKEN_ENV, "")
    requests = requests_for(args.method, args.fleet)
    if args.each_once:
        failed = drive_each_once(args.target, args.method, requests, token)
        print(json.dumps({"calls": len(requests), "failed": failed}))
        return 0
    rec = Recorder()
    window = Window(args.warmup, args.duration, args.server_pid)
    if args.concurrency == 1:
        drive_blocking(args.target, args.method, requests, token, window, rec)
    else:
        asyncio.run(
            drive_aio(args.target, args.method, requests, token, args.concurrency, window, rec)
        )
    first = rec.first_response
    return print_answer(window, rec, first.hex() if first is not None else "")


def print_answer(window: Window, rec: Recorder, first_response: str) -> int:
    """Print the one JSON line of a closed-loop run: what was answered inside the window."""
    if window.opened is None or window.closed is None:
        print(json.dumps({"error": "the measurement window never opened", "errors": rec.errors}))
        return 1
    opened, closed = window.opened, window.closed
    latencies = sorted(
        lat
        for end, lat in zip(rec.ends, rec.latencies, strict=True)
        if opened[0] <= end < closed[0]
    )
    elapsed = (closed[0] - opened[0]) / 1e9
    calls = len(latencies)
    server_cpu, generator_cpu = closed[1] - opened[1], closed[2] - opened[2]
    other_cpu = max(0.0, closed[3] - opened[3] - server_cpu - generator_cpu)
    print(
        json.dumps(
            {
                "calls": calls,
                "elapsed": elapsed,
                "rps": calls / elapsed,
                "p50_ms": percentile(latencies, 0.50) / 1e6,
                "p99_ms": percentile(latencies, 0.99) / 1e6,
                "server_cpu_s": server_cpu,
                "generator_cpu_s": generator_cpu,
                "other_cpu_s": other_cpu,
                "errors": rec.errors,
                "first_response": first_response,
            }
        )
    )
    return 0


async def drive_open_loop(
    targets: list[str],
    requests: list[bytes],
    token: str,
    rate: float,
    duration: float,
    channels: int,
) -> tuple[array[int], array[int], dict[str, int]]:
    """Send request i at start + i / rate, whatever the answers do; `channels` connections,
    spread over the targets (a load balancer in front of replicas), calls taking turns.

    Returns the latencies counted from each call's scheduled moment, how late each call
    was sent (the generator's own lag, included in the latency), and the errors.
    """
    opened = [grpc.aio.insecure_channel(targets[n % len(targets)]) for n in range(channels)]
    latencies: array[int] = array("q")
    lags: array[int] = array("q")
    errors: dict[str, int] = {}
    try:
        for channel in opened:
            await asyncio.wait_for(channel.channel_ready(), START_TIMEOUT)
        calls = [channel.unary_unary(f"/{SERVICE}/ReportUsage") for channel in opened]
        metadata = (("authorization", f"Bearer {token}"),)
        count = len(requests)

        async def one(index: int, scheduled: int) -> None:
            lags.append(time.perf_counter_ns() - scheduled)
            try:
                await calls[index % channels](
                    requests[index % count], metadata=metadata, timeout=CALL_TIMEOUT
                )
            except grpc.aio.AioRpcError as error:
                name = error.code().name
                errors[name] = errors.get(name, 0) + 1
                return
            latencies.append(time.perf_counter_ns() - scheduled)

        total = int(rate * duration)
        interval = 1e9 / rate
        start = time.perf_counter_ns()
        in_flight: set[asyncio.Task[None]] = set()
        index = 0
        while index < total:
            now = time.perf_counter_ns()
            while index < total and start + index * interval <= now:
                task = asyncio.create_task(one(index, start + int(index * interval)))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                index += 1
            if index < total:
                await asyncio.sleep(max(0.0, (start + index * interval - now) / 1e9))
        await asyncio.gather(*in_flight)
    finally:
        for channel in opened:
            await channel.close()
    return latencies, lags, errors


def cmd_open_loop(args: argparse.Namespace) -> int:
    token = os.environ.get(TOKEN_ENV, "")
    requests = requests_for("ReportUsage", args.fleet)
    rate = args.fleet / args.interval

    def servers_cpu() -> float:
        return sum(process_cpu_seconds(pid) for pid in args.server_pid)

    server_before, generator_before = servers_cpu(), time.process_time()
    machine_before, began = machine_busy_seconds(), time.perf_counter()
    latencies, lags, errors = asyncio.run(
        drive_open_loop(args.target, requests, token, rate, args.duration, args.channels)
    )
    elapsed = time.perf_counter() - began
    server_cpu = servers_cpu() - server_before
    generator_cpu = time.process_time() - generator_before
    other_cpu = max(0.0, machine_busy_seconds() - machine_before - server_cpu - generator_cpu)
    ordered, lag_ordered = sorted(latencies), sorted(lags)
    print(
        json.dumps(
            {
                "rate": rate,
                "duration": args.duration,
                "calls": len(ordered),
                "errors": errors,
                "p50_ms": percentile(ordered, 0.50) / 1e6,
                "p99_ms": percentile(ordered, 0.99) / 1e6,
                "max_ms": (ordered[-1] if ordered else 0) / 1e6,
                "lag_p99_ms": percentile(lag_ordered, 0.99) / 1e6,
                "server_busy": server_cpu / elapsed,
                "generator_busy": generator_cpu / elapsed,
                "other_load": other_cpu / elapsed,
            }
        )
    )
    return 0
