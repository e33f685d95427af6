"""The service's behaviour, wired from the domain rules and the store; no gRPC here.

Hot paths read memory only: `check_write` reads an immutable `Enforcement`
snapshot that is replaced whenever the license or the runtime state changes,
and `report_usage` touches the in-memory tracker, then waits for the group
commit that makes its rows durable.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum
from typing import Any, NoReturn, Protocol
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from licensing_server.deployment import load_deployment
from licensing_server.domain.clock import CLOCK_STEP_TOLERANCE, SECONDS_PER_DAY, Clock, ServiceTime
from licensing_server.domain.decision import (
    MAX_RESOURCE_TYPE_CHARS,
    Decision,
    Enforcement,
    Operation,
    StatusWarning,
    WarningKind,
    check_request,
    days_left,
)
from licensing_server.domain.license import (
    Deployment,
    License,
    LicenseRejected,
    RejectionReason,
    check_applicable,
    iso_time,
    verify_license,
    verify_signed,
)
from licensing_server.domain.runtime import (
    OBSERVED_SHARE,
    Calendar,
    DayWindow,
    Judgement,
    RuntimeState,
    Standing,
    grace_end_after_moment,
    is_observed,
    judge,
    observed_seconds,
)
from licensing_server.domain.usage import (
    DayPeak,
    IntervalRow,
    check_day,
    check_report,
    peak_between,
)
from licensing_server.metering import UsageMeter
from licensing_server.storage import (
    DayOutcome,
    SharedState,
    StaleState,
    StandingRow,
    StateChangeRow,
    Storage,
    StoreError,
    UsageTicket,
)

log = logging.getLogger("licensing")

# GetStatus's answer (and its current totals) may be this old while nothing else changes,
# so a status call never scans the fleet.
STATUS_MAX_AGE = 1.0
# Peak instances in a usage history, so the answer stays well under the 4 MiB message limit
# even with 128-character instance IDs; `peak_instances` pages through a day's whole list.
PEAK_INSTANCES_PER_DAY = 1_000
PEAK_INSTANCES_PER_HISTORY = 10_000
# Writes refused because another replica changed the shared state first, in a row, before a
# call gives up: each one means another replica made progress, so a few are plenty.
STALE_RETRIES = 20


class LicenseSource(StrEnum):
    UPLOAD = "upload"
    FILE = "file"


@dataclass(frozen=True)
class ServiceSettings:
    trusted_keys: Mapping[str, Ed25519PublicKey]
    deployment_id: str | None = None
    # pinned together with the ID: the date a trial's 90 days run from
    deployment_time: float | None = None
    timezone: str = "UTC"
    instance_ttl: float = 30.0
    expiry_warning_days: int = 30
    report_interval: float = 10.0
    development_mode: bool = False
    # raw usage intervals are kept this long after their day was evaluated
    usage_retention_days: int = 35
    # a day is observed when the service ran for at least this share of it
    observed_share: float = OBSERVED_SHARE


@dataclass(frozen=True)
class InForce:
    """A verified license with where it came from and when it was applied (or received)."""

    license: License
    source: LicenseSource
    applied_at: float

    def row(self) -> dict[str, Any]:
        lic = self.license
        return {
            "serial_number": lic.serial_number,
            "customer": lic.customer,
            "key_id": lic.key_id,
            "token": lic.token,
            "token_sha256": token_sha256(lic.token),
            "source": self.source.value,
            "received_at": self.applied_at,
            "effective_at": lic.effective_at,
            "expires_at": lic.expires_at,
            "max_dp_cores": lic.max_dp_cores,
        }


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class DayRecord:
    day: str
    peak_cores: int
    max_dp_cores: int | None
    state_before: RuntimeState
    state_after: RuntimeState
    evaluated_at: float
    peak_at: float | None
    peak_instances: tuple[tuple[str, int], ...]
    license_serial_number: str
    grace_ends_at: float | None
    # the instants the day covered, [starts_at, ends_at); None for days judged before they
    # were stored (their window is the calendar day of their label)
    starts_at: float | None = None
    ends_at: float | None = None
    observed_seconds: float | None = None
    observed: bool = True
    # peak_instances holds only the first of them (a usage history's bound)
    peak_instances_truncated: bool = False

    @staticmethod
    def from_row(row: Mapping[str, Any]) -> DayRecord:
        return DayRecord(
            day=row["day"],
            peak_cores=row["peak_cores"],
            max_dp_cores=row["max_dp_cores"],
            state_before=RuntimeState(row["state_before"]),
            state_after=RuntimeState(row["state_after"]),
            evaluated_at=row["evaluated_at"],
            peak_at=row["peak_at"],
            peak_instances=tuple((i, c) for i, c in row["peak_instances"]),
            license_serial_number=row["license_serial_number"] or "",
            grace_ends_at=row["grace_ends_at"],
            starts_at=row["starts_at"],
            ends_at=row["ends_at"],
            observed_seconds=row["observed_seconds"],
            observed=bool(row["observed"]),
        )

    def row(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "peak_cores": self.peak_cores,
            "peak_at": self.peak_at,
            "peak_instances": [list(i) for i in self.peak_instances],
            "max_dp_cores": self.max_dp_cores,
            "license_serial_number": self.license_serial_number,
            "state_before": self.state_before.value,
            "state_after": self.state_after.value,
            "grace_ends_at": self.grace_ends_at,
            "evaluated_at": self.evaluated_at,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "observed_seconds": self.observed_seconds,
            "observed": int(self.observed),
        }

    def window(self, calendar: Calendar) -> DayWindow:
        day = date.fromisoformat(self.day)
        if self.starts_at is None or self.ends_at is None:
            return DayWindow(day, calendar.start_of(day), calendar.end_of(day))
        return DayWindow(day, self.starts_at, self.ends_at)


@dataclass(frozen=True)
class StateChange:
    changed_at: float
    state_before: RuntimeState
    state_after: RuntimeState
    grace_ends_at: float | None
    cause: str

    @staticmethod
    def from_row(row: StateChangeRow) -> StateChange:
        return StateChange(
            row.changed_at,
            RuntimeState(row.state_before),
            RuntimeState(row.state_after),
            row.grace_ends_at,
            row.cause,
        )

    def row(self) -> StateChangeRow:
        return StateChangeRow(
            self.changed_at,
            self.state_before.value,
            self.state_after.value,
            self.grace_ends_at,
            self.cause,
        )


@dataclass(frozen=True)
class UploadOutcome:
    license: License
    pending: bool
    unchanged: bool
    standing: Standing


@dataclass(frozen=True)
class Validation:
    valid: bool
    reason: RejectionReason | None
    message: str
    license: License | None = None
    ends_at: float | None = None
    pending: bool = False
    already_active: bool = False
    resulting: Standing | None = None
    last_evaluated_day: str = ""
    last_evaluated_peak_cores: int = 0
    core_headroom: int = 0
    features_gained: tuple[str, ...] = ()
    features_lost: tuple[str, ...] = ()
    days_until_expiration: int = 0


@dataclass(frozen=True)
class ClockReading:
    system_time: float
    high_water_at: float
    moved_back: bool
    last_backward_step: float
    last_backward_step_at: float | None


@dataclass(frozen=True)
class LicenseFileReport:
    """The license file's last poll, filled in by the watcher."""

    path: str
    last_read_at: float | None = None
    content_sha256: str = ""
    last_error: str = ""
    last_error_reason: str = ""
    last_applied_at: float | None = None
    # distinct failed reloads (each new bad content or read error), for metrics
    reload_errors: int = 0


@dataclass(frozen=True)
class Status:
    deployment: Deployment
    active: InForce | None
    license_ends_at: float | None
    pending: InForce | None
    standing: Standing
    days_until_expiration: int
    warnings: tuple[StatusWarning, ...]
    current_total_cores: int
    live_instances: int
    last_evaluation: DayRecord | None
    clock: ClockReading
    license_file: LicenseFileReport | None
    development_mode: bool
    last_state_change: StateChange | None
    now: float


@dataclass(frozen=True)
class ReportOutcome:
    state: RuntimeState
    received_at: float
    next_report_in: float


@dataclass(frozen=True)
class RecordedReport:
    """A report stamped and queued whose rows wait for a commit (`ticket.done`)."""

    outcome: ReportOutcome
    ticket: UsageTicket[Any]


@dataclass(frozen=True)
class UsageHistory:
    days: list[DayRecord]
    state_changes: list[StateChange]
    max_dp_cores: int | None


@dataclass(frozen=True)
class PeakInstancesPage:
    """Some of the instances that made up one day's peak, and how many there are in all."""

    instances: list[tuple[str, int]]
    total: int


@dataclass
class _ClockWatch:
    moved_back: bool = False
    behind: bool = False
    last_step: float = 0.0
    last_step_at: float | None = None
    persisted_high_water: float = 0.0


class EnforcementListener(Protocol):
    """Told of every new decision snapshot and of time moving on (WatchEnforcement's feed).

    Called with the service's lock held, from the thread that made the change:
    it must not block.
    """

    def enforcement_replaced(self, enforcement: Enforcement, now: float) -> None: ...

    def time_passed(self, now: float) -> None: ...


@dataclass(frozen=True)
class _Plan:
    """What applying a verified license would do now: the one answer Upload and Validate share."""

    pending: bool
    unchanged: bool
    resulting: Standing


class LicensingService:
    def __init__(self, store: Storage, clock: Clock, settings: ServiceSettings) -> None:
        self._store = store
        self._settings = settings
        self._calendar = Calendar(ZoneInfo(settings.timezone))
        # license and runtime-state changes and evaluations happen one at a time
        self._lock = threading.RLock()
        self._clock_watch = _ClockWatch()
        # GetStatus answers are reused until something they show changes (or a second passes)
        self._status_version = 0
        self._status_cache: tuple[tuple[int, int, bool], Status] | None = None
        self._license_file: LicenseFileReport | None = None
        # days evaluated since start, for metrics
        self.evaluations_total = 0

        wall = clock.now()
        self.deployment = load_deployment(
            store, settings.deployment_id, settings.deployment_time, wall
        )
        shared = store.shared_state()
        self._time = ServiceTime(clock, shared.high_water_at)
        self._clock_watch.persisted_high_water = shared.high_water_at
        self._meter = UsageMeter(store, settings.instance_ttl)
        self._listeners: list[EnforcementListener] = []
        self._take_shared(shared)
        self.now()

    # --- the shared state in memory ----------------------------------------------------

    def _take_shared(self, shared: SharedState) -> None:
        """Make memory what the store holds: licenses, standing, last day, last change."""
        self._revision = shared.revision
        self._standing = Standing(
            RuntimeState(shared.standing.runtime_state), shared.standing.grace_ends_at
        )
        evaluation = shared.last_evaluation
        self._last_evaluation = DayRecord.from_row(evaluation) if evaluation else None
        change = shared.last_state_change
        self._last_state_change = StateChange.from_row(change) if change else None
        self._active = self._load_license("active", shared.active)
        self._pending = self._load_license("pending", shared.pending)
        # watchers learn of a change another replica made as of one made here
        self._replace_enforcement(self.now())

    def reload(self) -> None:
        """Read the shared state afresh: another replica changed it."""
        with self._lock:
            shared = self._store.shared_state()
            if shared.revision == self._revision:
                return
            self._take_shared(shared)
            # the latest time any replica has seen
            self._time.raise_to(shared.high_water_at)
        log.info("shared state reloaded at revision %d", shared.revision)

    def sync(self) -> None:
        """Follow the other replicas: their changes to the shared state, the fleet's usage."""
        if self._store.revision() != self._revision:
            self.reload()
        self._store.refresh_live_usage(self.now())

    def _load_license(self, status: str, row: Mapping[str, Any] | None) -> InForce | None:
        if row is None:
            return None
        try:
            lic = verify_signed(row["token"], self._settings.trusted_keys)
            if status == "pending":
                # stored before a rule refused it (a trial that can never be in force, say):
                # it must not take over
                check_applicable(lic, self.deployment, lic.effective_at)
        except LicenseRejected as rejection:
            log.error(
                "the %s license %s no longer verifies (%s: %s); it is not in force",
                status,
                row["serial_number"],
                rejection.reason.value,
                rejection.message,
            )
            return None
        applied_at = row["activated_at"] if status == "active" else row["received_at"]
        return InForce(lic, LicenseSource(row["source"]), applied_at)

    @property
    def license_file(self) -> LicenseFileReport | None:
        return self._license_file

    @license_file.setter
    def license_file(self, report: LicenseFileReport | None) -> None:
        self._license_file = report
        self._status_version += 1

    # --- time ------------------------------------------------------------------------

    def now(self) -> float:
        """Service time: the wall clock, never behind the latest time seen (see ServiceTime)."""
        now = self._time.now()
        wall = self._time.last_wall
        watch = self._clock_watch
        if wall < now - CLOCK_STEP_TOLERANCE:
            if not watch.behind:
                self._note_clock_back(wall, now)
        elif watch.behind:
            watch.behind = False
            self._status_version += 1
            log.warning("the system clock has caught up with the service's time")
        return now

    def _note_clock_back(self, wall: float, now: float) -> None:
        watch = self._clock_watch
        watch.moved_back = True
        watch.behind = True
        watch.last_step = now - wall
        watch.last_step_at = wall
        self._status_version += 1
        log.warning(
            "the system clock moved back %.1f s (to %s; latest time seen %s): expiry and grace "
            "are judged against the latest time seen, which moves on with the monotonic clock",
            now - wall,
            iso_time(wall),
            iso_time(now),
        )

    def _save_time(self, now: float) -> None:
        """Persist the latest time seen and the spans the service ran (for observed days)."""
        spans = [*self._time.take_closed_spans(), (self._time.span_started_at, now)]
        # the latest time any replica has seen
        self._time.raise_to(self._store.save_time(now, spans))
        self._clock_watch.persisted_high_water = now

    def close(self) -> None:
        """Record how long this run watched, so the days it covered count as observed."""
        with self._lock:
            self._save_time(self.now())

    def seconds_until_due(self) -> float:
        """How long until time next brings a change: a midnight, a pending license's takeover,
        or an instant at which the decision changes by itself (watchers are told of it)."""
        now = self.now()
        with self._lock:
            due = min(
                self._next_window().ends_at,
                self._next_takeover_at(),
                self._enforcement.next_change_after(now),
            )
        return max(0.0, due - self.now())

    # --- the snapshot the hot path reads -----------------------------------------------

    def _build_enforcement(self) -> Enforcement:
        days = self._settings.expiry_warning_days
        active = self._active
        lic = active.license if active else None
        successor = None
        if self._pending is not None:
            # from its effective time the pending license answers, until the evaluator applies it
            incoming = self._pending.license
            after = self._reevaluated(incoming, incoming.effective_at)
            successor = (
                incoming.effective_at,
                Enforcement(incoming, incoming.ends_at(self.deployment), after, days),
            )
        return Enforcement(
            lic, lic.ends_at(self.deployment) if lic else None, self._standing, days, successor
        )

    def watch_enforcement(self, listener: EnforcementListener) -> None:
        """Tell `listener` of the snapshot in force now, and of every one after it."""
        with self._lock:
            self._listeners.append(listener)
            listener.enforcement_replaced(self._enforcement, self.now())

    def _replace_enforcement(self, at: float) -> None:
        """The one place the snapshot is replaced once the service runs; `at` is the moment
        of the change (a midnight or a takeover replayed after downtime lies in the past)."""
        self._enforcement = enforcement = self._build_enforcement()
        self._status_version += 1
        for listener in self._listeners:
            listener.enforcement_replaced(enforcement, at)

    def _next_takeover_at(self) -> float:
        return self._pending.license.effective_at if self._pending else float("inf")

    # --- licenses --------------------------------------------------------------------

    def upload(self, text: str, source: LicenseSource = LicenseSource.UPLOAD) -> UploadOutcome:
        """Verify and apply a license. Raises LicenseRejected; a rejection changes nothing."""
        for _ in range(STALE_RETRIES):
            try:
                return self._upload(text, source)
            except StaleState:
                self.reload()  # another replica changed the licenses or the state: decide again
        raise StoreError("the shared state kept changing under this upload; try again")

    def _upload(self, text: str, source: LicenseSource) -> UploadOutcome:
        with self._lock:
            now = self.now()
            self._catch_up(now)
            lic = verify_license(text, self._settings.trusted_keys, self.deployment, now)
            plan = self._plan(lic, now)
            if plan.unchanged:
                return UploadOutcome(lic, plan.pending, True, self._standing)
            incoming = InForce(lic, source, now)
            if plan.pending:
                self._revision = self._store.add_pending_license(
                    incoming.row(), now, now, expected_revision=self._revision
                )
                self._pending = incoming
                self._replace_enforcement(now)
                log.info(
                    "license %s (%s) accepted as pending from %s: it takes over %s",
                    lic.serial_number,
                    lic.customer,
                    source.value,
                    iso_time(lic.effective_at),
                )
                return UploadOutcome(lic, True, False, self._standing)
            self._activate(
                incoming, now, f"license {lic.serial_number} applied from {source.value}"
            )
            return UploadOutcome(lic, False, False, self._standing)

    def _plan(self, lic: License, now: float) -> _Plan:
        active = self._active.license if self._active else None
        pending = self._pending.license if self._pending else None
        # the same license, however it was encoded, is compared by its decoded content
        if active is not None and active.fingerprint == lic.fingerprint:
            return _Plan(pending=False, unchanged=True, resulting=self._standing)
        if pending is not None and pending.fingerprint == lic.fingerprint:
            return _Plan(True, True, self._reevaluated(lic, lic.effective_at))
        if lic.is_pending(now):
            return _Plan(True, False, self._reevaluated(lic, lic.effective_at))
        return _Plan(False, False, self._reevaluated(lic, now))

    def _activate(
        self, incoming: InForce, at: float, cause: str, *, was_pending: bool = False
    ) -> None:
        lic = incoming.license
        after = self._reevaluated(lic, at)
        change = self._change(after, at, cause)
        self._revision = self._store.activate_license(
            incoming.row(),
            at,
            _standing_row(after),
            change.row() if change else None,
            self.now(),
            was_pending=was_pending,
            expected_revision=self._revision,
        )
        # memory changes only once the store has it: a failed write leaves all as it was
        previous = self._active
        self._active = replace(incoming, applied_at=at)
        if was_pending:
            self._pending = None
        log.info(
            "license %s in force (%s, %d cores, features %s, ends %s; was %s): %s",
            lic.serial_number,
            lic.customer,
            lic.max_dp_cores,
            ",".join(lic.features) or "none",
            iso_time(lic.ends_at(self.deployment)),
            previous.license.serial_number if previous else "none",
            cause,
        )
        self._set_standing(after, change, at)

    def _reevaluated(self, lic: License, at: float) -> Standing:
        """The last evaluated day's peak judged against `lic`, the change standing for midnight."""
        last = self._last_evaluation
        if last is None:
            return self._standing
        return judge(
            self._standing,
            Judgement(
                last.peak_cores,
                lic.max_dp_cores,
                at,
                grace_end_after_moment(at),
                observed=last.observed,
                at_midnight=False,
            ),
        )

    def _change(self, after: Standing, at: float, cause: str) -> StateChange | None:
        before = self._standing
        if (after.state, after.grace_ends_at) == (before.state, before.grace_ends_at):
            return None
        return StateChange(at, before.state, after.state, after.grace_ends_at, cause)

    def _set_standing(self, after: Standing, change: StateChange | None, at: float) -> None:
        if change is not None:
            log.warning(
                "runtime state %s -> %s%s: %s",
                change.state_before.value,
                change.state_after.value,
                f" (grace ends {iso_time(change.grace_ends_at)})" if change.grace_ends_at else "",
                change.cause,
            )
            self._last_state_change = change
        self._standing = after
        self._replace_enforcement(at)

    def _take_over(self, at: float) -> None:
        pending = self._pending
        assert pending is not None
        # it stays pending until the store has it, so a failed write is retried at the next tick
        self._activate(
            pending,
            at,
            f"pending license {pending.license.serial_number} took over at its effective time",
            was_pending=True,
        )

    def validate(self, text: str) -> Validation:
        """Every check Upload runs, and what applying the license would do; changes nothing."""
        now = self.now()
        try:
            lic = verify_signed(text, self._settings.trusted_keys)
        except LicenseRejected as rejection:
            return Validation(False, rejection.reason, rejection.message)
        ends_at = lic.ends_at(self.deployment)
        try:
            check_applicable(lic, self.deployment, now)
        except LicenseRejected as rejection:
            return Validation(False, rejection.reason, rejection.message, lic, ends_at)
        with self._lock:
            active = self._active.license if self._active else None
            last = self._last_evaluation
            plan = self._plan(lic, now)
        current = set(active.features) if active else set()
        last_peak = last.peak_cores if last else 0
        message = (
            f"valid: license {lic.serial_number} for {lic.customer}, {lic.max_dp_cores} cores, "
            f"ends {iso_time(ends_at)}"
        )
        if plan.pending:
            message += f"; it would wait and take over {iso_time(lic.effective_at)}"
        return Validation(
            valid=True,
            reason=None,
            message=message,
            license=lic,
            ends_at=ends_at,
            pending=plan.pending,
            already_active=plan.unchanged and not plan.pending,
            resulting=plan.resulting,
            last_evaluated_day=last.day if last else "",
            last_evaluated_peak_cores=last_peak,
            core_headroom=lic.max_dp_cores - last_peak,
            features_gained=tuple(f for f in lic.features if f not in current),
            features_lost=tuple(sorted(current - set(lic.features))),
            days_until_expiration=days_left(ends_at, now),
        )

    # --- usage -----------------------------------------------------------------------

    def report_usage(self, instance_id: str, cores: int, stopping: bool) -> ReportOutcome:
        """Record a gateway's cores; returns once the report is durable.

        Raises UsageRejected for a bad report and StoreError when it could not be
        stored; either way nothing changed.
        """
        recorded = self.record_usage(instance_id, cores, stopping)
        self._meter.commit(recorded.ticket)
        return recorded.outcome

    def record_usage(self, instance_id: str, cores: int, stopping: bool) -> RecordedReport:
        """The first half of `report_usage`, without waiting on the database: the report is
        stamped and queued, and durable once `commit_usage` (or a concurrent commit) has
        stored its ticket. Raises UsageRejected for a bad report."""
        check_report(instance_id, cores, stopping)
        received_at, ticket = self._meter.record(instance_id, cores, stopping, self.now)
        jitter = 1.0 + random.uniform(-0.1, 0.1)
        outcome = ReportOutcome(
            self._enforcement.at(received_at).standing.state,
            received_at,
            self._settings.report_interval * jitter,
        )
        return RecordedReport(outcome, ticket)

    def commit_usage(self) -> None:
        """Store every recorded report now, in one transaction; blocks on the database."""
        self._meter.flush()

    def usage_refused(self, recorded: RecordedReport) -> NoReturn:
        """A recorded report whose commit failed: the storage puts memory back as stored, and
        the report is refused with StoreError. Blocks on the database."""
        self._meter.commit(recorded.ticket)
        raise StoreError("usage could not be stored")

    # --- decisions and status -------------------------------------------------------

    def check_write(self, resource_type: str, operation: Operation, feature: str) -> Decision:
        """The decision table, from memory. Raises InvalidWriteCheck for a bad request."""
        check_request(resource_type, feature)
        decision = self._enforcement.decide(resource_type, operation, feature, self.now())
        if not decision.allowed:
            # repr keeps a caller's newlines from splitting the log line
            log.info(
                "write denied: %s %r%s: %s",
                operation.name.lower(),
                resource_type,
                f" (feature {feature[:MAX_RESOURCE_TYPE_CHARS]!r})" if feature else "",
                decision.reason.value,
            )
        return decision

    def status(self) -> Status:
        """Everything GetStatus shows; reused for up to a second while nothing changes."""
        now = self.now()
        # the meter's version moves when an instance starts or stops counting
        due = now >= self._enforcement.successor_at
        versions = (self._status_version, self._meter.version, due)
        cached = self._status_cache
        if (
            cached is not None
            and cached[0] == versions
            and 0 <= now - cached[1].now < STATUS_MAX_AGE
        ):
            return cached[1]
        status = self._build_status(now)
        self._status_cache = (versions, status)
        return status

    def _build_status(self, now: float) -> Status:
        enforcement = self._enforcement.at(now)
        active, pending = self._active, self._pending
        if pending is not None and now >= pending.license.effective_at:
            # due: the evaluator is applying it this moment, and the answer already shows it
            active, pending = replace(pending, applied_at=pending.license.effective_at), None
        ends_at = enforcement.license_ends_at if enforcement.license is not None else None
        total, count = self._meter.current_total(now)
        warnings = list(enforcement.warnings(now))
        if enforcement.license is None:
            warnings.append(
                StatusWarning(
                    WarningKind.NO_LICENSE,
                    f"no license is installed: creating and updating configuration is blocked. "
                    f"Send deployment ID {self.deployment.deployment_id} to the vendor for one",
                )
            )
        watch = self._clock_watch
        if watch.moved_back:
            warnings.append(
                StatusWarning(
                    WarningKind.CLOCK_MOVED_BACK,
                    f"the system clock moved back {watch.last_step:.0f} s; expiry and grace are "
                    f"judged against the latest time seen, {iso_time(now)}",
                )
            )
        if self._settings.development_mode:
            warnings.append(
                StatusWarning(
                    WarningKind.DEVELOPMENT_MODE,
                    "DEVELOPMENT MODE: this server trusts a local development signing key; "
                    "anyone with that key can mint licenses. Never run it like this in production",
                )
            )
        file_report = self.license_file
        if file_report is not None and file_report.last_error:
            warnings.append(
                StatusWarning(
                    WarningKind.LICENSE_FILE_ERROR,
                    f"license file {file_report.path}: {file_report.last_error}",
                )
            )
        return Status(
            deployment=self.deployment,
            active=active,
            license_ends_at=ends_at,
            pending=pending,
            standing=enforcement.standing,
            days_until_expiration=days_left(ends_at, now) if ends_at is not None else 0,
            warnings=tuple(warnings),
            current_total_cores=total,
            live_instances=count,
            last_evaluation=self._last_evaluation,
            clock=ClockReading(
                self._time.last_wall,
                now,
                watch.moved_back,
                watch.last_step,
                watch.last_step_at,
            ),
            license_file=file_report,
            development_mode=self._settings.development_mode,
            last_state_change=self._last_state_change,
            now=now,
        )

    def usage_history(
        self, days: int, *, with_instances: bool = False, day: str | None = None
    ) -> UsageHistory:
        rows = self._store.day_evaluations(days, with_instances=with_instances, day=day)
        records = [DayRecord.from_row(r) for r in rows]
        if with_instances:
            records = _bounded_peak_instances(records)
        changes = [StateChange.from_row(r) for r in self._store.state_changes(100)]
        active = self._active
        return UsageHistory(records, changes, active.license.max_dp_cores if active else None)

    def peak_instances(self, day: str, offset: int, limit: int) -> PeakInstancesPage | None:
        """`limit` of the instances that made up `day`'s peak from `offset`; None if not evaluated.

        Raises Refused when `day` is not a date.
        """
        check_day(day)
        instances = self._store.peak_instances(day)
        if instances is None:
            return None
        return PeakInstancesPage(instances[offset : offset + limit], len(instances))

    # --- the evaluator's work ----------------------------------------------------------

    def tick(self) -> None:
        """Everything time brings: pending takeovers, midnight evaluations, expiring instances.

        Called by the evaluator thread every few seconds (and at the moment a change
        is due) and once at start-up, so days missed while the service was down are
        evaluated in order.
        """
        now = self.now()
        with self._lock:
            self._catch_up(now)
            for listener in self._listeners:
                listener.time_passed(now)
            if now - self._clock_watch.persisted_high_water >= 1.0 or self._time.closed_spans:
                self._save_time(now)
        self._meter.expire(now)

    def _catch_up(self, now: float) -> None:
        """Evaluate every completed day and take over every due pending license, in time order.

        Another replica may do some of it first: its write refuses ours (StaleState), and
        the loop goes on from the state it left.
        """
        stale = 0
        while True:
            window = self._next_window()
            takeover_at = self._next_takeover_at()
            if min(window.ends_at, takeover_at) > now:
                return
            try:
                if takeover_at <= window.ends_at:
                    self._take_over(takeover_at)
                else:
                    self._evaluate(window, now)
                stale = 0
            except StaleState as error:
                stale += 1
                if stale >= STALE_RETRIES:
                    message = "the shared state kept changing under this evaluation"
                    raise StoreError(message) from error
                self.reload()

    def _next_window(self) -> DayWindow:
        last = self._last_evaluation
        if last is None:
            return self._calendar.first_window(self.deployment.deployment_time)
        return self._calendar.window_after(last.window(self._calendar))

    def _evaluate(self, window: DayWindow, now: float) -> None:
        start, midnight = window.starts_at, window.ends_at
        # how long the service watched the day, this run included
        self._save_time(now)
        active = self._active
        before = self._standing
        max_cores = active.license.max_dp_cores if active else None
        judged: list[_DayJudged] = []

        def judge_day(intervals: list[IntervalRow], spans: list[tuple[float, float]]) -> DayOutcome:
            # inside the transaction that stores the day: the rules only, no I/O
            peak = peak_between(intervals, start, midnight, self._meter.ttl)
            ran = observed_seconds(spans, start, midnight)
            observed = is_observed(ran, start, midnight, self._settings.observed_share)
            if max_cores is None:
                after = before  # no quota to judge against
            else:
                after = judge(
                    before,
                    Judgement(
                        peak.peak_cores,
                        max_cores,
                        midnight,
                        self._calendar.grace_end_after_midnight(midnight),
                        observed=observed,
                    ),
                )
            cause = _evaluation_cause(window, peak, max_cores, observed)
            change = self._change(after, midnight, cause)
            record = DayRecord(
                day=window.day.isoformat(),
                peak_cores=peak.peak_cores,
                max_dp_cores=max_cores,
                state_before=before.state,
                state_after=after.state,
                evaluated_at=now,
                peak_at=peak.peak_at,
                peak_instances=peak.instances,
                license_serial_number=active.license.serial_number if active else "",
                grace_ends_at=after.grace_ends_at,
                starts_at=start,
                ends_at=midnight,
                observed_seconds=ran,
                observed=observed,
            )
            judged.append(_DayJudged(record, after, change))
            return DayOutcome(record.row(), _standing_row(after), change.row() if change else None)

        _, self._revision = self._meter.evaluate_day(
            start, midnight, judge_day, now, expected_revision=self._revision
        )
        # the judgement the stored transaction made (a retried transaction judges again)
        record, after, change = judged[-1].record, judged[-1].after, judged[-1].change
        self._last_evaluation = record
        self.evaluations_total += 1
        log.info(
            "evaluated %s: peak %d cores, quota %s, %s (ran %.0f of %.0f s), %s -> %s",
            record.day,
            record.peak_cores,
            max_cores if max_cores is not None else "none (no license)",
            "observed" if record.observed else "not observed",
            record.observed_seconds or 0.0,
            midnight - start,
            before.state.value,
            after.state.value,
        )
        self._set_standing(after, change, midnight)
        retention = self._settings.usage_retention_days * SECONDS_PER_DAY
        self._store.prune_usage(start - retention, self._meter.ttl)


@dataclass(frozen=True)
class _DayJudged:
    record: DayRecord
    after: Standing
    change: StateChange | None


def _standing_row(standing: Standing) -> StandingRow:
    return StandingRow(standing.state.value, standing.episode_grace_ends_at)


def _bounded_peak_instances(records: list[DayRecord]) -> list[DayRecord]:
    """Each day's first PEAK_INSTANCES_PER_DAY, PEAK_INSTANCES_PER_HISTORY in all, newest first."""
    left = PEAK_INSTANCES_PER_HISTORY
    bounded = []
    for record in records:
        keep = min(len(record.peak_instances), PEAK_INSTANCES_PER_DAY, left)
        left -= keep
        if keep < len(record.peak_instances):
            record = replace(
                record,
                peak_instances=record.peak_instances[:keep],
                peak_instances_truncated=True,
            )
        bounded.append(record)
    return bounded


def _evaluation_cause(
    window: DayWindow, peak: DayPeak, max_cores: int | None, observed: bool
) -> str:
    quota = f"{max_cores} licensed" if max_cores is not None else "no license"
    watched = "" if observed else " (not observed: the service ran for less of the day)"
    return f"evaluation of {window.day.isoformat()}: peak {peak.peak_cores} cores, {quota}{watched}"
