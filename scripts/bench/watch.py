"""The decision table pushed to the control plane: local decisions, propagation, idle watchers.

    python -m scripts.bench watch            # writes docs/benchmarks-watch.md
    python -m scripts.bench watch --quick    # a short smoke run, prints only

Against the real server (a subprocess with a license installed, pinned to one
CPU; this process and the load generator on the other), in one run:

* local `LocalDecider.check_write` against the gRPC `CheckWrite` round trip;
* propagation: an Upload until a subscriber's local decision shows it, over
  many changes, with no other watcher and again with the idle watchers held;
* idle watchers: `CheckWrite` throughput and latency (the load generator of
  the main benchmark) without and with many idle watch streams open,
  interleaved in rounds; the ratio is taken within each round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from licensing.client import LicensingClient, LocalDecider, Operation

from .common import (
    ENTRY,
    OURS,
    ROOT,
    TOKEN_ENV,
    percentile,
    revision,
    sign_bench_license,
)
from .runner import Bench, RunResult

DEFAULT_WATCH_OUTPUT = Path("docs") / "benchmarks-watch.md"
VISIBLE_WITHIN = 10.0
QUICK = {
    "duration": 1.0,
    "warmup": 0.2,
    "rounds": 1,
    "concurrency": [1],
    "watchers": 200,
    "changes": 20,
    "local_calls": 20_000,
    "grpc_calls": 500,
}


@dataclass
class Timings:
    """Nanosecond samples, reported in microseconds or milliseconds."""

    samples: array[int] = field(default_factory=lambda: array("q"))

    def add(self, nanoseconds: int) -> None:
        self.samples.append(nanoseconds)

    def at(self, fraction: float) -> float:
        return percentile(sorted(self.samples), fraction) / 1e3

    @property
    def median_us(self) -> float:
        return self.at(0.5)


@dataclass
class Round:
    """CheckWrite at one concurrency without the watchers, with them, and without again."""

    concurrency: int
    runs: dict[str, RunResult] = field(default_factory=dict)

    def ratio(self, attribute: str, name: str) -> float:
        value: float = getattr(self.runs[name], attribute) / getattr(
            self.runs["without"], attribute
        )
        return value


@dataclass
class WatchResults:
    local: dict[str, Timings] = field(default_factory=dict)
    # per call of a loop without a timer around each call
    local_loop_us: float = 0.0
    timer_overhead_us: float = 0.0
    grpc: Timings = field(default_factory=Timings)
    propagation: dict[str, Timings] = field(default_factory=dict)
    upload: Timings = field(default_factory=Timings)
    rounds: list[Round] = field(default_factory=list)
    holder: dict[str, Any] = field(default_factory=dict)
    busy_waits: int = 0


def measure_local(decider: LocalDecider, calls: int) -> tuple[dict[str, Timings], float, float]:
    """Each kind of answer timed call by call; the common one also in a bare loop."""
    cases = {
        "create, allowed (LICENSED)": ("route", Operation.CREATE, ""),
        "read (READ)": ("route", Operation.READ, ""),
        "create, feature lacking (denied)": ("portal", Operation.CREATE, "api7-portal"),
    }
    timings: dict[str, Timings] = {}
    clock = time.perf_counter_ns
    for name, (resource, operation, feature) in cases.items():
        check = decider.check_write
        timed = Timings()
        for _ in range(calls):
            began = clock()
            check(resource, operation, feature)
            timed.add(clock() - began)
        timings[name] = timed
    began = clock()
    for _ in range(calls):
        decider.check_write("route", Operation.CREATE)
    loop_us = (clock() - began) / calls / 1e3
    overhead = Timings()
    for _ in range(calls):
        began = clock()
        overhead.add(clock() - began)
    return timings, loop_us, overhead.median_us


def measure_grpc(client: LicensingClient, calls: int) -> Timings:
    timed = Timings()
    clock = time.perf_counter_ns
    for _ in range(calls):
        began = clock()
        client.check_write("route", Operation.CREATE)
        timed.add(clock() - began)
    return timed


def measure_propagation(
    admin: LicensingClient, decider: LocalDecider, licenses: list[str], serials: list[str]
) -> tuple[Timings, Timings]:
    """From just before each Upload to the moment the decider's answer names the new license."""
    visible, uploads = Timings(), Timings()
    for n, (text, serial) in enumerate(zip(licenses, serials, strict=True)):
        seen_at: list[int] = []
        waiter = threading.Thread(
            target=wait_until_decided_with, args=(decider, serial, decider.updates, seen_at)
        )
        waiter.start()
        began = time.perf_counter_ns()
        admin.upload(text)
        uploads.add(time.perf_counter_ns() - began)
        waiter.join(VISIBLE_WITHIN + 1)
        if not seen_at:
            raise RuntimeError(f"change {n + 1} never reached the subscriber")
        visible.add(seen_at[0] - began)
    return visible, uploads


def wait_until_decided_with(
    decider: LocalDecider, serial: str, updates: int, seen_at: list[int]
) -> None:
    """Note the moment the decider's answer first names license `serial`."""
    deadline = time.monotonic() + VISIBLE_WITHIN
    while decider.wait_for_update(updates, max(0.0, deadline - time.monotonic())):
        if decider.check_write("route", Operation.CREATE).license_serial_number == serial:
            seen_at.append(time.perf_counter_ns())
            return
        updates = decider.updates


def alternating_licenses(key_dir: Path, changes: int) -> tuple[list[str], list[str]]:
    """Two licenses signed with the bench key, to upload one after the other."""
    now = time.time()
    texts = {serial: sign_bench_license(key_dir, now, serial) for serial in ("BENCH-A", "BENCH-B")}
    serials = ["BENCH-A" if n % 2 == 0 else "BENCH-B" for n in range(changes)]
    return [texts[s] for s in serials], serials


class WatcherHolder:
    """The hold-watchers subprocess, pinned beside the load generator."""

    def __init__(self, bench: Bench, target: str, count: int) -> None:
        env = dict(os.environ, **{TOKEN_ENV: bench.tokens["control_plane"]})
        self.process = subprocess.Popen(
            [
                *bench.pins.generator,
                sys.executable,
                "-m",
                ENTRY,
                "hold-watchers",
                "--target",
                target,
                "--count",
                str(count),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        ready = self.process.stdout.readline().strip()
        if ready != "ready":
            self.process.kill()
            raise RuntimeError(f"the watchers did not subscribe: {self.process.stderr.read()}")

    def stop(self) -> dict[str, Any]:
        self.process.terminate()
        out, err = self.process.communicate(timeout=60)
        if self.process.returncode != 0:
            raise RuntimeError(f"hold-watchers failed: {err[-2000:]}")
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


def run(args: argparse.Namespace, argv: Sequence[str]) -> WatchResults:
    settings = argparse.Namespace(
        no_pin=args.no_pin,
        wait_idle=args.wait_idle,
        warmup=args.warmup,
        duration=args.duration,
        fleet=1,
        without_http_edge=args.without_http_edge,
    )
    bench = Bench(settings, argv)
    results = WatchResults()
    holder: WatcherHolder | None = None
    try:
        bench.start_ours()
        target = bench.servers[OURS].target
        control_plane = bench.tokens["control_plane"]
        # one alternation for both runs, so every Upload changes the license in force
        licenses, serials = alternating_licenses(bench.workdir / "vendor-keys", 2 * args.changes)
        first, second = slice(0, args.changes), slice(args.changes, None)
        with (
            LocalDecider(target, token=control_plane) as decider,
            LicensingClient(target, token=control_plane) as client,
            LicensingClient(target, token=bench.tokens["admin"]) as admin,
        ):
            decider.check_write("route", Operation.CREATE)  # the first snapshot is in
            results.local, results.local_loop_us, results.timer_overhead_us = measure_local(
                decider, args.local_calls
            )
            results.grpc = measure_grpc(client, args.grpc_calls)
            common = results.local["create, allowed (LICENSED)"]
            bench.log(
                f"local check_write median {common.median_us:.2f} us, "
                f"gRPC CheckWrite median {results.grpc.median_us:.0f} us"
            )
            alone, results.upload = measure_propagation(
                admin, decider, licenses[first], serials[first]
            )
            results.propagation["no other watcher"] = alone
            holder = WatcherHolder(bench, target, args.watchers)
            # subscribed after all of them, so last in line for every change: the worst case
            with LocalDecider(target, token=control_plane) as last:
                last.check_write("route", Operation.CREATE)
                crowded, _ = measure_propagation(admin, last, licenses[second], serials[second])
            results.propagation[f"{args.watchers:,} other watchers, this one last"] = crowded
            results.holder = holder.stop()
            holder = None
            bench.log(
                f"propagation p99 {alone.at(0.99) / 1e3:.1f} ms alone, "
                f"{crowded.at(0.99) / 1e3:.1f} ms with {args.watchers} watchers"
            )
        for round_number in range(args.rounds):
            for concurrency in args.concurrency:
                results.rounds.append(
                    measure_round(bench, target, args.watchers, concurrency, round_number)
                )
        results.busy_waits = bench.busy_waits
    finally:
        if holder is not None:
            holder.process.kill()
        bench.stop_servers()
        shutil.rmtree(bench.workdir, ignore_errors=True)
    return results


def measure_round(
    bench: Bench, target: str, watchers: int, concurrency: int, round_number: int
) -> Round:
    """CheckWrite without watchers, with them, and without again (the A/A twin); the order
    reversed every other round."""
    measured = Round(concurrency)
    runs = measured.runs
    order = ["without", "with", "without-again"]
    if round_number % 2:
        order = ["with", "without", "without-again"]
    for name in order:
        if name == "with":
            holder = WatcherHolder(bench, target, watchers)
            try:
                runs[name] = bench.run_once(OURS, "CheckWrite", concurrency)
            finally:
                holder.stop()
        else:
            runs[name] = bench.run_once(OURS, "CheckWrite", concurrency)
        result = runs[name]
        bench.log(
            f"CheckWrite c={concurrency} round {round_number + 1} {name:13s} "
            f"{result.rps:8.0f} rps  p50 {result.p50_ms:6.3f} ms  p99 {result.p99_ms:6.3f} ms"
        )
    return measured


def render(results: WatchResults, args: argparse.Namespace, argv: Sequence[str]) -> str:
    local = results.local["create, allowed (LICENSED)"]
    lines = [
        "# Benchmarks: decisions pushed to the control plane",
        "",
        "> A short run on a shared 2-CPU machine: read the ratios against the A/A column.",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- command: `python -m scripts.bench {' '.join(argv)}`",
        f"- machine: {os.cpu_count()} CPUs, {platform.machine()}, {platform.system()} "
        f"{platform.release()}",
        f"- Python {platform.python_version()}; code: {revision()}",
        "- the server is `python -m licensing_server` with a license installed; LocalDecider, the "
        "uploads and the gRPC client run in the benchmark's process, the load generator and "
        "the idle watchers in processes of their own",
        "",
        "## Local decision against the round trip",
        "",
        f"{args.local_calls:,} calls of each kind, each timed alone (the timer itself costs "
        f"{results.timer_overhead_us:.2f} us, included); the bare loop is the mean per call of "
        "the common answer with no timer around each call. The gRPC round trip is "
        f"`LicensingClient.check_write`, {args.grpc_calls:,} calls one after another.",
        "",
        "| answer | median us | p99 us |",
        "|---|---|---|",
    ]
    for name, timings in results.local.items():
        lines.append(f"| local: {name} | {timings.median_us:.2f} | {timings.at(0.99):.2f} |")
    lines += [
        f"| local: create, allowed, bare loop (mean) | {results.local_loop_us:.2f} | |",
        f"| gRPC CheckWrite round trip | {results.grpc.median_us:.0f} | "
        f"{results.grpc.at(0.99):.0f} |",
        "",
        f"Local is {results.grpc.median_us / local.median_us:,.0f}x faster at the median.",
        "",
        "## Propagation: an Upload until a subscriber decides with it",
        "",
        f"{args.changes} Uploads of two licenses in turn; each timed from just before the call "
        "to the moment a LocalDecider's `check_write` names the new license (the Upload's own "
        "signature check and durable commit included).",
        "",
        "| while | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|",
    ]
    for name, timings in results.propagation.items():
        lines.append(
            f"| {name} | {timings.at(0.5) / 1e3:.2f} | {timings.at(0.99) / 1e3:.2f} | "
            f"{timings.at(1.0) / 1e3:.2f} |"
        )
    lines += [
        f"| (the Upload call alone) | {results.upload.at(0.5) / 1e3:.2f} | "
        f"{results.upload.at(0.99) / 1e3:.2f} | {results.upload.at(1.0) / 1e3:.2f} |",
        "",
        f"The watchers' process received {results.holder.get('messages', 0):,} messages on "
        f"{results.holder.get('subscribed', 0):,} streams; errors: "
        f"{results.holder.get('errors') or 'none'}.",
        "",
        "## CheckWrite with idle watchers",
        "",
        f"CheckWrite load (the main benchmark's generator, {args.duration:g} s after "
        f"{args.warmup:g} s warm-up) without watchers, with {args.watchers:,} idle watch "
        "streams held open, and without again (the A/A noise floor); the order is reversed "
        "every other round. Ratios are against the run without watchers of the same round. "
        "Other load is the most CPUs' worth of time processes outside the benchmark used "
        "during a run of the round (above ~0.1 the round was disturbed); "
        f"{results.busy_waits} runs started after waiting {args.wait_idle:g} s for quiet in vain.",
        "",
        "| conc. | round | without rps | with rps | with / without rps | A/A rps | "
        "with / without p99 | A/A p99 | other load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, measured in enumerate(results.rounds):
        lines.append(
            f"| {measured.concurrency} | {n // len(args.concurrency) + 1} | "
            f"{measured.runs['without'].rps:,.0f} | {measured.runs['with'].rps:,.0f} | "
            f"{measured.ratio('rps', 'with'):.3f} | {measured.ratio('rps', 'without-again'):.3f} | "
            f"{measured.ratio('p99_ms', 'with'):.2f} | "
            f"{measured.ratio('p99_ms', 'without-again'):.2f} | "
            f"{max(r.other_load for r in measured.runs.values()):.2f} |"
        )
    alone = results.propagation["no other watcher"]
    crowded_name, crowded = list(results.propagation.items())[-1]
    lines += [
        "",
        "## Targets",
        "",
        "| target | measured |",
        "|---|---|",
        f"| local check_write median <= 5 us | {local.median_us:.2f} us |",
        f"| propagation to a subscriber, p99 <= 100 ms over {args.changes} changes | "
        f"{alone.at(0.99) / 1e3:.2f} ms |",
    ]
    for concurrency in args.concurrency:
        ratios = [m.ratio("rps", "with") for m in results.rounds if m.concurrency == concurrency]
        twins = [
            m.ratio("rps", "without-again") for m in results.rounds if m.concurrency == concurrency
        ]
        lines.append(
            f"| CheckWrite c={concurrency} with {args.watchers:,} watchers >= 0.95 x without "
            f"(median of rounds; A/A beside) | {statistics.median(ratios):.3f} x "
            f"(A/A {statistics.median(twins):.3f} x) |"
        )
    lines += [
        "",
        f"For the record, without a target: propagation to a subscriber with {crowded_name} "
        f"is p50 {crowded.at(0.5) / 1e3:.2f} ms, p99 {crowded.at(0.99) / 1e3:.2f} ms. A change "
        "is sent to every watcher in the order they subscribed, one grpc.aio send each on the "
        "service's one event loop; the last one waits for all the others. The watchers' "
        "process shares its CPU with this subscriber.",
        "",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a short smoke run; prints only")
    parser.add_argument("--watchers", type=int, default=1_000, help="idle watch streams held")
    parser.add_argument("--changes", type=int, default=100, help="Uploads timed for propagation")
    parser.add_argument("--local-calls", type=int, default=200_000)
    parser.add_argument("--grpc-calls", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the CheckWrite runs")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--without-http-edge",
        action="store_true",
        help="run our server with the Admin API off (--http-listen '')",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=30.0,
        help="before each CheckWrite run, wait up to this long for quiet CPUs (0: do not)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown file to write (default {DEFAULT_WATCH_OUTPUT}; --quick only prints)",
    )


def cmd_watch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.quick:
        defaults = argparse.ArgumentParser()
        add_arguments(defaults)
        unset = defaults.parse_args([])
        for name, value in QUICK.items():
            # a flag given next to --quick wins
            if getattr(args, name) == getattr(unset, name):
                setattr(args, name, value)
    results = run(args, argv)
    markdown = render(results, args, argv)
    print(markdown)
    output = (
        args.output
        if args.output is not None
        else (None if args.quick else ROOT / DEFAULT_WATCH_OUTPUT)
    )
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(markdown)
        print(f"written to {output}", file=sys.stderr)
    return 0
