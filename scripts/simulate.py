"""Walk a deployment through twelve days of license enforcement in a few seconds.

    python scripts/simulate.py            # the timeline
    python scripts/simulate.py --verbose  # and the server's own log on stderr
    python scripts/simulate.py --json     # the timeline as a JSON list of rows

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
import json
import logging
import secrets
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from licensing.client import LicensingClient, Operation
from licensing.v1 import licensing_pb2 as pb

from licensing_server.app import RunningServer, run_server
from licensing_server.config import load_config
from licensing_server.domain.clock import SECONDS_PER_DAY, ManualClock
from licensing_server.domain.license import iso_time, issue_license, public_key_pem

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


@dataclass(frozen=True)
class Verdict:
    """CheckWrite's answer to one question."""

    allowed: bool
    reason: str
    message: str

    @staticmethod
    def of(decision: pb.CheckWriteResponse) -> Verdict:
        return Verdict(decision.allowed, reason_name(decision.reason), decision.message)

    def text(self) -> str:
        return f"{'allowed' if self.allowed else 'DENIED'} ({self.reason})"

    def as_json(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class TimelineRow:
    """One moment of the story: the cores against the quota, the state and CheckWrite's answer."""

    day: int
    time: float
    cores: int
    quota: int
    # "now": the cores counting at this moment; "peak": the peak of the day just evaluated
    cores_are: str
    state: str
    create_route: Verdict
    event: str
    # other questions asked at this moment ("read route": ...); such a row shows as its answers
    other_checks: dict[str, Verdict] = field(default_factory=dict)

    def lines(self) -> list[str]:
        if self.other_checks:
            indent = " " * 56
            answers = ", ".join(f"{what}: {v.text()}" for what, v in self.other_checks.items())
            return [f"{indent}CheckWrite says: {self.create_route.message}", f"{indent}{answers}"]
        usage = f"{self.cores}/{self.quota} {self.cores_are}"
        return [
            f"{self.day:>3}  {clock_text(self.time)}  {usage:>13}  {self.state:<16}  "
            f"{self.create_route.text():<22}  {self.event}"
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "time": datetime.fromtimestamp(self.time, UTC).isoformat().replace("+00:00", "Z"),
            "cores": self.cores,
            "quota": self.quota,
            "cores_are": self.cores_are,
            "state": self.state,
            "create_route": self.create_route.as_json(),
            "event": self.event,
            "other_checks": {what: v.as_json() for what, v in self.other_checks.items()},
        }


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
        self.timeline: list[TimelineRow] = []

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

    def verdict(self, resource: str = "route", operation: Operation = Operation.CREATE) -> Verdict:
        return Verdict.of(self.control_plane.check_write(resource, operation))

    def line(
        self,
        event: str,
        peak: pb.DayUsage | None = None,
        other_checks: dict[str, Verdict] | None = None,
    ) -> None:
        """A timeline row for now: the current cores, or the peak of the day just evaluated."""
        status = self.control_plane.status()
        now = self.clock.now()
        if peak is None:
            quota = status.license.max_dp_cores if status.HasField("license") else 0
            cores, cores_are = status.current_total_cores, "now"
        else:
            cores, quota, cores_are = peak.peak_cores, peak.max_dp_cores, "peak"
        self.timeline.append(
            TimelineRow(
                day=int((now - DAY_0) // DAY),
                time=now,
                cores=cores,
                quota=quota,
                cores_are=cores_are,
                state=state_name(status.state),
                create_route=self.verdict(),
                event=event,
                other_checks=other_checks or {},
            )
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
        self.line(event, peak=judged)

    def run(self, vendor: Vendor) -> list[TimelineRow]:
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
                self.line(
                    "every kind of operation asked about",
                    other_checks={
                        "read route": self.verdict("route", Operation.READ),
                        "delete route": self.verdict("route", Operation.DELETE),
                        "upload license": self.verdict("license", Operation.CREATE),
                    },
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
            # the simulation speaks gRPC only
            "--http-listen",
            "",
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
    parser.add_argument(
        "--json", action="store_true", help="print the timeline as a JSON list of rows"
    )
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
        if args.json:
            print(json.dumps([row.as_json() for row in simulation.run(vendor)], indent=2))
            return 0
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
        for row in simulation.run(vendor):
            print("\n".join(row.lines()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
