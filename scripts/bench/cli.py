"""The command line: the full run, the --quick smoke run, and the subcommands it spawns."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from .ceilings import cmd_noop_server
from .common import DEFAULT_OUTPUT, HOT_METHODS, ROOT
from .http_load import cmd_load_http
from .load import cmd_load, cmd_open_loop
from .offline import cmd_nightly_eval, cmd_nightly_fill, cmd_storage
from .replicas import DEFAULT_POSTGRES_OUTPUT, cmd_postgres
from .report import Report
from .runner import Bench
from .watch import add_arguments as add_watch_arguments
from .watch import cmd_watch
from .watchers import cmd_hold_watchers


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description="Benchmark LicenseService's hot paths against a no-op grpc.aio ceiling, "
        "gateways reporting on a fixed schedule, the nightly evaluation and storage; write a "
        "markdown report.",
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
    root.add_argument(
        "--open-loop-gateways",
        type=int,
        default=20_000,
        help="gateways of the open-loop run, each reporting every --open-loop-interval s",
    )
    root.add_argument("--open-loop-interval", type=float, default=10.0)
    root.add_argument("--open-loop-seconds", type=float, default=30.0)
    root.add_argument(
        "--open-loop-channels", type=int, default=8, help="connections the gateways share"
    )
    root.add_argument("--skip-open-loop", action="store_true")
    root.add_argument(
        "--skip-http", action="store_true", help="do not measure the Admin API (GET /api/license)"
    )
    root.add_argument(
        "--without-http-edge",
        action="store_true",
        help="run our server with the Admin API off (--http-listen ''), to compare the gRPC hot "
        "paths with and without it; implies --skip-http",
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
        help="smoke run: 1 s runs at concurrency 1, one round, small fleets and simulations",
    )
    commands = root.add_subparsers(dest="command", metavar="(postgres | internal subcommands)")
    postgres = commands.add_parser(
        "postgres",
        help="ReportUsage on PostgreSQL against SQLite, two replicas against one, the open "
        "loop and the nightly evaluation on PostgreSQL",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    postgres.add_argument(
        "--database-url",
        default=os.environ.get("LICENSING_TEST_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="a database to make (and drop) a schema per run in",
    )
    postgres.add_argument("--duration", type=float, default=3.0)
    postgres.add_argument("--warmup", type=float, default=0.5)
    postgres.add_argument("--rounds", type=int, default=3)
    postgres.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    postgres.add_argument("--fleet", type=int, default=10_000)
    postgres.add_argument("--open-loop-gateways", type=int, default=20_000)
    postgres.add_argument("--open-loop-interval", type=float, default=10.0)
    postgres.add_argument("--open-loop-seconds", type=float, default=30.0)
    postgres.add_argument(
        "--open-loop-rounds",
        type=int,
        default=3,
        help="open-loop runs of each replica count, reported as medians (min-max)",
    )
    postgres.add_argument("--nightly-instances", type=int, default=10_000)
    postgres.add_argument(
        "--open-loop-replicas",
        type=int,
        nargs="+",
        default=[1, 2],
        help="replicas the open loop's gateways are spread over, one run each",
    )
    postgres.add_argument("--skip-open-loop", action="store_true")
    postgres.add_argument("--skip-nightly", action="store_true")
    postgres.add_argument(
        "--output", type=Path, default=None, help=f"markdown file (e.g. {DEFAULT_POSTGRES_OUTPUT})"
    )
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
    load_http = commands.add_parser(
        "load-http", help="drive one server's GET /api/license; prints one JSON line"
    )
    load_http.add_argument("--target", required=True, help="the Admin API's HOST:PORT")
    load_http.add_argument("--tls", action="store_true")
    load_http.add_argument("--concurrency", type=int, default=1)
    load_http.add_argument("--duration", type=float, default=3.0)
    load_http.add_argument("--warmup", type=float, default=0.5)
    load_http.add_argument("--server-pid", type=int, default=0, help="process whose CPU to read")
    open_loop = commands.add_parser("open-loop", help="report on a schedule; prints one JSON line")
    open_loop.add_argument(
        "--target",
        required=True,
        nargs="+",
        help="one server, or replicas behind a load balancer: the connections are spread over them",
    )
    open_loop.add_argument("--fleet", type=int, default=20_000)
    open_loop.add_argument("--interval", type=float, default=10.0)
    open_loop.add_argument("--duration", type=float, default=30.0)
    open_loop.add_argument("--channels", type=int, default=8)
    open_loop.add_argument(
        "--server-pid", type=int, nargs="+", default=[], help="processes whose CPU to read"
    )
    watch = commands.add_parser(
        "watch",
        help="the decision table pushed to the control plane: local decisions against the "
        "round trip, propagation, CheckWrite with idle watchers; writes docs/benchmarks-watch.md",
    )
    add_watch_arguments(watch)
    holders = commands.add_parser("hold-watchers", help="hold idle watch streams (the watch run)")
    holders.add_argument("--target", required=True)
    holders.add_argument("--count", type=int, default=1_000)
    for name in ("nightly-fill", "nightly-eval", "storage"):
        sub = commands.add_parser(name, help=f"{name} measurement (a subprocess of the run)")
        sub.add_argument("--data-dir", required=True)
        sub.add_argument("--key-dir", required=True)
        if name != "storage":
            sub.add_argument("--database-url", default=None, help="PostgreSQL instead of SQLite")
        if name == "nightly-fill":
            sub.add_argument("--instances", type=int, default=10_000)
            sub.add_argument("--changes", type=int, default=3)
        if name == "storage":
            sub.add_argument("--instances", type=int, default=100)
            sub.add_argument("--hours", type=float, default=24.0)
            sub.add_argument("--interval", type=float, default=10.0)
    return root


DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"

QUICK = {
    "duration": 1.0,
    "warmup": 0.2,
    "rounds": 1,
    "concurrency": [1],
    "fleet": 1_000,
    "nightly_instances": 1_000,
    "storage_instances": 10,
    "storage_hours": 1.0,
    "open_loop_gateways": 2_000,
    "open_loop_seconds": 2.0,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    subcommands: dict[str, Callable[[argparse.Namespace], int]] = {
        "noop-server": cmd_noop_server,
        "load": cmd_load,
        "load-http": cmd_load_http,
        "open-loop": cmd_open_loop,
        "nightly-fill": cmd_nightly_fill,
        "nightly-eval": cmd_nightly_eval,
        "storage": cmd_storage,
        "hold-watchers": cmd_hold_watchers,
    }
    if args.command == "postgres":
        return cmd_postgres(args, argv)
    if args.command == "watch":
        with _terminate_on_signal():
            return cmd_watch(args, argv)
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
        bench = Bench(args, argv)
        bench.run()
    markdown = Report(bench).render()
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
