"""The report: the runner's figures as markdown, with the method beside them."""

from __future__ import annotations

import os
import platform
import shlex
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime

import grpc

from .common import AIO, BENCH_INSTANCE_TTL, FLEET_CORES, OURS, THREAD, protobuf_version, revision
from .runner import Bench, RunResult


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
            self.every_server(),
            self.admin_api(),
            self.open_loop(),
            self.offline(),
            self.targets(),
        ]
        if self.bench.notes:
            parts.append("Notes from the run:\n\n" + "\n".join(f"- {n}" for n in self.bench.notes))
        return "\n\n".join(p for p in parts if p) + "\n"

    def header(self) -> str:
        args = self.args
        command = shlex.join(["python", "-m", "scripts.bench", *self.bench.argv])
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
                f"protobuf {protobuf_version()}",
                f"- code: {revision()}",
                f"- placement: {self.bench.pins.note}",
                f"- quiet machine: {self.quiet_note()}",
                f"- runs: {args.duration:g} s measured after {args.warmup:g} s warm-up, "
                f"{args.rounds} rounds per path and concurrency; each round runs ours, the "
                "ceiling, the thread-pool no-op and the ceiling again, the order reversed every "
                "other round",
                f"- ReportUsage: a fleet of {args.fleet:,} distinct instance IDs cycled through, "
                f"{FLEET_CORES} cores each, primed first (server --instance-ttl "
                f"{BENCH_INSTANCE_TTL:g}) so every measured report extends its interval",
                "- ceiling: a no-op grpc.aio server of the same model as ours (one event loop, "
                "the same options and limits) returning a response ours gave, to the same "
                "request bytes with the same metadata (the authorization header included); "
                "ratios are ours / the ceiling run beside ours in the same round, as the median "
                "(min-max) over the rounds; A/A is the ceiling's other run of the round against "
                "it, the noise floor every ratio should be read against",
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
            ratios, noise = cell.ratios, cell.noise
            rows.append(
                [
                    method,
                    str(concurrency),
                    f"{cell.median(OURS, 'rps'):,.0f}",
                    spread([r["rps"] for r in ratios]),
                    spread([n["rps"] for n in noise]),
                    f"{cell.median(OURS, 'p99_ms'):.3f}",
                    spread([r["p99"] for r in ratios]),
                    spread([n["p99"] for n in noise]),
                    f"{cell.median(OURS, 'server_cpu_us'):.0f}",
                    spread([r["cpu"] for r in ratios]),
                    spread([r["rps"] for r in cell.thread_ratios]),
                ]
            )
        return "## Hot paths against the grpc.aio no-op ceiling\n\n" + table(
            [
                "path",
                "conc.",
                "ours rps",
                "rps / ceiling",
                "A/A rps",
                "ours p99 ms",
                "p99 / ceiling",
                "A/A p99",
                "server CPU us/call",
                "CPU / ceiling",
                "thread-pool no-op rps / ceiling",
            ],
            rows,
        )

    def every_server(self) -> str:
        rows: list[list[str]] = []
        for (method, concurrency), cell in self.bench.cells.items():
            for name in (OURS, AIO, THREAD):
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

    def admin_api(self) -> str:
        runs = self.bench.http_runs
        if not runs:
            return ""
        rows: list[list[str]] = []
        for (transport, concurrency), results in runs.items():

            def median(attribute: str, results: list[RunResult] = results) -> float:
                return float(statistics.median(getattr(r, attribute) for r in results))

            rows.append(
                [
                    transport,
                    str(concurrency),
                    f"{median('rps'):,.0f}",
                    f"{min(r.rps for r in results):,.0f}",
                    f"{median('p50_ms'):.3f}",
                    f"{median('p99_ms'):.3f}",
                    f"{max(r.p99_ms for r in results):.3f}",
                    f"{median('server_cpu_us'):.0f}",
                    f"{median('server_busy'):.0%}",
                    f"{max(r.generator_cpu for r in results):.0%}",
                    f"{max(r.other_load for r in results):.2f}",
                ]
            )
        return (
            "## Admin API: `GET /api/license` over HTTP/1.1\n\n"
            "The seed's read-back, answered by our server's HTTP edge (aiohttp on the same event "
            "loop as gRPC, the server pinned to one CPU): plaintext on loopback from the server "
            "measured above, and HTTPS from a second server of ours started with a self-signed "
            "certificate. Each worker of the load generator keeps one keep-alive connection and "
            "sends its next request when the answer is in (closed loop); every answer is the "
            "full GetStatus JSON of a server with a license installed. Medians over "
            f"{self.args.rounds} rounds; the min rps and max p99 are the worst round.\n\n"
            + table(
                [
                    "transport",
                    "conc.",
                    "rps",
                    "min rps",
                    "p50 ms",
                    "p99 ms",
                    "max p99 ms",
                    "server CPU us/request",
                    "server CPU",
                    "generator CPU",
                    "other load",
                ],
                rows,
            )
        )

    def open_loop(self) -> str:
        result = self.bench.open_loop
        if not result:
            return ""
        errors = ", ".join(f"{k} {v}" for k, v in sorted(result["errors"].items())) or "none"
        return (
            "## Open loop: gateways reporting on a fixed schedule\n\n"
            f"{self.args.open_loop_gateways:,} gateways each reporting every "
            f"{self.args.open_loop_interval:g} s: {result['rate']:,.0f} ReportUsage calls a "
            f"second sent on a fixed schedule for {result['duration']:g} s over "
            f"{self.args.open_loop_channels} connections, whatever the answers do (the fleet "
            "primed first, so every report extends an interval). Latency is counted from each "
            "call's scheduled moment, so a server or generator that falls behind pays for it; "
            "generator lag is how late the generator itself sent a call; other load is "
            "as above (CPUs other processes used during the run).\n\n"
            + table(
                [
                    "calls/s",
                    "calls",
                    "errors",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "generator lag p99 ms",
                    "server CPU",
                    "generator CPU",
                    "other load",
                ],
                [
                    [
                        f"{result['rate']:,.0f}",
                        f"{result['calls']:,}",
                        errors,
                        f"{result['p50_ms']:.2f}",
                        f"{result['p99_ms']:.2f}",
                        f"{result['max_ms']:.2f}",
                        f"{result['lag_p99_ms']:.2f}",
                        f"{result['server_busy']:.0%}",
                        f"{result['generator_busy']:.0%}",
                        f"{result['other_load']:.2f}",
                    ]
                ],
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
        throughput("ReportUsage", 0.75)
        throughput("GetStatus", 0.90)
        for (transport, concurrency), results in self.bench.http_runs.items():
            rps = statistics.median(r.rps for r in results)
            p99 = statistics.median(r.p99_ms for r in results)
            rows.append(
                [
                    f"GET /api/license ({transport}), c={concurrency}",
                    ">= 1,000 requests/s, p99 < 20 ms",
                    f"{rps:,.0f} requests/s, p99 {p99:.2f} ms",
                    verdict(rps >= 1000 and p99 < 20),
                ]
            )
        result = self.bench.open_loop
        if result:
            rows.append(
                [
                    f"open loop, {result['rate']:,.0f} ReportUsage/s: p99 from the schedule",
                    "< 50 ms, no errors",
                    f"{result['p99_ms']:.2f} ms, {sum(result['errors'].values())} errors",
                    verdict(result["p99_ms"] < 50 and not result["errors"]),
                ]
            )
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
