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
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from server.domain.clock import SECONDS_PER_DAY, Clock
from server.domain.decision import (
    MAX_RESOURCE_TYPE_CHARS,
    Decision,
    Enforcement,
    Operation,
    StatusWarning,
    WarningKind,
    check_request,
    days_left,
)
from server.domain.license import (
    Deployment,
    License,
    LicenseRejected,
    RejectionReason,
    check_applicable,
    iso_time,
    verify_license,
    verify_signed,
)
from server.domain.refusal import Refused
from server.domain.runtime import (
    Calendar,
    RuntimeState,
    Standing,
    grace_end_after_moment,
    judge,
)
from server.domain.usage import DayPeak, UsageInterval, UsageTracker, check_report, peak_between
from server.store import StateChangeRow, Store

log = logging.getLogger("licensing")

# Differences smaller than this between threads reading the clock are not a clock step.
CLOCK_BACK_TOLERANCE = 1.0
# GetStatus's answer (and its current totals) may be this old while nothing else changes,
# so a status call never scans the fleet.
STATUS_MAX_AGE = 1.0
# Peak instances in a usage history, so the answer stays well under the 4 MiB message limit
# even with 128-character instance IDs; `peak_instances` pages through a day's whole list.
PEAK_INSTANCES_PER_DAY = 1_000
PEAK_INSTANCES_PER_HISTORY = 10_000


class ConfigurationError(Exception):
    pass


class LicenseSource(StrEnum):
    UPLOAD = "upload"
    FILE = "file"


@dataclass(frozen=True)
class ServiceSettings:
    trusted_keys: Mapping[str, Ed25519PublicKey]
    deployment_id: str | None = None
    timezone: str = "UTC"
    instance_ttl: float = 30.0
    expiry_warning_days: int = 30
    report_interval: float = 10.0
    development_mode: bool = False
    # raw usage intervals are kept this long after their day was evaluated
    usage_retention_days: int = 35


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
        }


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
class UsageHistory:
    days: list[DayRecord]
    state_changes: list[StateChange]
    max_dp_cores: int | None


@dataclass(frozen=True)
class PeakInstancesPage:
    """Some of the instances that made up one day's peak, and how many there are in all."""

    instances: list[tuple[str, int]]
    total: int


class InvalidDay(Refused):
    pass


@dataclass
class _ClockWatch:
    moved_back: bool = False
    behind: bool = False
    last_step: float = 0.0
    last_step_at: float | None = None
    persisted_high_water: float = 0.0


class LicensingService:
    def __init__(self, store: Store, clock: Clock, settings: ServiceSettings) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._calendar = Calendar(ZoneInfo(settings.timezone))
        # license and runtime-state changes and evaluations happen one at a time
        self._lock = threading.RLock()
        self._usage_lock = threading.Lock()
        self._clock_watch = _ClockWatch()
        # GetStatus answers are reused until something they show changes (or a second passes)
        self._status_version = 0
        self._status_cache: tuple[tuple[int, int], Status] | None = None
        self._license_file: LicenseFileReport | None = None
        # days evaluated since start, for metrics
        self.evaluations_total = 0

        wall = clock.now()
        self.deployment = self._load_deployment(wall)
        state = store.service_state()
        self._high_water = max(wall, state["high_water_at"] or 0.0)
        self._clock_watch.persisted_high_water = state["high_water_at"] or 0.0
        if wall < self._clock_watch.persisted_high_water - CLOCK_BACK_TOLERANCE:
            self._note_clock_back(wall, self._clock_watch.persisted_high_water)
        self._standing = Standing(RuntimeState(state["runtime_state"]), state["grace_ends_at"])
        evaluations = store.day_evaluations(1, with_instances=False)
        self._last_evaluation = DayRecord.from_row(evaluations[0]) if evaluations else None
        changes = store.state_changes(1)
        self._last_state_change = StateChange.from_row(changes[0]) if changes else None
        self._active = self._load_license("active")
        self._pending = self._load_license("pending")
        self._tracker = UsageTracker(
            settings.instance_ttl,
            (UsageInterval(*row) for row in store.live_intervals()),
            next_id=store.next_interval_id(),
        )
        self._enforcement = self._build_enforcement()

    # --- start-up --------------------------------------------------------------------

    def _load_deployment(self, now: float) -> Deployment:
        row = self._store.deployment()
        pinned = self._settings.deployment_id
        if row is None:
            deployment_id = pinned or str(uuid.uuid4())
            self._store.create_deployment(deployment_id, now, RuntimeState.NORMAL.value)
            log.info(
                "deployment created: id %s, deployment date %s%s",
                deployment_id,
                iso_time(now),
                " (pinned in configuration)" if pinned else "",
            )
            return Deployment(deployment_id, now)
        if pinned and pinned != row["deployment_id"]:
            raise ConfigurationError(
                f"the data directory belongs to deployment {row['deployment_id']!r}, but the "
                f"configuration pins deployment {pinned!r}; use the right data directory or "
                "remove the pin"
            )
        return Deployment(row["deployment_id"], row["deployment_time"])

    def _load_license(self, status: str) -> InForce | None:
        rows = self._store.licenses_with_status(status)
        if not rows:
            return None
        row = rows[-1]
        try:
            lic = verify_signed(row["token"], self._settings.trusted_keys)
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
        """The wall clock, never earlier than the latest time seen (the high-water mark)."""
        wall = self._clock.now()
        high = self._high_water
        if wall >= high:
            self._high_water = wall
            if self._clock_watch.behind:
                self._clock_watch.behind = False
                self._status_version += 1
                log.warning("the system clock has caught up with the latest time seen")
            return wall
        if high - wall > CLOCK_BACK_TOLERANCE:
            self._note_clock_back(wall, high)
        return high

    def _note_clock_back(self, wall: float, high: float) -> None:
        watch = self._clock_watch
        watch.moved_back = True
        if not watch.behind:
            watch.behind = True
            self._status_version += 1
            watch.last_step = high - wall
            watch.last_step_at = wall
            log.warning(
                "the system clock moved back %.1f s (to %s; latest time seen %s): expiry and "
                "grace are judged against the latest time seen",
                high - wall,
                iso_time(wall),
                iso_time(high),
            )

    # --- the snapshot the hot path reads -----------------------------------------------

    def _build_enforcement(self) -> Enforcement:
        active = self._active
        lic = active.license if active else None
        return Enforcement(
            lic,
            lic.ends_at(self.deployment) if lic else None,
            self._standing,
            self._settings.expiry_warning_days,
        )

    def _next_takeover_at(self) -> float:
        return self._pending.license.effective_at if self._pending else float("inf")

    # --- licenses --------------------------------------------------------------------

    def upload(self, text: str, source: LicenseSource = LicenseSource.UPLOAD) -> UploadOutcome:
        """Verify and apply a license. Raises LicenseRejected; a rejection changes nothing."""
        with self._lock:
            now = self.now()
            self._catch_up(now)
            lic = verify_license(text, self._settings.trusted_keys, self.deployment, now)
            if self._active and self._active.license.token == lic.token:
                return UploadOutcome(lic, False, True, self._standing)
            if self._pending and self._pending.license.token == lic.token:
                return UploadOutcome(lic, True, True, self._standing)
            incoming = InForce(lic, source, now)
            if lic.is_pending(now):
                self._store.add_pending_license(incoming.row(), now, self._high_water)
                self._pending = incoming
                self._status_version += 1
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

    def _activate(
        self, incoming: InForce, at: float, cause: str, *, was_pending: bool = False
    ) -> None:
        lic = incoming.license
        after = self._reevaluated(lic, at)
        change = self._change(after, at, cause)
        self._store.activate_license(
            incoming.row(),
            at,
            change.row() if change else None,
            self._high_water,
            was_pending=was_pending,
        )
        previous = self._active
        self._active = replace(incoming, applied_at=at)
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
        self._set_standing(after, change)

    def _reevaluated(self, lic: License, at: float) -> Standing:
        """The last evaluated day's peak judged against `lic`, the change standing for midnight."""
        last = self._last_evaluation
        if last is None:
            return self._standing
        return judge(
            self._standing, last.peak_cores, lic.max_dp_cores, at, grace_end_after_moment(at)
        )

    def _change(self, after: Standing, at: float, cause: str) -> StateChange | None:
        before = self._standing
        if after == before:
            return None
        return StateChange(at, before.state, after.state, after.grace_ends_at, cause)

    def _set_standing(self, after: Standing, change: StateChange | None) -> None:
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
        self._enforcement = self._build_enforcement()
        self._status_version += 1

    def _take_over_if_due(self, now: float) -> None:
        """A pending license is in force from its effective time, not from the next tick."""
        pending = self._pending
        if pending is not None and now >= pending.license.effective_at:
            with self._lock:
                self._catch_up(now)

    def _take_over(self, at: float) -> None:
        pending = self._pending
        assert pending is not None
        self._pending = None
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
            pending = lic.is_pending(now)
            last = self._last_evaluation
            resulting = self._reevaluated(lic, max(now, lic.effective_at))
        current = set(active.features) if active else set()
        last_peak = last.peak_cores if last else 0
        message = (
            f"valid: license {lic.serial_number} for {lic.customer}, {lic.max_dp_cores} cores, "
            f"ends {iso_time(ends_at)}"
        )
        if pending:
            message += f"; it would wait and take over {iso_time(lic.effective_at)}"
        return Validation(
            valid=True,
            reason=None,
            message=message,
            license=lic,
            ends_at=ends_at,
            pending=pending,
            already_active=active is not None and active.token == lic.token,
            resulting=resulting,
            last_evaluated_day=last.day if last else "",
            last_evaluated_peak_cores=last_peak,
            core_headroom=lic.max_dp_cores - last_peak,
            features_gained=tuple(f for f in lic.features if f not in current),
            features_lost=tuple(sorted(current - set(lic.features))),
            days_until_expiration=days_left(ends_at, now),
        )

    # --- usage -----------------------------------------------------------------------

    def report_usage(self, instance_id: str, cores: int, stopping: bool) -> ReportOutcome:
        """Record a gateway's cores; returns once the report is durable. Raises UsageRejected."""
        check_report(instance_id, cores, stopping)
        with self._usage_lock:
            # the receive time is read under the lock the evaluator also takes, so a report
            # stamped before midnight is queued before that midnight's evaluation reads usage
            now = self.now()
            rows = self._tracker.report(instance_id, cores, stopping, now)
            # queued under the tracker's lock so rows reach the database in tracker order
            ticket = self._store.enqueue_usage(rows)
        self._store.commit_usage(ticket)
        jitter = 1.0 + random.uniform(-0.1, 0.1)
        return ReportOutcome(
            self._enforcement.standing.state, now, self._settings.report_interval * jitter
        )

    # --- decisions and status -------------------------------------------------------

    def check_write(self, resource_type: str, operation: Operation, feature: str) -> Decision:
        """The decision table, from memory. Raises InvalidWriteCheck for a bad request."""
        check_request(resource_type)
        now = self.now()
        self._take_over_if_due(now)
        decision = self._enforcement.decide(resource_type, operation, feature, now)
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
        self._take_over_if_due(now)
        # the tracker's version moves when an instance starts or stops counting
        versions = (self._status_version, self._tracker.version)
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
        enforcement = self._enforcement
        active = self._active
        ends_at = enforcement.license_ends_at if active else None
        with self._usage_lock:
            total, count = self._tracker.current_total(now)
        warnings = list(enforcement.warnings(now))
        if active is None:
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
                    f"judged against the latest time seen, {iso_time(self._high_water)}",
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
            pending=self._pending,
            standing=enforcement.standing,
            days_until_expiration=days_left(ends_at, now) if ends_at is not None else 0,
            warnings=tuple(warnings),
            current_total_cores=total,
            live_instances=count,
            last_evaluation=self._last_evaluation,
            clock=ClockReading(
                self._clock.now(),
                self._high_water,
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

        Raises InvalidDay when `day` is not a date.
        """
        try:
            date.fromisoformat(day)
        except ValueError:
            raise InvalidDay(
                "INVALID_ARGUMENT", f"day must be a date, YYYY-MM-DD; got {day[:40]!r}"
            ) from None
        instances = self._store.peak_instances(day)
        if instances is None:
            return None
        return PeakInstancesPage(instances[offset : offset + limit], len(instances))

    # --- the evaluator's work ----------------------------------------------------------

    def tick(self) -> None:
        """Everything time brings: pending takeovers, midnight evaluations, expiring instances.

        Called by the evaluator thread every few seconds and once at start-up, so
        days missed while the service was down are evaluated in order.
        """
        now = self.now()
        with self._lock:
            self._catch_up(now)
            if self._high_water - self._clock_watch.persisted_high_water >= 1.0:
                self._store.save_high_water(self._high_water)
                self._clock_watch.persisted_high_water = self._high_water
        with self._usage_lock:
            expired = self._tracker.expire(now)
        self._store.write_usage(expired)

    def _catch_up(self, now: float) -> None:
        """Evaluate every completed day and take over every due pending license, in time order."""
        while True:
            day = self._next_day_to_evaluate()
            midnight = self._calendar.end_of(day)
            takeover_at = self._next_takeover_at()
            if min(midnight, takeover_at) > now:
                return
            if takeover_at <= midnight:
                self._take_over(takeover_at)
            else:
                self._evaluate(day, midnight, now)

    def _next_day_to_evaluate(self) -> date:
        if self._last_evaluation is None:
            return self._calendar.day_of(self.deployment.deployment_time)
        return date.fromisoformat(self._last_evaluation.day) + timedelta(days=1)

    def _evaluate(self, day: date, midnight: float, now: float) -> None:
        start = self._calendar.start_of(day)
        ttl = self._settings.instance_ttl
        with self._usage_lock:
            rows = self._store.intervals_between(start, midnight, ttl)
        peak = peak_between(rows, start, midnight, ttl)
        active = self._active
        before = self._standing
        max_cores = active.license.max_dp_cores if active else None
        if max_cores is None:
            after = before  # no quota to judge against
        else:
            grace_ends = self._calendar.grace_end_after_midnight(day + timedelta(days=1))
            after = judge(before, peak.peak_cores, max_cores, midnight, grace_ends)
        change = self._change(after, midnight, _evaluation_cause(day, peak, max_cores))
        record = DayRecord(
            day=day.isoformat(),
            peak_cores=peak.peak_cores,
            max_dp_cores=max_cores,
            state_before=before.state,
            state_after=after.state,
            evaluated_at=now,
            peak_at=peak.peak_at,
            peak_instances=peak.instances,
            license_serial_number=active.license.serial_number if active else "",
            grace_ends_at=after.grace_ends_at,
        )
        self._store.record_evaluation(
            record.row(), change.row() if change else None, self._high_water
        )
        self._last_evaluation = record
        self.evaluations_total += 1
        log.info(
            "evaluated %s: peak %d cores, quota %s, %s -> %s",
            record.day,
            peak.peak_cores,
            max_cores if max_cores is not None else "none (no license)",
            before.state.value,
            after.state.value,
        )
        self._set_standing(after, change)
        retention = self._settings.usage_retention_days * SECONDS_PER_DAY
        self._store.prune_usage(start - retention, ttl)


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


def _evaluation_cause(day: date, peak: DayPeak, max_cores: int | None) -> str:
    quota = f"{max_cores} licensed" if max_cores is not None else "no license"
    return f"evaluation of {day.isoformat()}: peak {peak.peak_cores} cores, {quota}"
