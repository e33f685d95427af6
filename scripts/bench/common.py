"""What every part of the benchmark shares: names, requests, the license, readings of /proc."""

from __future__ import annotations

import math
import os
import shutil
import socket
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from licensing.v1 import licensing_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_OUTPUT = Path("docs") / "benchmarks.md"
SERVICE = "licensing.v1.LicenseService"
HOT_METHODS = ("CheckWrite", "ReportUsage", "GetStatus")
MESSAGES: dict[str, tuple[Any, Any]] = {
    "CheckWrite": (pb.CheckWriteRequest, pb.CheckWriteResponse),
    "ReportUsage": (pb.ReportUsageRequest, pb.ReportUsageResponse),
    "GetStatus": (pb.GetStatusRequest, pb.GetStatusResponse),
}
# the servers measured: ours, the ceiling (a no-op of the same grpc.aio model), and for the
# record a no-op thread-pool grpc.server
OURS, AIO, THREAD = "ours", "noop-aio", "noop-thread"
# our server again, with TLS, for the Admin API over HTTPS
OURS_HTTPS = "ours-https"
DEPLOYMENT_ID = "bench-deployment"
KEY_ID = "bench-vendor"
FLEET_CORES = 4
# our server's instance TTL: the fleet stays live between the runs, so every report is an extension
BENCH_INSTANCE_TTL = 3600.0
START_TIMEOUT = 30.0
CALL_TIMEOUT = 10.0
DAY = 86_400.0
TOKEN_ENV = "BENCH_TOKEN"
# the module the subprocesses run: `python -m scripts.bench SUBCOMMAND`
ENTRY = "scripts.bench"


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


def bench_license(key_dir: Path, around: float, serial_number: str) -> tuple[str, Path]:
    """A real key pair and a license valid from a day before `around` for a year.

    Returns the license text and the public key's path (trust it as KEY_ID).
    """
    from licensing_server.vendor import keygen

    _, public_path = keygen(KEY_ID, key_dir)
    return sign_bench_license(key_dir, around, serial_number), public_path


def sign_bench_license(key_dir: Path, around: float, serial_number: str) -> str:
    """Another license like bench_license's, signed with the key pair it made in `key_dir`."""
    from licensing_server.domain.license import issue_license, load_private_key

    return issue_license(
        load_private_key((key_dir / f"{KEY_ID}.private.pem").read_bytes()),
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


def revision() -> str:
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


def protobuf_version() -> str:
    from google.protobuf import __version__

    return str(__version__)


def load_arguments(
    target: str, method: str, concurrency: int, args: Any, server_pid: int
) -> list[str]:
    """The `load` subcommand's arguments: drive one server, measure it, print one JSON line."""
    return [
        "load",
        "--target",
        target,
        "--method",
        method,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--fleet",
        str(args.fleet),
        "--server-pid",
        str(server_pid),
    ]


def open_loop_arguments(targets: Sequence[str], server_pids: Sequence[int], args: Any) -> list[str]:
    """The `open-loop` subcommand's arguments: the fleet reporting on its schedule to one
    server, or to replicas behind a load balancer; prints one JSON line."""
    return [
        "open-loop",
        "--target",
        *targets,
        "--fleet",
        str(args.open_loop_gateways),
        "--interval",
        str(args.open_loop_interval),
        "--duration",
        str(args.open_loop_seconds),
        "--channels",
        str(args.open_loop_channels),
        "--server-pid",
        *(str(pid) for pid in server_pids),
    ]


def median_and_range(values: Sequence[float], spec: str) -> str:
    """The median of a run's rounds, with their range when there was more than one round."""
    middle = format(statistics.median(values), spec)
    if len(values) == 1:
        return middle
    return f"{middle} ({format(min(values), spec)}-{format(max(values), spec)})"


@dataclass(frozen=True)
class Pinning:
    server: list[str]
    generator: list[str]
    note: str
    # every CPU: the orchestrator runs on the generator's, and a child inherits that
    anywhere: list[str] = field(default_factory=list)


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
        [taskset, "-c", ",".join(str(cpu) for cpu in cpus)],
    )
