"""The runner: starts the servers, drives them in interleaved rounds, collects the figures.

Every server is a subprocess pinned to the same CPU; the load generator is a
subprocess pinned to the other. In each round our server, the ceiling (the
no-op grpc.aio server), the no-op thread-pool server (for the record) and
the ceiling again (the A/A noise floor) run one after another, the order
reversed every other round, so a drift in the machine's speed touches all
of them alike. Ratios are taken within a round and reported as medians.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from licensing.v1 import licensing_pb2 as pb

from .common import (
    AIO,
    BENCH_INSTANCE_TTL,
    DEPLOYMENT_ID,
    ENTRY,
    FLEET_CORES,
    KEY_ID,
    MESSAGES,
    OURS,
    OURS_HTTPS,
    ROOT,
    SERVICE,
    START_TIMEOUT,
    THREAD,
    TOKEN_ENV,
    bench_license,
    fleet_ids,
    free_port,
    load_arguments,
    machine_busy_seconds,
    open_loop_arguments,
    pinning,
)


def _http_call(
    server: ServerProcess, method: str, body: bytes | None, token: str, tls: bool
) -> int:
    """One call to a server's Admin API (/api/license); returns the HTTP status."""
    host, _, port = server.http_target.rpartition(":")
    connection: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the benchmark's own self-signed certificate
        connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
    else:
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        connection.request(method, "/api/license", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return int(response.status)
    finally:
        connection.close()


# below this many CPUs of other activity the machine counts as quiet (our idle servers tick)
QUIET_LOAD = 0.1


@dataclass
class ServerProcess:
    name: str
    process: subprocess.Popen[bytes]
    target: str
    log_path: Path
    # the Admin API's HOST:PORT, for our servers
    http_target: str = ""

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

    @classmethod
    def from_answer(cls, server: str, raw: dict[str, Any]) -> RunResult:
        """One load generator's JSON line, as figures."""
        calls = max(int(raw["calls"]), 1)
        elapsed = float(raw["elapsed"])
        return cls(
            server=server,
            rps=float(raw["rps"]),
            p50_ms=float(raw["p50_ms"]),
            p99_ms=float(raw["p99_ms"]),
            server_cpu_us=float(raw["server_cpu_s"]) / calls * 1e6,
            generator_cpu=float(raw["generator_cpu_s"]) / elapsed,
            server_busy=float(raw["server_cpu_s"]) / elapsed,
            other_load=float(raw["other_cpu_s"]) / elapsed,
            calls=int(raw["calls"]),
            errors=dict(raw["errors"]),
        )


@dataclass
class Cell:
    """Every run of one (method, concurrency)."""

    runs: dict[str, list[RunResult]] = field(default_factory=dict)
    # per round, against the ceiling run beside ours: rps, p50, p99, cpu
    ratios: list[dict[str, float]] = field(default_factory=list)
    # the no-op thread-pool server against the same ceiling, for the record
    thread_ratios: list[dict[str, float]] = field(default_factory=list)
    # the ceiling's other run of the round against it: the A/A noise floor
    noise: list[dict[str, float]] = field(default_factory=list)

    def add(self, result: RunResult) -> None:
        self.runs.setdefault(result.server, []).append(result)

    def median(self, server: str, attribute: str) -> float:
        values = [getattr(r, attribute) for r in self.runs.get(server, [])]
        return statistics.median(values) if values else float("nan")


def ratios(run: RunResult, ceiling: RunResult) -> dict[str, float]:
    return {
        "rps": run.rps / ceiling.rps,
        "p50": run.p50_ms / ceiling.p50_ms,
        "p99": run.p99_ms / ceiling.p99_ms,
        "cpu": run.server_cpu_us / ceiling.server_cpu_us,
    }


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
        self.open_loop: dict[str, Any] = {}
        # GET /api/license runs by (transport, concurrency)
        self.http_runs: dict[tuple[str, int], list[RunResult]] = {}
        self.license_text, self.public_path = "", Path()
        self.began = time.monotonic()
        # runs that started although the machine did not go quiet within --wait-idle
        self.busy_waits = 0

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.began:7.1f}s] {message}", file=sys.stderr, flush=True)

    # --- servers ---

    def _spawn(
        self, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> ServerProcess:
        port, http_port = free_port(), free_port()
        log_path = self.workdir / f"{name}.log"
        placed = [
            a.replace("{port}", str(port)).replace("{http_port}", str(http_port)) for a in command
        ]
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [*self.pins.server, *placed],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = ServerProcess(
            name, process, f"127.0.0.1:{port}", log_path, f"127.0.0.1:{http_port}"
        )
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

    def _our_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "LICENSING_ADMIN_TOKEN": self.tokens["admin"],
                "LICENSING_GATEWAY_TOKEN": self.tokens["gateway"],
                "LICENSING_CONTROL_PLANE_TOKEN": self.tokens["control_plane"],
            }
        )
        return env

    def _our_command(self, data_dir: Path, public_path: Path, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "licensing_server",
            "--listen",
            "127.0.0.1:{port}",
            "--data-dir",
            str(data_dir),
            "--trusted-key",
            f"{KEY_ID}={public_path}",
            "--deployment-id",
            DEPLOYMENT_ID,
            "--deployment-date",
            datetime.now(UTC).isoformat(),
            "--instance-ttl",
            str(BENCH_INSTANCE_TTL),
            "--log-level",
            "WARNING",
            *extra,
        ]

    def start_ours(self) -> dict[str, bytes]:
        """Our server with a signed license installed; returns one real response per method.

        Its Admin API is on (as by default) on a free port, unless --without-http-edge."""
        from licensing.client import LicensingClient, Operation

        key_dir = self.workdir / "vendor-keys"
        license_text, public_path = bench_license(key_dir, time.time(), "BENCH-0001")
        self.license_text, self.public_path = license_text, public_path
        http_listen = "" if self.args.without_http_edge else "127.0.0.1:{http_port}"
        server = self._spawn(
            OURS,
            self._our_command(self.workdir / "data", public_path, "--http-listen", http_listen),
            self._our_env(),
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

    def start_ours_https(self) -> ServerProcess:
        """A second server of ours, with TLS, for the Admin API over HTTPS (its gRPC, on TLS
        too, is not measured); the bench license uploaded over HTTPS."""
        from licensing_server.dev_tls import self_signed_certificate

        cert_path, key_path = self_signed_certificate(self.workdir / "tls")
        tls_flags = ["--tls-cert", str(cert_path), "--tls-key", str(key_path)]
        server = self._spawn(
            OURS_HTTPS,
            self._our_command(
                self.workdir / "data-https",
                self.public_path,
                "--http-listen",
                "127.0.0.1:{http_port}",
                *tls_flags,
            ),
            self._our_env(),
        )
        self._wait_http(server, tls=True)
        uploaded = _http_call(
            server,
            "PUT",
            json.dumps({"license": self.license_text}).encode(),
            self.tokens["admin"],
            tls=True,
        )
        if uploaded != 200:
            raise RuntimeError(f"uploading the bench license over HTTPS answered {uploaded}")
        return server

    def _wait_http(self, server: ServerProcess, tls: bool) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
            try:
                if _http_call(server, "GET", None, self.tokens["control_plane"], tls) == 200:
                    return
            except OSError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{server.name}'s Admin API did not answer within {START_TIMEOUT:.0f} s "
                        f"({error}):\n{server.log_tail()}"
                    ) from None
            time.sleep(0.2)

    def start_noop(self, kind: str, responses_path: Path) -> None:
        name = THREAD if kind == "thread" else AIO
        server = self._spawn(
            name,
            [
                sys.executable,
                "-m",
                ENTRY,
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

    def stop_servers(self, servers: list[ServerProcess] | None = None) -> None:
        """Stop these servers (all of them by default)."""
        stopping = list(self.servers.values()) if servers is None else servers
        for server in stopping:
            if server.process.poll() is None:
                server.process.terminate()
        for server in stopping:
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
            "-m",
            ENTRY,
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

    def prime_fleet(self, fleet: int) -> None:
        """Every instance of the fleet reports once, so the measured reports are extensions."""
        server = self.servers[OURS]
        result = self._generator(
            [
                "load",
                "--target",
                server.target,
                "--method",
                "ReportUsage",
                "--fleet",
                str(fleet),
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
            load_arguments(server.target, method, concurrency, self.args, server.process.pid),
            self._token_for(method),
            timeout,
        )
        if raw["errors"]:
            self.notes.append(f"{name} {method} c={concurrency}: errors {raw['errors']}")
        if name == OURS and raw["first_response"]:
            response = MESSAGES[method][1].FromString(bytes.fromhex(raw["first_response"]))
            if method == "CheckWrite" and not response.allowed:
                raise RuntimeError(f"our CheckWrite answered a denial: {response}")
        return RunResult.from_answer(name, raw)

    def measure_cell(self, method: str, concurrency: int) -> Cell:
        cell = Cell()
        for round_number in range(self.args.rounds):
            order = [OURS, AIO, THREAD, AIO]
            if round_number % 2:
                order.reverse()
            results: dict[str, list[RunResult]] = {}
            for name in order:
                result = self.run_once(name, method, concurrency)
                results.setdefault(name, []).append(result)
                cell.add(result)
                self.log(
                    f"{method:11s} c={concurrency:<2d} round {round_number + 1}/{self.args.rounds} "
                    f"{name:11s} {result.rps:8.0f} rps  p50 {result.p50_ms:6.3f} ms  "
                    f"p99 {result.p99_ms:6.3f} ms  server {result.server_cpu_us:6.0f} us/call  "
                    f"generator CPU {result.generator_cpu:4.0%}  other load "
                    f"{result.other_load:4.2f} CPUs"
                )
            ours, thread = results[OURS][0], results[THREAD][0]
            # the ceiling run nearer in time to ours is the reference, the other its A/A twin
            ceiling, twin = results[AIO] if round_number % 2 == 0 else results[AIO][::-1]
            cell.ratios.append(ratios(ours, ceiling))
            cell.thread_ratios.append(ratios(thread, ceiling))
            cell.noise.append(ratios(twin, ceiling))
        return cell

    def measure_open_loop(self) -> None:
        """Gateways reporting on a fixed schedule; latency from each report's scheduled moment."""
        server = self.servers[OURS]
        self.prime_fleet(self.args.open_loop_gateways)
        if self.args.wait_idle > 0:
            self.wait_until_quiet()
        self.open_loop = self._generator(
            open_loop_arguments([server.target], [server.process.pid], self.args),
            self.tokens["gateway"],
            timeout=self.args.open_loop_seconds + 120,
        )
        result = self.open_loop
        self.log(
            f"open loop: {result['rate']:.0f} ReportUsage/s for {result['duration']:g} s, "
            f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
            f"errors {result['errors'] or 'none'}"
        )

    # --- the Admin API ---

    def run_http(self, server: ServerProcess, tls: bool, concurrency: int) -> RunResult:
        if self.args.wait_idle > 0:
            self.wait_until_quiet()
        raw = self._generator(
            [
                "load-http",
                "--target",
                server.http_target,
                *(["--tls"] if tls else []),
                "--concurrency",
                str(concurrency),
                "--duration",
                str(self.args.duration),
                "--warmup",
                str(self.args.warmup),
                "--server-pid",
                str(server.process.pid),
            ],
            self.tokens["control_plane"],
            self.args.warmup + self.args.duration + 60,
        )
        if raw["errors"]:
            self.notes.append(f"{server.name} GET /api/license c={concurrency}: {raw['errors']}")
        return RunResult.from_answer(server.name, raw)

    def measure_http(self) -> None:
        """GET /api/license, plaintext on loopback (the server measured above) and over
        HTTPS (a second server with TLS), each at every concurrency, in rounds."""
        plain = self.servers[OURS]
        self._wait_http(plain, tls=False)
        secure = self.start_ours_https()
        try:
            for round_number in range(self.args.rounds):
                for transport, server in (("http", plain), ("https", secure)):
                    for concurrency in self.args.concurrency:
                        result = self.run_http(server, transport == "https", concurrency)
                        self.http_runs.setdefault((transport, concurrency), []).append(result)
                        self.log(
                            f"GET /api/license {transport:5s} c={concurrency:<2d} round "
                            f"{round_number + 1}/{self.args.rounds} {result.rps:8.0f} rps  p50 "
                            f"{result.p50_ms:6.3f} ms  p99 {result.p99_ms:6.3f} ms  server "
                            f"{result.server_cpu_us:6.0f} us/request  generator CPU "
                            f"{result.generator_cpu:4.0%}  other load "
                            f"{result.other_load:4.2f} CPUs"
                        )
        finally:
            # it would share the measured server's CPU in the runs that follow
            self.stop_servers([secure])

    # --- nightly and storage ---

    def _subcommand(self, args: list[str], timeout: float) -> dict[str, Any]:
        command = [*self.pins.server, sys.executable, "-m", ENTRY, *args]
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

    def run(self) -> None:
        self.log(self.pins.note)
        try:
            try:
                self.measure_hot_paths()
                if not self.args.skip_http and not getattr(self.args, "without_http_edge", False):
                    self.measure_http()
                if not self.args.skip_open_loop:
                    self.measure_open_loop()
            finally:
                self.stop_servers()
            if not self.args.skip_nightly:
                self.measure_nightly()
            if not self.args.skip_storage:
                self.measure_storage()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def measure_hot_paths(self) -> None:
        responses = self.start_ours()
        responses_path = self.workdir / "responses.json"
        responses_path.write_text(json.dumps({m: r.hex() for m, r in responses.items()}))
        self.start_noop("thread", responses_path)
        self.start_noop("aio", responses_path)
        self.log("servers up: " + ", ".join(f"{s.name} {s.target}" for s in self.servers.values()))
        if "ReportUsage" in self.args.methods:
            self.prime_fleet(self.args.fleet)
            self.log(f"fleet of {self.args.fleet} instances primed")
        for method in self.args.methods:
            for concurrency in self.args.concurrency:
                self.cells[(method, concurrency)] = self.measure_cell(method, concurrency)
