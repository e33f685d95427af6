"""PostgreSQL against SQLite, two replicas against one: `python -m scripts.bench postgres`.

Each server is `python -m licensing_server` as a subprocess with the bench license installed
and a fleet primed (every instance reported once, so measured reports extend intervals). Each
PostgreSQL run gets a fresh schema in the given database, dropped at the end. In every round the
configurations run one after another, the order reversed every other round; figures are
medians over the rounds. Then the open loop (gateways reporting on a fixed schedule) against
one PostgreSQL replica and against two, in rounds of its own, and the nightly evaluation of a
filled day on PostgreSQL.

Placed as the main benchmark places its processes (`--no-pin` turns it off): a lone server
pinned to one CPU and every load generator to another, so the generator's own work never
takes the server's CPU. With two replicas nothing is pinned: on one CPU together they would
only show that CPU saturated, and beside them a pinned generator is starved of its CPU.
PostgreSQL is left to the scheduler too: it serves all, and the machine may have only two.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import (
    BENCH_INSTANCE_TTL,
    DEPLOYMENT_ID,
    ENTRY,
    KEY_ID,
    ROOT,
    START_TIMEOUT,
    TOKEN_ENV,
    bench_license,
    free_port,
    load_arguments,
    median_and_range,
    open_loop_arguments,
    pinning,
    revision,
)

DEFAULT_POSTGRES_OUTPUT = Path("docs") / "benchmarks-postgres.md"
TOKENS = {
    "LICENSING_ADMIN_TOKEN": "bench-admin",
    "LICENSING_GATEWAY_TOKEN": "bench-gateway",
    "LICENSING_CONTROL_PLANE_TOKEN": "bench-control-plane",
}
CONFIGURATIONS = ("sqlite, 1 replica", "postgresql, 1 replica", "postgresql, 2 replicas")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    target: str
    log_path: Path


@dataclass
class Results:
    # (configuration, concurrency) -> one dict per round
    closed_loop: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    # replicas -> the open loop's answer, one per round
    open_loop: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    nightly: dict[str, Any] = field(default_factory=dict)


def schema_url(url: str, schema: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    import psycopg

    schema = f"bench_{secrets.token_hex(5)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema_url(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


class PostgresBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
        self.license, self.public_path = bench_license(
            self.workdir / "keys", time.time(), "BENCH-PG"
        )
        self.results = Results()
        self.began = time.monotonic()
        self.pins = pinning(not args.no_pin)

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.began:7.1f}s] {message}", file=sys.stderr, flush=True)

    def start(self, name: str, database_url: str | None, *, pinned: bool = True) -> Server:
        """One server, pinned to the server CPU unless told otherwise (replicas are not)."""
        from licensing.client import LicensingClient

        port = free_port()
        log_path = self.workdir / f"{name}.log"
        command = [
            *(self.pins.server if pinned else self.pins.anywhere),
            sys.executable,
            "-m",
            "licensing_server",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(self.workdir / name),
            "--trusted-key",
            f"{KEY_ID}={self.public_path}",
            "--deployment-id",
            DEPLOYMENT_ID,
            "--deployment-date",
            datetime.fromtimestamp(self.deployed_at, UTC).isoformat(),
            "--instance-ttl",
            str(BENCH_INSTANCE_TTL),
            "--log-level",
            "WARNING",
            # replicas on one machine would share the Admin API's default port; it is not measured
            "--http-listen",
            "",
        ]
        if database_url:
            command += ["--database-url", database_url]
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=dict(os.environ, **TOKENS),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = Server(process, f"127.0.0.1:{port}", log_path)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{log_path.read_text()[-2000:]}")
            try:
                with LicensingClient(server.target, token=TOKENS["LICENSING_ADMIN_TOKEN"]) as c:
                    if not c.status().license.serial_number:
                        c.upload(self.license)
                    return server
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @staticmethod
    def stop(servers: list[Server]) -> None:
        for server in servers:
            server.process.terminate()
        for server in servers:
            with suppress(subprocess.TimeoutExpired):
                server.process.wait(20)
            if server.process.poll() is None:
                server.process.kill()

    def generator(self, arguments: list[str], *, pinned: bool = True) -> subprocess.Popen[str]:
        """A load generator, pinned to the generator CPU unless told otherwise: beside
        replicas the scheduler has, it would be starved of the CPU they share with it."""
        env = dict(os.environ, **{TOKEN_ENV: TOKENS["LICENSING_GATEWAY_TOKEN"]})
        return subprocess.Popen(
            [
                *(self.pins.generator if pinned else self.pins.anywhere),
                sys.executable,
                "-m",
                ENTRY,
                *arguments,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )

    @staticmethod
    def answer(process: subprocess.Popen[str]) -> dict[str, Any]:
        out, _ = process.communicate(timeout=600)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    def prime(self, target: str, fleet: int) -> None:
        self.answer(
            self.generator(
                [
                    "load",
                    "--target",
                    target,
                    "--method",
                    "ReportUsage",
                    "--fleet",
                    str(fleet),
                    "--each-once",
                ]
            )
        )

    @contextmanager
    def configuration(self, name: str) -> Iterator[list[Server]]:
        """The servers of one configuration, primed with the fleet."""
        replicas = 2 if name.endswith("2 replicas") else 1
        if name.startswith("sqlite"):
            servers = [self.start(f"sqlite-{secrets.token_hex(3)}", None)]
            try:
                self.prime(servers[0].target, self.args.fleet)
                yield servers
            finally:
                self.stop(servers)
            return
        with fresh_schema(self.args.database_url) as url:
            servers = [
                self.start(f"pg-{n}-{secrets.token_hex(3)}", url, pinned=replicas == 1)
                for n in range(replicas)
            ]
            try:
                self.prime(servers[0].target, self.args.fleet)
                yield servers
            finally:
                self.stop(servers)

    def closed_loop(self, name: str, concurrency: int) -> dict[str, Any]:
        with self.configuration(name) as servers:
            # the same calls in flight in all, spread over the replicas
            share = max(1, concurrency // len(servers))
            loads = [
                self.generator(
                    load_arguments(
                        server.target, "ReportUsage", share, self.args, server.process.pid
                    ),
                    pinned=len(servers) == 1,
                )
                for server in servers
            ]
            answers = [self.answer(load) for load in loads]
        return {
            "rps": sum(a["rps"] for a in answers),
            "p50_ms": max(a["p50_ms"] for a in answers),
            "p99_ms": max(a["p99_ms"] for a in answers),
            "server_cpu_us": 1e6
            * sum(a["server_cpu_s"] for a in answers)
            / max(1, sum(a["calls"] for a in answers)),
            "errors": sum(sum(a["errors"].values()) for a in answers),
        }

    def open_loop(self, replicas: int) -> dict[str, Any]:
        """The fleet reporting on its schedule, its connections spread over the replicas."""
        gateways = self.args.open_loop_gateways
        self.log(f"open loop: {gateways} gateways over {replicas} PostgreSQL replica(s)")
        pinned = replicas == 1
        with fresh_schema(self.args.database_url) as url:
            servers = [self.start(f"pg-open-loop-{n}", url, pinned=pinned) for n in range(replicas)]
            try:
                self.prime(servers[0].target, gateways)
                arguments = open_loop_arguments(
                    [server.target for server in servers],
                    [server.process.pid for server in servers],
                    self.args,
                )
                return self.answer(self.generator(arguments, pinned=pinned))
            finally:
                self.stop(servers)

    def run(self) -> None:
        self.deployed_at = time.time()
        for round_number in range(self.args.rounds):
            order = CONFIGURATIONS if round_number % 2 == 0 else CONFIGURATIONS[::-1]
            for concurrency in self.args.concurrency:
                for name in order:
                    self.log(f"round {round_number + 1}: {name}, concurrency {concurrency}")
                    result = self.closed_loop(name, concurrency)
                    self.results.closed_loop.setdefault((name, concurrency), []).append(result)
        if not self.args.skip_open_loop:
            replica_counts = self.args.open_loop_replicas
            for round_number in range(self.args.open_loop_rounds):
                for replicas in replica_counts if round_number % 2 == 0 else replica_counts[::-1]:
                    answer = self.open_loop(replicas)
                    self.results.open_loop.setdefault(replicas, []).append(answer)
        if not self.args.skip_nightly:
            self.log(f"nightly evaluation of {self.args.nightly_instances} instances on PostgreSQL")
            with fresh_schema(self.args.database_url) as url:
                common = ["--data-dir", str(self.workdir / "nightly"), "--database-url", url]
                keys = ["--key-dir", str(self.workdir / "nightly-keys")]
                fill = self.generator(
                    [
                        "nightly-fill",
                        *common,
                        *keys,
                        "--instances",
                        str(self.args.nightly_instances),
                    ]
                )
                self.results.nightly["fill"] = self.answer(fill)
                self.results.nightly["eval"] = self.answer(
                    self.generator(["nightly-eval", *common, *keys])
                )

    def render(self, argv: list[str]) -> str:
        lines = [
            "# Benchmarks: PostgreSQL and replicas",
            "",
            f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- command: `python -m scripts.bench {' '.join(argv)}`",
            f"- machine: {os.cpu_count()} CPUs, {platform.machine()}, "
            f"{platform.system()} {platform.release()}; PostgreSQL on the same machine",
            f"- code: {revision()}",
            f"- placement: {self.pins.note}; with two replicas nothing is pinned (on one CPU "
            "together they would only show that CPU saturated, and beside them a pinned "
            "generator is starved); PostgreSQL is never pinned",
            "- every server runs with its default settings (the Admin API off: replicas on one "
            "machine would share its port)",
            f"- ReportUsage over a fleet of {self.args.fleet:,} instance IDs primed first, so "
            "every measured report extends its interval; with 2 replicas the same calls in "
            "flight are split between them, each generator cycling through the whole fleet",
            f"- {self.args.rounds} rounds of {self.args.duration} s after {self.args.warmup} s "
            "warm-up, configurations interleaved; medians over the rounds (min-max)",
            "",
            "## ReportUsage, durable, closed loop",
            "",
            "| configuration | conc. | rps | p50 ms | p99 ms | server CPU us/call | errors |",
            "|---|---|---|---|---|---|---|",
        ]
        for (name, concurrency), runs in self.results.closed_loop.items():

            def median(key: str, runs: list[dict[str, Any]] = runs) -> str:
                return median_and_range([r[key] for r in runs], ",.1f")

            errors = sum(r["errors"] for r in runs)
            lines.append(
                f"| {name} | {concurrency} | {median('rps')} | {median('p50_ms')} | "
                f"{median('p99_ms')} | {median('server_cpu_us')} | {errors} |"
            )
        if self.results.open_loop:
            rounds = self.args.open_loop_rounds
            lines += [
                "",
                "## Open loop on PostgreSQL",
                "",
                f"{self.args.open_loop_gateways:,} gateways each reporting every "
                f"{self.args.open_loop_interval:g} s, sent on a fixed schedule for "
                f"{self.args.open_loop_seconds:g} s over {self.args.open_loop_channels} "
                "connections, spread over the "
                "replicas as a load balancer would; latency from each call's scheduled moment. "
                f"{rounds} rounds, the order of the configurations reversed every other round; "
                "medians over the rounds (min-max). Target: p99 < 50 ms, no errors. Servers' "
                "CPU is the replicas' together, in CPUs; other load is what everything else "
                "used meanwhile, PostgreSQL's own work included.",
                "",
                "| replicas | calls/s | calls | errors | p50 ms | p99 ms | max ms | "
                "generator lag p99 ms | servers' CPU | other load |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for replicas, answers in self.results.open_loop.items():

                def spread(key: str, answers: list[dict[str, Any]] = answers) -> str:
                    return median_and_range([a[key] for a in answers], ".2f")

                failed: dict[str, int] = {}
                for answer in answers:
                    for code, count in answer["errors"].items():
                        failed[code] = failed.get(code, 0) + count
                lines.append(
                    f"| {replicas} | {answers[0]['rate']:,.0f} | "
                    f"{sum(a['calls'] for a in answers):,} | {failed or 'none'} | "
                    f"{spread('p50_ms')} | {spread('p99_ms')} | {spread('max_ms')} | "
                    f"{spread('lag_p99_ms')} | {spread('server_busy')} | {spread('other_load')} |"
                )
        if self.results.nightly:
            n = self.results.nightly
            lines += [
                "",
                "## Nightly evaluation on PostgreSQL",
                "",
                f"{self.args.nightly_instances:,} instances, {n['fill']['rows']:,} interval rows; "
                "a fresh process starts on the database and ticks just after midnight: the "
                "day is read, judged and stored in one transaction. Target: <= 2 s.",
                "",
                "| evaluation time | process peak RSS | peak | instances at peak |",
                "|---|---|---|---|",
                f"| {n['eval']['seconds']:.3f} s | {n['eval']['peak_rss_mib']:.0f} MiB | "
                f"{n['eval']['peak_cores']:,} cores | {n['eval']['peak_instances']:,} |",
            ]
        return "\n".join(lines) + "\n"


def cmd_postgres(args: argparse.Namespace, argv: list[str]) -> int:
    bench = PostgresBench(args)
    bench.run()
    markdown = bench.render(argv)
    print(markdown)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(markdown)
        print(f"written to {args.output}", file=sys.stderr)
    return 0
