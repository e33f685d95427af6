"""The one place that wires the service: store, service, evaluator, gRPC server, health."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import ssl
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from licensing.v1 import licensing_pb2, licensing_pb2_grpc

from licensing_server.auth import AuthorizedService, Role, TokenCheck, service_handlers
from licensing_server.config import (
    Config,
    ConfigError,
    is_loopback,
    join_host_port,
    load_config,
    split_host_port,
)
from licensing_server.dev_tls import development_certificate
from licensing_server.domain.clock import Clock, SystemClock
from licensing_server.domain.deployment import DeploymentRefused
from licensing_server.domain.license import load_public_key, private_key_pem, public_key_pem
from licensing_server.evaluator import Evaluator
from licensing_server.health import Health
from licensing_server.http_edge import HttpEdge, tls_context
from licensing_server.license_file import LicenseFileWatcher
from licensing_server.limits import channel_options
from licensing_server.loop import ServerLoop
from licensing_server.metrics import Metrics, MetricsServer
from licensing_server.native_log import NativeLogRoute, why_cannot_listen
from licensing_server.replicas import ReplicaSync
from licensing_server.service import LicensingService, ServiceSettings
from licensing_server.servicer import LicenseServicer
from licensing_server.storage import Storage, StoreError
from licensing_server.store import Store
from licensing_server.watch import EnforcementFeed

log = logging.getLogger("licensing")

SERVICE_NAME = licensing_pb2.DESCRIPTOR.services_by_name["LicenseService"].full_name
DEV_KEY_ID = "dev"
DEV_KEY_DIR = "dev-signing-key"
SHUTDOWN_GRACE_SECONDS = 5.0


class StartupError(Exception):
    pass


def development_key(data_dir: Path) -> tuple[Path, Ed25519PublicKey]:
    """Make (once) and return the local development signing key pair."""
    key_dir = data_dir / DEV_KEY_DIR
    private_path = key_dir / f"{DEV_KEY_ID}.private.pem"
    public_path = key_dir / f"{DEV_KEY_ID}.public.pem"
    if not private_path.exists():
        key_dir.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        private_path.touch(mode=0o600)
        private_path.write_bytes(private_key_pem(key))
        public_path.write_bytes(public_key_pem(key.public_key()))
    return private_path, load_public_key(public_path.read_bytes())


def trusted_keys(config: Config) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for kid, path in config.trusted_key_paths().items():
        try:
            keys[kid] = load_public_key(path.read_bytes())
        except (OSError, ValueError) as error:
            raise StartupError(f"trusted key {kid!r} ({path}): {error}") from None
    if config.dev:
        private_path, public = development_key(Path(config.data_dir))
        keys[DEV_KEY_ID] = public
        log.warning(
            "DEVELOPMENT MODE: trusting the local development signing key %r (private key %s). "
            "Anyone holding it can mint licenses: never run --dev in production",
            DEV_KEY_ID,
            private_path,
        )
    if not keys:
        log.warning("no trusted keys configured: every license will be rejected as UNKNOWN_KEY")
    return keys


def tokens(config: Config) -> dict[Role, list[str]]:
    """Each role's bearer tokens; a token may have one role only."""
    by_role = {
        Role.ADMIN: config.admin_token,
        Role.GATEWAY: config.gateway_token,
        Role.CONTROL_PLANE: config.control_plane_token,
    }
    role_of: dict[str, Role] = {}
    for role, values in by_role.items():
        for token in values:
            first = role_of.setdefault(token, role)
            if first is not role:
                # a caller holding it would get one of the two roles, silently
                raise StartupError(
                    f"one token is configured for two roles, {first} and {role}: give each "
                    "role its own tokens"
                )
    return by_role


@dataclass
class RunningServer:
    """A started server and everything behind it; `stop()` drains and closes it."""

    server_loop: ServerLoop
    server: grpc.aio.Server
    port: int
    service: LicensingService
    store: Storage
    health: Health
    evaluator: Evaluator
    extras: list[Any]
    feed: EnforcementFeed
    stopped: bool = field(default=False, init=False)
    # the Admin API over HTTP(S); None when --http-listen is empty
    http_edge: HttpEdge | None = None

    @property
    def http_port(self) -> int | None:
        return self.http_edge.port if self.http_edge is not None else None

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on; None when --metrics-listen is unset."""
        return next((e.port for e in self.extras if isinstance(e, MetricsServer)), None)

    def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """NOT_SERVING first, then drain calls in progress for up to `grace` s; idempotent."""
        if self.stopped:
            return
        self.stopped = True
        self.health.enter_graceful_shutdown()
        # watch streams never end by themselves: end them, so the drain waits for real calls only
        self.server_loop.run(self.feed.close())
        self.server_loop.run(self._drain(grace))
        for extra in self.extras:
            extra.stop()
        self.evaluator.stop()
        # waits for blocking work still running (a commit of a call cut off by the grace)
        self.server_loop.close()
        self.store.close()

    async def _drain(self, grace: float) -> None:
        """Both edges stop taking calls and drain at once."""
        draining = [self.server.stop(grace)]
        if self.http_edge is not None:
            draining.append(self.http_edge.stop(grace))
        await asyncio.gather(*draining)


async def _bind(interceptors: list[Any], config: Config) -> grpc.aio.Server:
    """On the loop (the server binds to the running one): a gRPC server with its limits."""
    return grpc.aio.server(
        interceptors=interceptors,
        # two servers must never silently share a port
        options=[("grpc.so_reuseport", 0), *channel_options(config)],
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )


def _listen(server: grpc.aio.Server, config: Config) -> int:
    try:
        if config.tls_cert and config.tls_key:
            credentials = grpc.ssl_server_credentials(
                [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())]
            )
            port = server.add_secure_port(config.listen, credentials)
        else:
            port = server.add_insecure_port(config.listen)
    except OSError as error:
        raise StartupError(f"cannot read TLS files: {error}") from None
    except RuntimeError:
        # gRPC's own message only says to turn its debug log on
        port = 0
    if port == 0:
        reason = why_cannot_listen(*split_host_port(config.listen))
        raise StartupError(f"cannot listen on {config.listen}: {reason}")
    return int(port)


def http_tls_files(config: Config) -> tuple[Path, Path] | None:
    """The HTTP edge's certificate and key: the configured ones, or with --dev a self-signed
    one made for localhost (gRPC stays as configured: plaintext on loopback, as before)."""
    if config.tls_cert and config.tls_key:
        return Path(config.tls_cert), Path(config.tls_key)
    if config.dev and config.http_listen:
        return development_certificate(Path(config.data_dir))
    return None


def _listen_http(
    server_loop: ServerLoop, edge: HttpEdge, address: str, tls: tuple[Path, Path] | None
) -> None:
    host, port = split_host_port(address)
    try:
        context = tls_context(*tls) if tls is not None else None
    except (OSError, ssl.SSLError) as error:
        raise StartupError(f"cannot read TLS files for {address}: {error}") from None
    try:
        server_loop.run(edge.start(host, port, context))
    except OSError as error:
        raise StartupError(f"cannot listen on {address} (HTTP): {error}") from None


def open_storage(config: Config) -> Storage:
    """PostgreSQL when a database URL is configured (replicas share it), else SQLite."""
    if config.database_url:
        # imported here: the embedded default needs no PostgreSQL driver loaded
        from licensing_server.postgres_store import PostgresStore

        return PostgresStore(config.database_url)
    return Store(Path(config.data_dir))


def start_server(config: Config, clock: Clock | None = None) -> RunningServer:
    """Open the store, catch up on missed days, and serve; health flips to SERVING when ready."""
    clock = clock or SystemClock()
    auth_tokens = tokens(config)
    http_tls = http_tls_files(config)
    for address, tls in ((config.listen, bool(config.tls_cert)), (config.http_listen, http_tls)):
        if not address:
            continue
        loopback = is_loopback(split_host_port(address)[0])
        if not any(auth_tokens.values()) and not loopback:
            raise StartupError(
                f"refusing to serve {address} without authentication: set "
                "LICENSING_ADMIN_TOKEN (and the gateway and control-plane tokens), or listen on "
                "loopback only"
            )
        if not tls and not loopback and not config.allow_plaintext:
            raise StartupError(
                f"refusing to serve {address} in plaintext: configure --tls-cert and --tls-key, "
                "or pass --allow-plaintext"
            )
    keys = trusted_keys(config)
    token_check = TokenCheck(auth_tokens) if any(auth_tokens.values()) else None
    if token_check is None:
        log.warning("no tokens configured: every call is allowed (loopback only)")
    metrics = Metrics() if config.metrics_listen else None
    # the token check is in the service's handler lookup (AuthorizedService), below every
    # interceptor: the metrics time the calls it refuses too
    interceptors: list[Any] = [metrics.interceptor] if metrics is not None else []

    with ExitStack() as undo:  # whatever was set up when a start is refused is let go
        server_loop = ServerLoop(config.max_workers)
        undo.callback(server_loop.close)
        server = server_loop.run(_bind(interceptors, config))
        undo.callback(lambda: server_loop.run(server.stop(None)))
        port = _listen(server, config)
        health_service = Health(server_loop, [SERVICE_NAME])
        health_pb2_grpc.add_HealthServicer_to_server(health_service.servicer, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        try:
            store = open_storage(config)
        except StoreError as error:
            raise StartupError(str(error)) from None
        # let go of the data directory (which SQLite holds exclusively) or the connections
        undo.callback(store.close)
        try:
            service = LicensingService(
                store,
                clock,
                ServiceSettings(
                    trusted_keys=keys,
                    deployment_id=config.deployment_id,
                    deployment_time=config.deployment_date,
                    timezone=config.timezone,
                    instance_ttl=config.instance_ttl,
                    observed_share=config.observed_day_share,
                    expiry_warning_days=config.expiry_warning_days,
                    report_interval=config.report_interval,
                    development_mode=config.dev,
                ),
            )
            # days missed while the service was down are evaluated before it answers anything
            service.tick()
        except (StoreError, DeploymentRefused) as error:
            raise StartupError(str(error)) from None
        extras: list[Any] = []
        replica_sync = None
        if store.shared:
            # other replicas change the shared state too: follow them, and say when the
            # database cannot be reached
            replica_sync = ReplicaSync(service, store, health_service.ready)
            extras.append(replica_sync)
        watcher = None
        metrics_server = None
        if config.license_file:
            watcher = LicenseFileWatcher(
                service, store, config.license_file, config.license_poll_interval
            )
            # a license in the file is in force before the server reports SERVING
            watcher.poll_once()
            extras.append(watcher)
        if metrics is not None and config.metrics_listen:
            metrics.watch(service)
            try:
                metrics_server = metrics.serve(config.metrics_listen)
            except OSError as error:
                raise StartupError(
                    f"cannot serve metrics on {config.metrics_listen}: {error}"
                ) from None
            extras.append(metrics_server)
            undo.callback(metrics_server.stop)
        # watchers may hold half the concurrent calls, never all of them
        feed = EnforcementFeed(
            server_loop.loop, service.now, max_watchers=max(1, config.max_concurrent_rpcs // 2)
        )
        service.watch_enforcement(feed)
        servicer = LicenseServicer(service, server_loop.offload, feed, server_loop.commit_lane)
        handlers = service_handlers(
            licensing_pb2_grpc.add_LicenseServiceServicer_to_server, servicer
        )
        server.add_generic_rpc_handlers((AuthorizedService(handlers, token_check),))
        server_loop.run(server.start())
        http_edge = None
        if config.http_listen:
            # the same servicer, token check and metrics: a second edge onto the same service
            http_edge = HttpEdge(
                servicer,
                token_check,
                metrics.http if metrics is not None else None,
                config.http_body_timeout,
                config.max_connection_idle,
            )
            _listen_http(server_loop, http_edge, config.http_listen, http_tls)
            undo.callback(lambda: server_loop.run(http_edge.stop(0)))
        undo.pop_all()
    evaluator = Evaluator(service, config.evaluation_interval)
    evaluator.start()
    if replica_sync is not None:
        replica_sync.start()
    if watcher is not None:
        watcher.start()
    health_service.serving()
    # the addresses actually bound: with port 0 the log is the only place to find them
    log.info(
        "serving licensing.v1.LicenseService on %s (%s), deployment %s",
        join_host_port(split_host_port(config.listen)[0], port),
        "TLS" if config.tls_cert else "plaintext",
        service.deployment.deployment_id,
    )
    if http_edge is not None:
        log.info(
            "serving the Admin API on %s://%s: PUT and GET /api/license",
            "https" if http_tls else "http",
            http_edge.address,
        )
    if metrics_server is not None:
        log.info("serving Prometheus metrics on http://%s/metrics", metrics_server.address)
    return RunningServer(
        server_loop,
        server,
        port,
        service,
        store,
        health_service,
        evaluator,
        extras,
        feed,
        http_edge=http_edge,
    )


@contextmanager
def run_server(config: Config, clock: Clock | None = None) -> Iterator[RunningServer]:
    running = start_server(config, clock)
    try:
        yield running
    finally:
        running.stop(grace=1.0)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(config: Config) -> None:
    """One line per event on standard error, text or JSON, gRPC's own lines included."""
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["migrate"]:
        from licensing_server.migrate import main as migrate_main

        return migrate_main(arguments[1:])
    try:
        config = load_config(arguments)
    except ConfigError as error:
        print(f"license-server: {error}", file=sys.stderr)
        return 2
    native_log = NativeLogRoute()
    try:
        configure_logging(config)
        return serve(config)
    finally:
        native_log.close()


def serve(config: Config) -> int:
    """Start, serve until SIGTERM or SIGINT, then drain and stop."""
    log.info("effective configuration: %s", json.dumps(config.redacted()))
    try:
        running = start_server(config)
    except StartupError as error:
        log.error("cannot start: %s", error)
        return 1
    # Everything made so far (modules, the wiring, the state read at start) lives as long as
    # the process: out of the collector's sight, a full collection scans only what calls
    # made since, and stalls the event loop for milliseconds, not the ~50 ms it took with
    # them (measured under 2,000 reports/s).
    gc.collect()
    gc.freeze()
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: draining", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stopping.wait()
    running.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
