"""Walk a deployment through twelve days of license enforcement in a few seconds.

    python scripts/simulate.py            # the timeline
    python scripts/simulate.py --verbose  # and the server's own log on stderr

It starts the real server in-process (port 0 on 127.0.0.1, a temporary data
directory, a freshly made vendor key and a signed 16-core license) on a
simulated clock, and drives it only through the gRPC client: a fleet of
gateways reports its cores, the control plane asks CheckWrite whether a route
may be created, and an operator uploads licenses. The evaluator's wake-ups are
simulated too, so each midnight comes at once instead of after a day.

The story: on day 0 the fleet scales past the quota; from the evaluation at
the start of day 1 the deployment is DP_CORE_EXCEEDED (writes allowed, with a
warning); from the start of day 8 it is RESTRICTED (creating and updating
denied; reads, deletes and the license itself allowed); on day 9 a 32-core
license is uploaded and the deployment is NORMAL again at once.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from licensing.client import LicensingClient, Operation
from licensing.v1 import licensing_pb2 as pb

from server.app import RunningServer, run_server
from server.config import load_config
from server.domain.clock import SECONDS_PER_DAY, ManualClock
from server.domain.license import iso_time, issue_license, public_key_pem

DAY = SECONDS_PER_DAY
HOUR = 3600.0
# day 0 of the simulation: the deployment is made at 08:00 UTC
DAY_0 = datetime(2027, 3, 1, tzinfo=UTC).timestamp()
DEPLOYED_AT = DAY_0 + 8 * HOUR
DAYS = 12
DEPLOYMENT_ID = "simulated-deployment"
KEY_ID = "vendor-sim"
CORES_PER_GATEWAY = 4


def state_name(state: pb.RuntimeState.ValueType) -> str:
    return pb.RuntimeState.Name(state).removeprefix("RUNTIME_STATE_")


def reason_name(reason: pb.DecisionReason.ValueType) -> str:
    return pb.DecisionReason.Name(reason).removeprefix("DECISION_REASON_")


def clock_text(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M")


@dataclass
class Vendor:
    """The vendor's side: a signing key and the licenses it issues."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def issue(self, serial_number: str, max_dp_cores: int) -> str:
        return issue_license(
            self.key,
            KEY_ID,
            serial_number=serial_number,
            customer="Example Corp",
            effective_at=DAY_0 - 30 * DAY,
            expires_at=DAY_0 + 365 * DAY,
            max_dp_cores=max_dp_cores,
            features=["api7-gateway"],
            deployment_id=DEPLOYMENT_ID,
            free_trial=False,
        )


@dataclass
class Fleet:
    """Gateway instances reporting their cores through the real gRPC client."""

    client: LicensingClient
    instances: list[str] = field(default_factory=list)
    started: int = 0

    def scale_to(self, count: int) -> None:
        while len(self.instances) < count:
            self.started += 1
            self.instances.append(f"gw-{self.started:02d}")

    def report_all(self) -> None:
        for instance in self.instances:
            self.client.report_usage(instance, CORES_PER_GATEWAY)

    def rolling_restart(self) -> None:
        """Replace every instance in turn; each old one says it is stopping."""
        for n, old in enumerate(list(self.instances)):
            self.client.report_usage(old, 0, stopping=True)
            self.started += 1
            self.instances[n] = f"gw-{self.started:02d}"
            self.client.report_usage(self.instances[n], CORES_PER_GATEWAY)

    @property
    def cores(self) -> int:
        return len(self.instances) * CORES_PER_GATEWAY


class Simulation:
    def __init__(self, running: RunningServer, clock: ManualClock, tokens: dict[str, str]) -> None:
        self.running = running
        self.clock = clock
        target = f"127.0.0.1:{running.port}"
        self.admin = LicensingClient(target, token=tokens["admin"])
        self.control_plane = LicensingClient(target, token=tokens["control_plane"])
        self.fleet = Fleet(LicensingClient(target, token=tokens["gateway"]))
        self.vendor: Vendor | None = None
        self.timeline: list[str] = []

    def close(self) -> None:
        for client in (self.admin, self.control_plane, self.fleet.client):
            client.close()

    def at(self, day: int, hour: float) -> None:
        """Move the simulated clock; the evaluator and the fleet do what the time brings."""
        self.clock.set(DAY_0 + day * DAY + hour * HOUR)
        # the evaluator thread's wake-up, without waiting for it
        self.running.service.tick()
        # the gateways report every ~10 s; one round stands for those around this moment
        self.fleet.report_all()

    def write_verdict(
        self, resource: str = "route", operation: Operation = Operation.CREATE
    ) -> str:
        decision = self.control_plane.check_write(resource, operation)
        verdict = "allowed" if decision.allowed else "DENIED"
        return f"{verdict} ({reason_name(decision.reason)})"

    def line(self, event: str, usage: str = "") -> None:
        status = self.control_plane.status()
        now = self.clock.now()
        day = int((now - DAY_0) // DAY)
        quota = status.license.max_dp_cores if status.HasField("license") else 0
        if not usage:
            usage = f"{status.current_total_cores}/{quota} now"
        self.timeline.append(
            f"{day:>3}  {clock_text(now)}  {usage:>13}  {state_name(status.state):<16}  "
            f"{self.write_verdict():<22}  {event}"
        )

    def evaluation_line(self, day: int) -> None:
        """The evaluation at the start of `day`, judging the day before."""
        self.at(day, 0)
        status = self.control_plane.status()
        judged = status.last_evaluated_day
        event = f"evaluated {judged.day}"
        change = status.last_state_change
        if change.change_time.seconds == int(self.clock.now()):
            event += f": {state_name(change.state_before)} -> {state_name(change.state_after)}"
        if status.HasField("grace_end_time") and judged.state_before == pb.RUNTIME_STATE_NORMAL:
            event += f", grace ends {clock_text(status.grace_end_time.seconds)}"
        self.line(event, usage=f"{judged.peak_cores}/{judged.max_dp_cores} peak")

    def run(self, vendor: Vendor) -> list[str]:
        fleet = self.fleet
        self.at(0, 8)
        self.admin.upload(vendor.issue("LIC-SIM-1", 16))
        self.line("license LIC-SIM-1 uploaded: 16 cores")
        fleet.scale_to(4)
        self.at(0, 9)
        self.line(f"{len(fleet.instances)} gateways x {CORES_PER_GATEWAY} cores report")
        fleet.scale_to(6)
        self.at(0, 14)
        self.line(f"scale-up to {len(fleet.instances)} gateways: {fleet.cores} cores, quota 16")
        for day in range(1, DAYS):
            self.evaluation_line(day)
            if day == 5:
                self.at(day, 11)
                fleet.rolling_restart()
                self.line(
                    "rolling restart: each gateway replaced, the old one reports stopping "
                    f"(counted once: {fleet.cores} cores)"
                )
            if day == 8:
                self.at(day, 9)
                denied = self.control_plane.check_write("route", Operation.CREATE)
                indent = " " * 56
                self.timeline.append(f"{indent}CheckWrite says: {denied.message}")
                self.timeline.append(
                    f"{indent}read route: {self.write_verdict('route', Operation.READ)}, "
                    f"delete route: {self.write_verdict('route', Operation.DELETE)}, "
                    f"upload license: {self.write_verdict('license', Operation.CREATE)}"
                )
            if day == 9:
                self.at(day, 10)
                response = self.admin.upload(vendor.issue("LIC-SIM-2", 32))
                self.line(
                    f"license LIC-SIM-2 uploaded: 32 cores -> {state_name(response.state)} at once"
                )
            self.at(day, 12)
        return self.timeline


@contextmanager
def simulated_server(data_dir: Path, vendor: Vendor, clock: ManualClock) -> Iterator[Simulation]:
    key_path = data_dir / f"{KEY_ID}.public.pem"
    key_path.write_bytes(public_key_pem(vendor.key.public_key()))
    tokens = {role: secrets.token_urlsafe(24) for role in ("admin", "gateway", "control_plane")}
    config = load_config(
        [
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir / "data"),
            "--trusted-key",
            f"{KEY_ID}={key_path}",
            "--deployment-id",
            DEPLOYMENT_ID,
            "--deployment-date",
            iso_time(DEPLOYED_AT),
            # the simulation drives the evaluator itself as it moves the clock
            "--evaluation-interval",
            "30",
        ],
        environ={
            "LICENSING_ADMIN_TOKEN": tokens["admin"],
            "LICENSING_GATEWAY_TOKEN": tokens["gateway"],
            "LICENSING_CONTROL_PLANE_TOKEN": tokens["control_plane"],
        },
    )
    with run_server(config, clock) as running:
        simulation = Simulation(running, clock, tokens)
        try:
            yield simulation
        finally:
            simulation.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", action="store_true", help="show the server's log on stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL,
        stream=sys.stderr,
        format="    server: %(message)s",
    )
    vendor = Vendor()
    clock = ManualClock(DEPLOYED_AT)
    with (
        tempfile.TemporaryDirectory(prefix="licensing-sim-") as tmp,
        simulated_server(Path(tmp), vendor, clock) as simulation,
    ):
        print(
            f"LicenseService simulation: a real server on 127.0.0.1:{simulation.running.port}, "
            f"a simulated clock, {DAYS} days"
        )
        print(
            "CheckWrite is asked whether a route may be created; cores are now/quota, or a "
            "day's peak/quota at its evaluation\n"
        )
        print(
            f"{'day':>3}  {'time (UTC)':<16}  {'cores/quota':>13}  {'state':<16}  "
            f"{'create route':<22}  event"
        )
        for line in simulation.run(vendor):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
