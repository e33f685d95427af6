"""Benchmark the hot paths against the gRPC ceiling, the nightly evaluation and storage.

    python scripts/bench.py                 # full run (~12 min), writes docs/benchmarks.md
    python scripts/bench.py --quick         # ~30 s smoke run at concurrency 1, prints only
    python scripts/bench.py --help

What it does:

* starts the real server (`python -m server`) on a temp data directory with a
  freshly signed license installed, and, as the ceiling, two no-op servers that
  answer the same methods with constant responses of the same shapes (a
  thread-pool `grpc.server` and a `grpc.aio` server); every server is a
  subprocess of this script, pinned to the same CPU;
* drives each with the same load generator (a separate process pinned to the
  other CPU) at fixed concurrencies, our server and the ceiling alternating run
  by run, and the ceiling run twice per round for the A/A noise floor;
* measures, each in a subprocess, the nightly evaluation of a day with 10,000
  instances and the database size per instance-day at steady usage;
* writes a markdown report with a targets table.

The internal subcommands (`noop-server`, `load`, `nightly-fill`, `nightly-eval`,
`storage`) are what the orchestrator runs as subprocesses.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import platform
import random
import resource
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from licensing.v1 import licensing_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = Path("docs") / "benchmarks.md"
SERVICE = "licensing.v1.LicenseService"
HOT_METHODS = ("CheckWrite", "ReportUsage", "GetStatus")
MESSAGES: dict[str, tuple[Any, Any]] = {
    "CheckWrite": (pb.CheckWriteRequest, pb.CheckWriteResponse),
    "ReportUsage": (pb.ReportUsageRequest, pb.ReportUsageResponse),
    "GetStatus": (pb.GetStatusRequest, pb.GetStatusResponse),
}
THREAD, AIO, OURS = "noop-thread", "noop-aio", "ours"
DEPLOYMENT_ID = "bench-deployment"
KEY_ID = "bench-vendor"
FLEET_CORES = 4
# our server's instance TTL: the fleet stays live between the runs, so every report is an extension
BENCH_INSTANCE_TTL = 3600.0
# a no-op server that outlives a crashed orchestrator stops by itself
NOOP_MAX_SECONDS = 4 * 3600.0
START_TIMEOUT = 30.0
CALL_TIMEOUT = 10.0
# simulated days start here (UTC); any date works, the clock is a ManualClock
SIM_DAY_START = datetime(2027, 3, 1, tzinfo=UTC).timestamp()
DAY = 86_400.0
TOKEN_ENV = "BENCH_TOKEN"
# below this many CPUs of other activity the machine counts as quiet (our idle servers tick)
QUIET_LOAD = 0.1
CORE_CHOICES = (2, 4, 8, 16)


# --- small helpers -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time all CPUs spent busy (steal included: another guest had the CPU), /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal ...; guest time is counted in user
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def percentile(ordered: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return 0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def fleet_ids(size: int) -> list[str]:
    return [f"gw-{i:05d}" for i in range(size)]


def requests_for(method: str, fleet: int) -> list[bytes]:
    """Pre-serialized requests, so the generator spends nothing on protobuf."""
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


def database_bytes(data_dir: Path) -> tuple[int, int]:
    """(main file, WAL file) sizes of the store's database."""
    from server.store import DATABASE_NAME

    main = data_dir / DATABASE_NAME
    wal = data_dir / f"{DATABASE_NAME}-wal"
    return (main.stat().st_size if main.exists() else 0, wal.stat().st_size if wal.exists() else 0)


def used_bytes(db: Any) -> dict[str, int]:
    """Bytes in use per table and index (page size less unused space), from SQLite's dbstat."""
    try:
        rows = db.execute("SELECT name, sum(pgsize - unused) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.Error:
        return {}  # SQLite built without dbstat: only the file sizes are reported
    return {str(name): int(used) for name, used in rows}


def max_rss_mib() -> float:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the no-op ceiling server --------------------------------------------------------------


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


async def serve_noop_aio(port: int, responses: dict[str, Any]) -> None:
    def make(response: Any) -> Callable[[Any, Any], Any]:
        async def handle(request: Any, context: Any) -> Any:
            return response

        return handle

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
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


def cmd_noop_server(args: argparse.Namespace) -> int:
    responses = load_constant_responses(Path(args.responses))
    if args.kind == "thread":
        serve_noop_thread(args.port, responses, args.workers)
    else:
        asyncio.run(serve_noop_aio(args.port, responses))
    return 0


# --- the load generator ------------------------------------------------------------------


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
    first = rec.first_response
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
                "first_response": first.hex() if first is not None else "",
            }
        )
    )
    return 0


# --- nightly evaluation and storage (each in its own process) ------------------------------


def _sim_service(data_dir: Path, key_dir: Path, clock: Any) -> tuple[Any, Any]:
    """(LicensingService, Store) on `data_dir`, trusting the key in `key_dir`, default settings."""
    from server.domain.license import load_public_key
    from server.service import LicensingService, ServiceSettings
    from server.store import Store

    public = load_public_key((key_dir / f"{KEY_ID}.public.pem").read_bytes())
    settings = ServiceSettings(
        trusted_keys={KEY_ID: public},
        deployment_id=DEPLOYMENT_ID,
        deployment_time=SIM_DAY_START,
    )
    store = Store(data_dir)
    return LicensingService(store, clock, settings), store


def bench_license(key_dir: Path, around: float, serial_number: str) -> tuple[str, Path]:
    """A real key pair and a license valid from a day before `around` for a year.

    Returns the license text and the public key's path (trust it as KEY_ID).
    """
    from server.domain.license import issue_license, load_private_key
    from server.vendor import keygen

    private_path, public_path = keygen(KEY_ID, key_dir)
    text = issue_license(
        load_private_key(private_path.read_bytes()),
        KEY_ID,
        serial_number=serial_number,
        customer="Benchmark Corp",
        effective_at=around - DAY,
        expires_at=around + 365 * DAY,
        max_dp_cores=1_000_000,
        features=["api7-gateway"],
        deployment_id=DEPLOYMENT_ID,
        free_trial=False,
    )
    return text, public_path


def cmd_nightly_fill(args: argparse.Namespace) -> int:
    """A day of usage intervals for `instances` instances whose cores change `changes` times.

    The rows are the ones the tracker writes for reports every 10 s (one interval per
    stretch of unchanged cores), stored through Store.write_usage; driving 86 million
    reports through report_usage would take hours and store the same rows.
    """
    from server.domain.clock import ManualClock

    data_dir, key_dir = Path(args.data_dir), Path(args.key_dir)
    start, midnight = SIM_DAY_START, SIM_DAY_START + DAY
    clock = ManualClock(start + 60)
    text = bench_license(key_dir, start, "BENCH-SIM")[0]
    service, store = _sim_service(data_dir, key_dir, clock)
    service.upload(text)
    rng = random.Random(5)
    next_id = store.next_interval_id()
    rows: list[tuple[int, str, int, float, float, float | None]] = []
    for instance_id in fleet_ids(args.instances):
        began = start + 60 + rng.uniform(0, 600)
        changes = sorted(rng.uniform(began + 60, midnight - 120) for _ in range(args.changes))
        for ends in [*changes, None]:
            cores = rng.choice(CORE_CHOICES)
            if ends is None:
                # still reporting: its last report came in the last 10 s before midnight
                rows.append(
                    (next_id, instance_id, cores, began, midnight - rng.uniform(0, 10), None)
                )
            else:
                rows.append((next_id, instance_id, cores, began, ends, ends))
                began = ends
            next_id += 1
    for offset in range(0, len(rows), 1000):
        store.write_usage(rows[offset : offset + 1000])
    store.close()
    print(json.dumps({"rows": len(rows), "midnight": midnight}))
    return 0


def cmd_nightly_eval(args: argparse.Namespace) -> int:
    """Start the service on the filled store (as a restart would) and time the midnight tick."""
    from server.domain.clock import ManualClock

    midnight = SIM_DAY_START + DAY
    clock = ManualClock(midnight + 5)
    service, store = _sim_service(Path(args.data_dir), Path(args.key_dir), clock)
    rss_before = max_rss_mib()
    began = time.perf_counter()
    service.tick()
    seconds = time.perf_counter() - began
    rss_after = max_rss_mib()
    evaluations = store.day_evaluations(1)
    store.close()
    if not evaluations:
        print(json.dumps({"error": "the tick evaluated no day"}))
        return 1
    record = evaluations[0]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mib": rss_after,
                "rss_growth_mib": rss_after - rss_before,
                "day": record["day"],
                "peak_cores": record["peak_cores"],
                "peak_instances": len(record["peak_instances"]),
            }
        )
    )
    return 0


def cmd_storage(args: argparse.Namespace) -> int:
    """`instances` gateways report the same cores every `interval` s, through report_usage."""
    from server.domain.clock import ManualClock

    data_dir, key_dir = Path(args.data_dir), Path(args.key_dir)
    start = SIM_DAY_START
    clock = ManualClock(start + 1)
    text = bench_license(key_dir, start, "BENCH-SIM")[0]
    service, store = _sim_service(data_dir, key_dir, clock)
    service.upload(text)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    baseline = sum(database_bytes(data_dir))
    used_before = used_bytes(store.db)
    ids = fleet_ids(args.instances)
    spacing = args.interval / len(ids)
    span = args.hours * 3600.0
    reports = 0
    began = time.perf_counter()
    tick = start + 1
    for step in range(int(span // args.interval)):
        for index, instance_id in enumerate(ids):
            clock.set(tick + index * spacing)
            service.report_usage(instance_id, FLEET_CORES, False)
            reports += 1
        tick += args.interval
        if step % 3 == 0:
            # the evaluator's wake-ups (every 5 s in the server; their writes are the same)
            service.tick()
    # a whole day ends with its evaluation, part of a day's storage
    clock.set(max(tick, start + DAY + 5) if span >= DAY else tick)
    service.tick()
    wal_working = database_bytes(data_dir)[1]
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    main, wal = database_bytes(data_dir)
    used_after = used_bytes(store.db)
    growth = {
        name: used - used_before.get(name, 0)
        for name, used in used_after.items()
        if used != used_before.get(name, 0)
    }
    intervals = store.usage_row_count()
    evaluations = len(store.day_evaluations(1000))
    store.close()
    instance_days = args.instances * span / DAY
    print(
        json.dumps(
            {
                "reports": reports,
                "simulate_seconds": time.perf_counter() - began,
                "baseline_bytes": baseline,
                "bytes": main + wal,
                "wal_working_bytes": wal_working,
                "interval_rows": intervals,
                "day_evaluations": evaluations,
                "instance_days": instance_days,
                "file_bytes_per_instance_day": (main + wal - baseline) / instance_days,
                "used_growth": growth,
                "bytes_per_instance_day": (
                    sum(growth.values()) if used_after else main + wal - baseline
                )
                / instance_days,
            }
        )
    )
    return 0


# --- the orchestrator --------------------------------------------------------------------


@dataclass(frozen=True)
class Pinning:
    server: list[str]
    generator: list[str]
    note: str


def pinning(enabled: bool) -> Pinning:
    if not enabled:
        return Pinning([], [], "pinning disabled (--no-pin): server and generator share all CPUs")
    taskset = shutil.which("taskset")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if taskset is None:
        return Pinning([], [], "taskset not found: server and generator are NOT pinned")
    if len(cpus) < 2:
        return Pinning([], [], f"only {len(cpus)} CPU available: server and generator share it")
    server_cpu, generator_cpu = cpus[0], cpus[1]
    # the orchestrator mostly waits; keep it off the server's CPU too
    os.sched_setaffinity(0, {generator_cpu})
    return Pinning(
        [taskset, "-c", str(server_cpu)],
        [taskset, "-c", str(generator_cpu)],
        f"server under test pinned to CPU {server_cpu}, load generator to CPU {generator_cpu}",
    )


@dataclass
class ServerProcess:
    name: str
    process: subprocess.Popen[bytes]
    target: str
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class RunResult:
    server: str
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_us: float
    generator_cpu: float
    # the server's CPU time over the window: near 1.0, its one CPU was the limit
    server_busy: float
    # CPUs' worth of time other processes used during the window (0 on a quiet machine)
    other_load: float
    calls: int
    errors: dict[str, int]


@dataclass
class Cell:
    """Every run of one (method, concurrency)."""

    runs: dict[str, list[RunResult]] = field(default_factory=dict)
    # (ours / ceiling) per round: rps, p50, p99, cpu
    ratios: list[dict[str, float]] = field(default_factory=list)
    # the ceiling run twice in a round: second / first
    noise: list[dict[str, float]] = field(default_factory=list)
    ceiling_kinds: list[str] = field(default_factory=list)

    def add(self, result: RunResult) -> None:
        self.runs.setdefault(result.server, []).append(result)

    def median(self, server: str, attribute: str) -> float:
        values = [getattr(r, attribute) for r in self.runs.get(server, [])]
        return statistics.median(values) if values else float("nan")


class Bench:
    def __init__(self, args: argparse.Namespace, argv: Sequence[str]) -> None:
        self.args = args
        self.argv = list(argv)
        self.pins = pinning(not args.no_pin)
        self.workdir = Path(tempfile.mkdtemp(prefix="licensing-bench-"))
        self.servers: dict[str, ServerProcess] = {}
        self.tokens = {
            "admin": secrets.token_hex(16),
            "gateway": secrets.token_hex(16),
            "control_plane": secrets.token_hex(16),
        }
        self.cells: dict[tuple[str, int], Cell] = {}
        self.notes: list[str] = []
        self.nightly: dict[str, Any] = {}
        self.storage: dict[str, Any] = {}
        self.began = time.monotonic()
        # runs that started although the machine did not go quiet within --wait-idle
        self.busy_waits = 0

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.began:7.1f}s] {message}", file=sys.stderr, flush=True)

    # --- servers ---

    def _spawn(
        self, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> ServerProcess:
        port = free_port()
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [*self.pins.server, *[a.replace("{port}", str(port)) for a in command]],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = ServerProcess(name, process, f"127.0.0.1:{port}", log_path)
        self.servers[name] = server
        return server

    def _wait_serving(
        self, server: ServerProcess, method: str, token: str, request: bytes
    ) -> bytes:
        """Call until the server answers (bounded); returns the answer's bytes."""
        deadline = time.monotonic() + START_TIMEOUT
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        with grpc.insecure_channel(server.target) as channel:
            call = channel.unary_unary(f"/{SERVICE}/{method}")
            while True:
                if server.process.poll() is not None:
                    raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
                try:
                    return bytes(call(request, metadata=metadata, timeout=1.0))
                except grpc.RpcError as error:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{server.name} did not answer within {START_TIMEOUT:.0f} s "
                            f"({error.code()}):\n{server.log_tail()}"
                        ) from None
                    time.sleep(0.2)

    def start_ours(self) -> dict[str, bytes]:
        """Our server with a signed license installed; returns one real response per method."""
        from licensing.client import LicensingClient, Operation

        from server.domain.license import iso_time

        key_dir = self.workdir / "vendor-keys"
        license_text, public_path = bench_license(key_dir, time.time(), "BENCH-0001")
        env = dict(os.environ)
        env.update(
            {
                "LICENSING_ADMIN_TOKEN": self.tokens["admin"],
                "LICENSING_GATEWAY_TOKEN": self.tokens["gateway"],
                "LICENSING_CONTROL_PLANE_TOKEN": self.tokens["control_plane"],
            }
        )
        server = self._spawn(
            OURS,
            [
                sys.executable,
                "-m",
                "server",
                "--listen",
                "127.0.0.1:{port}",
                "--data-dir",
                str(self.workdir / "data"),
                "--trusted-key",
                f"{KEY_ID}={public_path}",
                "--deployment-id",
                DEPLOYMENT_ID,
                "--deployment-date",
                iso_time(time.time()),
                "--instance-ttl",
                str(BENCH_INSTANCE_TTL),
                "--log-level",
                "WARNING",
            ],
            env,
        )
        self._wait_serving(server, "GetStatus", self.tokens["control_plane"], b"")
        with LicensingClient(server.target, token=self.tokens["admin"]) as admin:
            uploaded = admin.upload(license_text)
            if uploaded.pending or uploaded.state != pb.RUNTIME_STATE_NORMAL:
                raise RuntimeError(f"the bench license did not go into force: {uploaded}")
            decision = admin.check_write("route", Operation.CREATE)
            if not decision.allowed:
                raise RuntimeError(f"CheckWrite does not allow creating a route: {decision}")
            report = admin.report_usage(fleet_ids(1)[0], FLEET_CORES)
            status = admin.status()
        return {
            "CheckWrite": decision.SerializeToString(),
            "ReportUsage": report.SerializeToString(),
            "GetStatus": status.SerializeToString(),
        }

    def start_noop(self, kind: str, responses_path: Path) -> None:
        name = THREAD if kind == "thread" else AIO
        server = self._spawn(
            name,
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "noop-server",
                "--kind",
                kind,
                "--port",
                "{port}",
                "--responses",
                str(responses_path),
            ],
        )
        self._wait_serving(server, "GetStatus", "", b"")

    def stop_servers(self) -> None:
        for server in self.servers.values():
            if server.process.poll() is None:
                server.process.terminate()
        for server in self.servers.values():
            try:
                server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(timeout=10)

    # --- load ---

    def _generator(self, extra: list[str], token: str, timeout: float) -> dict[str, Any]:
        command = [
            *self.pins.generator,
            sys.executable,
            str(Path(__file__).resolve()),
            "load",
            *extra,
        ]
        env = dict(os.environ, **{TOKEN_ENV: token})
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def _token_for(self, method: str) -> str:
        return self.tokens["gateway" if method == "ReportUsage" else "control_plane"]

    def prime_fleet(self) -> None:
        """Every instance of the fleet reports once, so the measured reports are extensions."""
        server = self.servers[OURS]
        result = self._generator(
            [
                "--target",
                server.target,
                "--method",
                "ReportUsage",
                "--fleet",
                str(self.args.fleet),
                "--each-once",
            ],
            self.tokens["gateway"],
            timeout=300,
        )
        if result["failed"]:
            raise RuntimeError(f"priming the fleet: {result['failed']} reports failed")

    def wait_until_quiet(self) -> None:
        """Wait (bounded by --wait-idle) until nothing else keeps the CPUs busy."""
        deadline = time.monotonic() + self.args.wait_idle
        while True:
            began, busy = time.monotonic(), machine_busy_seconds()
            time.sleep(0.5)
            load = (machine_busy_seconds() - busy) / (time.monotonic() - began)
            if load <= QUIET_LOAD:
                return
            if time.monotonic() >= deadline:
                self.busy_waits += 1
                return
            self.log(f"other processes keep {load:.2f} CPUs busy: waiting for quiet")

    def run_once(self, name: str, method: str, concurrency: int) -> RunResult:
        server = self.servers[name]
        if self.args.wait_idle > 0:
            self.wait_until_quiet()
        timeout = self.args.warmup + self.args.duration + 60
        raw = self._generator(
            [
                "--target",
                server.target,
                "--method",
                method,
                "--concurrency",
                str(concurrency),
                "--duration",
                str(self.args.duration),
                "--warmup",
                str(self.args.warmup),
                "--fleet",
                str(self.args.fleet),
                "--server-pid",
                str(server.process.pid),
            ],
            self._token_for(method),
            timeout,
        )
        if raw["errors"]:
            self.notes.append(f"{name} {method} c={concurrency}: errors {raw['errors']}")
        if name == OURS and raw["first_response"]:
            response = MESSAGES[method][1].FromString(bytes.fromhex(raw["first_response"]))
            if method == "CheckWrite" and not response.allowed:
                raise RuntimeError(f"our CheckWrite answered a denial: {response}")
        calls = max(int(raw["calls"]), 1)
        return RunResult(
            server=name,
            rps=float(raw["rps"]),
            p50_ms=float(raw["p50_ms"]),
            p99_ms=float(raw["p99_ms"]),
            server_cpu_us=float(raw["server_cpu_s"]) / calls * 1e6,
            generator_cpu=float(raw["generator_cpu_s"]) / float(raw["elapsed"]),
            server_busy=float(raw["server_cpu_s"]) / float(raw["elapsed"]),
            other_load=float(raw["other_cpu_s"]) / float(raw["elapsed"]),
            calls=int(raw["calls"]),
            errors=dict(raw["errors"]),
        )

    def measure_cell(self, method: str, concurrency: int) -> Cell:
        cell = Cell()
        repeat = THREAD
        for round_number in range(self.args.rounds):
            order = [OURS, THREAD, AIO, repeat]
            if round_number % 2:
                order.reverse()
            results: dict[str, RunResult] = {}
            repeated: RunResult | None = None
            for name in order:
                result = self.run_once(name, method, concurrency)
                if name in results:
                    repeated = result
                else:
                    results[name] = result
                cell.add(result)
                self.log(
                    f"{method:11s} c={concurrency:<2d} round {round_number + 1}/{self.args.rounds} "
                    f"{name:11s} {result.rps:8.0f} rps  p50 {result.p50_ms:6.3f} ms  "
                    f"p99 {result.p99_ms:6.3f} ms  server {result.server_cpu_us:6.0f} us/call  "
                    f"generator CPU {result.generator_cpu:4.0%}  other load "
                    f"{result.other_load:4.2f} CPUs"
                )
            # the repeat ran before the first run of its kind in a reversed round
            if round_number % 2 and repeated is not None:
                results[repeat], repeated = repeated, results[repeat]
            ceiling_kind = THREAD if results[THREAD].rps >= results[AIO].rps else AIO
            ceiling, ours = results[ceiling_kind], results[OURS]
            cell.ceiling_kinds.append(ceiling_kind)
            cell.ratios.append(
                {
                    "rps": ours.rps / ceiling.rps,
                    "p50": ours.p50_ms / ceiling.p50_ms,
                    "p99": ours.p99_ms / ceiling.p99_ms,
                    "cpu": ours.server_cpu_us / ceiling.server_cpu_us,
                }
            )
            if repeated is not None:
                first = results[repeat]
                cell.noise.append(
                    {
                        "rps": repeated.rps / first.rps,
                        "p50": repeated.p50_ms / first.p50_ms,
                        "p99": repeated.p99_ms / first.p99_ms,
                    }
                )
            # the A/A repeat follows whichever no-op is the ceiling so far
            repeat = max((THREAD, AIO), key=lambda kind: cell.median(kind, "rps"))
        return cell

    # --- nightly and storage ---

    def _subcommand(self, args: list[str], timeout: float) -> dict[str, Any]:
        command = [*self.pins.server, sys.executable, str(Path(__file__).resolve()), *args]
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def measure_nightly(self) -> None:
        base = self.workdir / "nightly"
        common = ["--data-dir", str(base / "data"), "--key-dir", str(base / "keys")]
        fill = self._subcommand(
            [
                "nightly-fill",
                *common,
                "--instances",
                str(self.args.nightly_instances),
                "--changes",
                str(self.args.nightly_changes),
            ],
            timeout=600,
        )
        self.log(f"nightly: filled {fill['rows']} interval rows")
        self.nightly = self._subcommand(["nightly-eval", *common], timeout=600)
        self.nightly["rows"] = fill["rows"]
        self.log(
            f"nightly: tick {self.nightly['seconds']:.3f} s, peak RSS "
            f"{self.nightly['peak_rss_mib']:.0f} MiB"
        )

    def measure_storage(self) -> None:
        base = self.workdir / "storage"
        self.storage = self._subcommand(
            [
                "storage",
                "--data-dir",
                str(base / "data"),
                "--key-dir",
                str(base / "keys"),
                "--instances",
                str(self.args.storage_instances),
                "--hours",
                str(self.args.storage_hours),
            ],
            timeout=3600,
        )
        self.log(
            f"storage: {self.storage['bytes_per_instance_day']:.0f} B per instance-day "
            f"({self.storage['reports']} reports in {self.storage['simulate_seconds']:.0f} s)"
        )

    # --- the whole run ---

    def run(self) -> str:
        self.log(self.pins.note)
        try:
            try:
                self.measure_hot_paths()
            finally:
                self.stop_servers()
            if not self.args.skip_nightly:
                self.measure_nightly()
            if not self.args.skip_storage:
                self.measure_storage()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.report()

    def measure_hot_paths(self) -> None:
        responses = self.start_ours()
        responses_path = self.workdir / "responses.json"
        responses_path.write_text(json.dumps({m: r.hex() for m, r in responses.items()}))
        self.start_noop("thread", responses_path)
        self.start_noop("aio", responses_path)
        self.log("servers up: " + ", ".join(f"{s.name} {s.target}" for s in self.servers.values()))
        if "ReportUsage" in self.args.methods:
            self.prime_fleet()
            self.log(f"fleet of {self.args.fleet} instances primed")
        for method in self.args.methods:
            for concurrency in self.args.concurrency:
                self.cells[(method, concurrency)] = self.measure_cell(method, concurrency)

    # --- the report ---

    def report(self) -> str:
        return Report(self).render()


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def spread(values: Sequence[float]) -> str:
    """Median (min-max) of per-round ratios."""
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


class Report:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.args = bench.args

    def ratio(self, method: str, concurrency: int, key: str) -> float | None:
        cell = self.bench.cells.get((method, concurrency))
        if cell is None or not cell.ratios:
            return None
        return statistics.median(r[key] for r in cell.ratios)

    def render(self) -> str:
        parts = [
            self.header(),
            self.hot_paths(),
            self.ceiling_detail(),
            self.offline(),
            self.targets(),
        ]
        if self.bench.notes:
            parts.append("Notes from the run:\n\n" + "\n".join(f"- {n}" for n in self.bench.notes))
        return "\n\n".join(p for p in parts if p) + "\n"

    def header(self) -> str:
        args = self.args
        command = shlex.join(["python", "scripts/bench.py", *self.bench.argv])
        quick = " (a --quick smoke run: the figures are indicative only)" if args.quick else ""
        return "\n".join(
            [
                f"# Benchmarks{quick}",
                "",
                f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
                f"- command: `{command}`",
                f"- machine: {os.cpu_count()} CPUs, {platform.machine()}, "
                f"{platform.system()} {platform.release()}",
                f"- Python {platform.python_version()}, grpcio {grpc.__version__}, "
                f"protobuf {_protobuf_version()}",
                f"- code: {_revision()}",
                f"- placement: {self.bench.pins.note}",
                f"- quiet machine: {self.quiet_note()}",
                f"- runs: {args.duration:g} s measured after {args.warmup:g} s warm-up, "
                f"{args.rounds} rounds per path and concurrency, order alternating "
                "(ours, thread no-op, aio no-op, ceiling again / the reverse)",
                f"- ReportUsage: a fleet of {args.fleet:,} distinct instance IDs cycled through, "
                f"{FLEET_CORES} cores each, primed first (server --instance-ttl "
                f"{BENCH_INSTANCE_TTL:g}) so every measured report extends its interval",
                "- ceiling: the faster (by throughput, per round) of the thread-pool and the "
                "grpc.aio no-op server; ratios are ours / ceiling, median (min-max) of the "
                "per-round ratios; the A/A row is the ceiling measured twice in a round",
            ]
        )

    def quiet_note(self) -> str:
        loads = [
            r.other_load for c in self.bench.cells.values() for rs in c.runs.values() for r in rs
        ]
        if not loads:
            return "no runs"
        note = (
            f"other processes used {statistics.median(loads):.2f} CPUs (median; at most "
            f"{max(loads):.2f}) during the measured windows"
        )
        if self.bench.busy_waits:
            note += (
                f"; {self.bench.busy_waits} runs started after waiting {self.args.wait_idle:g} s "
                "for quiet in vain"
            )
        return note

    def hot_paths(self) -> str:
        rows: list[list[str]] = []
        for (method, concurrency), cell in self.bench.cells.items():
            ratios = cell.ratios
            kinds = sorted(set(cell.ceiling_kinds))
            rows.append(
                [
                    method,
                    str(concurrency),
                    f"{cell.median(OURS, 'rps'):,.0f}",
                    spread([r["rps"] for r in ratios]),
                    f"{cell.median(OURS, 'p50_ms'):.3f}",
                    spread([r["p50"] for r in ratios]),
                    f"{cell.median(OURS, 'p99_ms'):.3f}",
                    spread([r["p99"] for r in ratios]),
                    f"{cell.median(OURS, 'server_cpu_us'):.0f}",
                    spread([r["cpu"] for r in ratios]),
                    spread([n["rps"] for n in cell.noise]),
                    spread([n["p99"] for n in cell.noise]),
                    "/".join(k.removeprefix("noop-") for k in kinds),
                ]
            )
        return "## Hot paths against the no-op ceiling\n\n" + table(
            [
                "path",
                "conc.",
                "ours rps",
                "rps / ceiling",
                "ours p50 ms",
                "p50 / ceiling",
                "ours p99 ms",
                "p99 / ceiling",
                "server CPU us/call",
                "CPU / ceiling",
                "A/A rps",
                "A/A p99",
                "ceiling",
            ],
            rows,
        )

    def ceiling_detail(self) -> str:
        rows: list[list[str]] = []
        for (method, concurrency), cell in self.bench.cells.items():
            for name in (OURS, THREAD, AIO):
                runs = cell.runs.get(name, [])
                generator = max((r.generator_cpu for r in runs), default=0.0)
                other = max((r.other_load for r in runs), default=0.0)
                rows.append(
                    [
                        method,
                        str(concurrency),
                        name,
                        f"{cell.median(name, 'rps'):,.0f}",
                        f"{cell.median(name, 'p50_ms'):.3f}",
                        f"{cell.median(name, 'p99_ms'):.3f}",
                        f"{cell.median(name, 'server_cpu_us'):.0f}",
                        f"{cell.median(name, 'server_busy'):.0%}",
                        f"{generator:.0%}",
                        f"{other:.2f}",
                    ]
                )
        return (
            "## Every server, medians over the runs\n\n"
            "CPU us/call is utime+stime of the server process over the measured window, per "
            "call; server CPU is the same over the window's length (median; near 100%, its one "
            "CPU was the limit); generator CPU is the load generator's CPU time over the window "
            "(the most of any run; near 100% of its one CPU would mean the generator limits the "
            "run); "
            "other load is the CPU time, in CPUs, that processes outside the benchmark used "
            "during a window (the most of any run; above ~0.1 the run was disturbed).\n\n"
            + table(
                [
                    "path",
                    "conc.",
                    "server",
                    "rps",
                    "p50 ms",
                    "p99 ms",
                    "CPU us/call",
                    "server CPU",
                    "generator CPU",
                    "other load",
                ],
                rows,
            )
        )

    def offline(self) -> str:
        parts: list[str] = []
        nightly = self.bench.nightly
        if nightly:
            parts.append(
                "## Nightly evaluation\n\n"
                f"{self.args.nightly_instances:,} instances whose cores change "
                f"{self.args.nightly_changes} times in the day ({nightly['rows']:,} interval rows, "
                "written through Store.write_usage); a fresh process opens the store as a "
                "restarted service would and runs `LicensingService.tick()` just after "
                "midnight. Peak RSS is `resource.getrusage(RUSAGE_SELF).ru_maxrss` of that "
                "process (interpreter, imports and the loaded live intervals included); the "
                "growth is its increase across the tick.\n\n"
                + table(
                    [
                        "evaluation time",
                        "process peak RSS",
                        "RSS growth in the tick",
                        "peak",
                        "instances at peak",
                    ],
                    [
                        [
                            f"{nightly['seconds']:.3f} s",
                            f"{nightly['peak_rss_mib']:.0f} MiB",
                            f"{nightly['rss_growth_mib']:.0f} MiB",
                            f"{nightly['peak_cores']:,} cores",
                            f"{nightly['peak_instances']:,}",
                        ]
                    ],
                )
            )
        storage = self.bench.storage
        if storage:
            parts.append(
                "## Storage at steady usage\n\n"
                f"{self.args.storage_instances:,} instances report the same {FLEET_CORES} cores "
                f"every 10 s for {self.args.storage_hours:g} simulated hours through "
                "`LicensingService.report_usage` (ManualClock), with the evaluator's tick and "
                "the midnight evaluation. Per instance-day is the growth of the bytes in use "
                "(SQLite `dbstat`: page size less unused space, every table and index) over "
                "instance-days; the file (main + WAL after a TRUNCATE checkpoint, less its size "
                "before the first report) grows in whole pages, so at this scale its figure is "
                "coarse. The working WAL before the checkpoint is a constant, not per "
                "instance-day.\n\n"
                + table(
                    [
                        "reports",
                        "interval rows",
                        "day evaluations",
                        "bytes in use, growth",
                        "per instance-day",
                        "file growth",
                        "file per instance-day",
                        "working WAL",
                    ],
                    [
                        [
                            f"{storage['reports']:,}",
                            f"{storage['interval_rows']:,}",
                            f"{storage['day_evaluations']}",
                            ", ".join(
                                f"{name} {grown:,} B"
                                for name, grown in sorted(storage["used_growth"].items())
                            )
                            or "n/a",
                            f"{storage['bytes_per_instance_day']:.0f} B",
                            f"{storage['bytes'] - storage['baseline_bytes']:,} B",
                            f"{storage['file_bytes_per_instance_day']:.0f} B",
                            f"{storage['wal_working_bytes']:,} B",
                        ]
                    ],
                )
            )
        return "\n\n".join(parts)

    def targets(self) -> str:
        rows: list[list[str]] = []

        def verdict(ok: bool) -> str:
            return "PASS" if ok else "MISS"

        def throughput(method: str, target: float) -> None:
            for concurrency in self.args.concurrency:
                value = self.ratio(method, concurrency, "rps")
                if value is not None:
                    rows.append(
                        [
                            f"{method} throughput, c={concurrency}",
                            f">= {target:.2f} x ceiling",
                            f"{value:.2f} x",
                            verdict(value >= target),
                        ]
                    )

        throughput("CheckWrite", 0.90)
        for concurrency in self.args.concurrency:
            value = self.ratio("CheckWrite", concurrency, "p99")
            if value is not None:
                rows.append(
                    [
                        f"CheckWrite p99, c={concurrency}",
                        "<= 1.25 x ceiling p99",
                        f"{value:.2f} x",
                        verdict(value <= 1.25),
                    ]
                )
        throughput("ReportUsage", 0.70)
        throughput("GetStatus", 0.80)
        nightly = self.bench.nightly
        if nightly:
            rows.append(
                [
                    f"nightly evaluation, {self.args.nightly_instances:,} instances: time",
                    "<= 1 s",
                    f"{nightly['seconds']:.3f} s",
                    verdict(nightly["seconds"] <= 1.0),
                ]
            )
            rows.append(
                [
                    f"nightly evaluation, {self.args.nightly_instances:,} instances: peak RSS",
                    "<= 200 MB",
                    f"{nightly['peak_rss_mib'] * 1.048576:.0f} MB",
                    verdict(nightly["peak_rss_mib"] * 1.048576 <= 200),
                ]
            )
        storage = self.bench.storage
        if storage:
            per_day = storage["bytes_per_instance_day"]
            rows.append(
                [
                    "storage at steady usage",
                    "<= 1 KB per instance-day",
                    f"{per_day:.0f} B",
                    verdict(per_day <= 1000),
                ]
            )
        return "## Targets\n\n" + table(["path", "target", "measured", "verdict"], rows)


def _revision() -> str:
    """The commit the figures belong to, and whether the work tree differed from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"commit {commit}" + (" with uncommitted changes" if changed else "")


def _protobuf_version() -> str:
    from google.protobuf import __version__

    return str(__version__)


# --- command line ------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="bench.py",
        description="Benchmark LicenseService's hot paths against a no-op gRPC ceiling, the "
        "nightly evaluation and storage; write a markdown report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    root.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
    root.add_argument(
        "--warmup", type=float, default=0.5, help="unmeasured seconds before each run"
    )
    root.add_argument("--rounds", type=int, default=6, help="rounds per path and concurrency")
    root.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 32], help="concurrent calls in flight"
    )
    root.add_argument(
        "--methods", nargs="+", choices=HOT_METHODS, default=list(HOT_METHODS), help="hot paths"
    )
    root.add_argument("--fleet", type=int, default=10_000, help="distinct ReportUsage instance IDs")
    root.add_argument("--nightly-instances", type=int, default=10_000)
    root.add_argument("--nightly-changes", type=int, default=3, help="core changes per instance")
    root.add_argument(
        "--storage-instances",
        type=int,
        default=100,
        help="instances of the storage simulation (each report costs ~85 us of simulation)",
    )
    root.add_argument(
        "--storage-hours", type=float, default=24.0, help="simulated hours of storage"
    )
    root.add_argument("--skip-nightly", action="store_true")
    root.add_argument("--skip-storage", action="store_true")
    root.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    root.add_argument(
        "--wait-idle",
        type=float,
        default=60.0,
        help="before each run, wait up to this many seconds for other processes to leave the "
        "CPUs quiet (0: do not wait)",
    )
    root.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown file to write (default {DEFAULT_OUTPUT} for a full run; a --quick run "
        "only prints unless given one)",
    )
    root.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 s runs at concurrency 1, one round, small fleet and simulations",
    )
    commands = root.add_subparsers(dest="command", metavar="(internal subcommands)")
    noop = commands.add_parser("noop-server", help="serve constant responses (the ceiling)")
    noop.add_argument("--kind", choices=("thread", "aio"), required=True)
    noop.add_argument("--port", type=int, required=True)
    noop.add_argument("--responses", required=True, help="JSON of hex-encoded responses per method")
    noop.add_argument("--workers", type=int, default=32, help="thread-pool size (thread kind)")
    load = commands.add_parser("load", help="drive one server; prints one JSON line")
    load.add_argument("--target", required=True)
    load.add_argument("--method", choices=HOT_METHODS, required=True)
    load.add_argument("--concurrency", type=int, default=1)
    load.add_argument("--duration", type=float, default=3.0)
    load.add_argument("--warmup", type=float, default=0.5)
    load.add_argument("--fleet", type=int, default=10_000)
    load.add_argument("--server-pid", type=int, default=0, help="process whose CPU time to read")
    load.add_argument("--each-once", action="store_true", help="send each request once and stop")
    for name in ("nightly-fill", "nightly-eval", "storage"):
        sub = commands.add_parser(name, help=f"{name} measurement (a subprocess of the run)")
        sub.add_argument("--data-dir", required=True)
        sub.add_argument("--key-dir", required=True)
        if name == "nightly-fill":
            sub.add_argument("--instances", type=int, default=10_000)
            sub.add_argument("--changes", type=int, default=3)
        if name == "storage":
            sub.add_argument("--instances", type=int, default=100)
            sub.add_argument("--hours", type=float, default=24.0)
            sub.add_argument("--interval", type=float, default=10.0)
    return root


QUICK = {
    "duration": 1.0,
    "warmup": 0.2,
    "rounds": 1,
    "concurrency": [1],
    "fleet": 1_000,
    "nightly_instances": 1_000,
    "storage_instances": 10,
    "storage_hours": 1.0,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    subcommands: dict[str, Callable[[argparse.Namespace], int]] = {
        "noop-server": cmd_noop_server,
        "load": cmd_load,
        "nightly-fill": cmd_nightly_fill,
        "nightly-eval": cmd_nightly_eval,
        "storage": cmd_storage,
    }
    if args.command is not None:
        return subcommands[args.command](args)
    if args.quick:
        defaults = parser().parse_args([])
        for name, value in QUICK.items():
            # a flag given next to --quick wins
            if getattr(args, name) == getattr(defaults, name):
                setattr(args, name, value)
    output = (
        args.output if args.output is not None else (None if args.quick else ROOT / DEFAULT_OUTPUT)
    )
    with _terminate_on_signal():
        markdown = Bench(args, argv).run()
    print(markdown)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(markdown)
        print(f"written to {output}", file=sys.stderr)
    return 0


@contextmanager
def _terminate_on_signal() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the finally blocks stop every subprocess."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
