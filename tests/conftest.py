"""Shared fixtures: real Ed25519 keys, real licenses, a real server on port 0 with a manual clock."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from licensing.client import LicensingClient

from server.app import RunningServer, start_server
from server.config import load_config
from server.domain.clock import SECONDS_PER_DAY, ManualClock
from server.domain.license import issue_license, public_key_pem

VENDOR_KID = "vendor-test"
ADMIN_TOKEN = "admin-secret-token"
GATEWAY_TOKEN = "gateway-secret-token"
CONTROL_PLANE_TOKEN = "control-plane-secret-token"
DEPLOYMENT_ID = "deployment-under-test"
# 2027-01-01T10:00:00Z: the tests' deployment starts mid-morning
START = datetime(2027, 1, 1, 10, 0, tzinfo=UTC).timestamp()
DAY = SECONDS_PER_DAY


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


def server_config(data_dir: Path, vendor: Vendor, *extra: str, environ: dict[str, str] | None = None) -> Any:
    return load_config(
        [
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
            "--trusted-key",
            f"{vendor.kid}={vendor.public_path}",
            "--deployment-id",
            DEPLOYMENT_ID,
            # the tests drive the evaluator themselves through the manual clock
            "--evaluation-interval",
            "30",
            *extra,
        ],
        environ=TOKENS if environ is None else environ,
    )


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
    running = start_server(config, clock)
    target = f"127.0.0.1:{running.port}"
    clients = [LicensingClient(target, token=t) for t in (ADMIN_TOKEN, GATEWAY_TOKEN, CONTROL_PLANE_TOKEN)]
    try:
        yield Harness(running, clock, *clients, target=target)
    finally:
        for c in clients:
            c.close()
        running.stop(grace=0.5)


@pytest.fixture
def make_harness(tmp_path: Path, vendor: Vendor, clock: ManualClock) -> Iterator[Callable[..., Harness]]:
    """Start servers on port 0; each gets the same data directory unless told otherwise."""
    stack = ExitStack()

    def make(*extra: str, data_dir: Path | None = None, environ: dict[str, str] | None = None) -> Harness:
        config = server_config(data_dir or tmp_path / "data", vendor, *extra, environ=environ)
        return stack.enter_context(harness_for(config, clock))

    with stack:
        yield make


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
