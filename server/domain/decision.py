"""The write decision: may this configuration operation go ahead right now?

It is answered from an immutable `Enforcement` snapshot that the service
replaces whenever the license or the runtime state changes, so the hot path
reads memory only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum, StrEnum

from licensing_server.domain.clock import SECONDS_PER_DAY
from licensing_server.domain.license import License, iso_time
from licensing_server.domain.refusal import Refused, quote
from licensing_server.domain.runtime import RuntimeState, Standing

LICENSE_RESOURCE = "license"
MAX_RESOURCE_TYPE_CHARS = 128
MAX_FEATURE_CHARS = 128


class Operation(Enum):
    CREATE = 1
    UPDATE = 2
    DELETE = 3
    READ = 4


class DecisionReason(StrEnum):
    LICENSED = "LICENSED"
    GRACE_PERIOD = "GRACE_PERIOD"
    READ = "READ"
    DELETE = "DELETE"
    LICENSE_RESOURCE = "LICENSE_RESOURCE"
    RESTRICTED = "RESTRICTED"
    LICENSE_EXPIRED = "LICENSE_EXPIRED"
    NO_LICENSE = "NO_LICENSE"
    FEATURE_NOT_LICENSED = "FEATURE_NOT_LICENSED"


class WarningKind(StrEnum):
    LICENSE_EXPIRING = "LICENSE_EXPIRING"
    DP_CORE_EXCEEDED = "DP_CORE_EXCEEDED"
    RESTRICTED = "RESTRICTED"
    LICENSE_EXPIRED = "LICENSE_EXPIRED"
    NO_LICENSE = "NO_LICENSE"
    CLOCK_MOVED_BACK = "CLOCK_MOVED_BACK"
    DEVELOPMENT_MODE = "DEVELOPMENT_MODE"
    LICENSE_FILE_ERROR = "LICENSE_FILE_ERROR"


@dataclass(frozen=True)
class StatusWarning:
    kind: WarningKind
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: DecisionReason
    message: str
    warnings: tuple[StatusWarning, ...]
    state: RuntimeState
    serial_number: str


class InvalidWriteCheck(Refused):
    pass


def check_request(resource_type: str, feature: str) -> None:
    """A write check names a resource type and at most a short feature; nothing unbounded."""
    if not resource_type or len(resource_type) > MAX_RESOURCE_TYPE_CHARS:
        raise InvalidWriteCheck(
            "INVALID_RESOURCE_TYPE",
            f"resource_type must be 1 to {MAX_RESOURCE_TYPE_CHARS} characters, e.g. 'route'",
        )
    if len(feature) > MAX_FEATURE_CHARS:
        raise InvalidWriteCheck(
            "INVALID_FEATURE",
            f"feature must be at most {MAX_FEATURE_CHARS} characters (or empty for none); "
            f"got {len(feature)}",
        )


def days_left(ends_at: float, now: float) -> int:
    """Whole days until `ends_at`: 0 on the last day, negative once it has passed."""
    return math.floor((ends_at - now) / SECONDS_PER_DAY)


class Enforcement:
    """What the write decision needs, fixed until the license or the runtime state changes.

    The answers that do not depend on the request are made once, here, so the
    hot path mostly picks a ready Decision. The instants at which the answer
    changes by itself are part of the snapshot: the grace end, the expiry
    warning window, the license's end, and a pending license's takeover (its
    `successor` answers from then on, until the service has applied it).
    """

    __slots__ = (
        "_after_grace",
        "_before_grace",
        "_successor",
        "_warn_after",
        "expiry_warning_days",
        "features",
        "grace_ends_at",
        "license",
        "license_ends_at",
        "serial_number",
        "standing",
        "successor_at",
    )

    def __init__(
        self,
        lic: License | None,
        ends_at: float | None,
        standing: Standing,
        expiry_warning_days: int,
        successor: tuple[float, Enforcement] | None = None,
    ) -> None:
        self.license = lic
        # when the license stops being valid here (the trial rule applied)
        self.license_ends_at = ends_at if ends_at is not None and lic is not None else math.inf
        self.standing = standing
        self.expiry_warning_days = expiry_warning_days
        self.features = frozenset(lic.features) if lic else frozenset()
        self.serial_number = lic.serial_number if lic else ""
        # until this instant only the state's warnings apply; after it, expiry ones too
        self._warn_after = self.license_ends_at - expiry_warning_days * SECONDS_PER_DAY
        grace_ends_at = standing.grace_ends_at
        self.grace_ends_at = grace_ends_at if grace_ends_at is not None else math.inf
        self._before_grace = self._answers(grace_passed=False)
        self._after_grace = (
            self._answers(grace_passed=True) if grace_ends_at is not None else self._before_grace
        )
        self.successor_at, self._successor = successor if successor else (math.inf, self)

    def _answers(
        self, *, grace_passed: bool
    ) -> tuple[tuple[StatusWarning, ...], dict[DecisionReason, Decision]]:
        """The state's warnings and the ready allowed Decisions, before or after the grace end."""
        warnings = self._state_warnings(grace_passed)
        if self.standing.grace_ends_at is None:
            grace = "allowed during the grace period"
        elif grace_passed:
            grace = (
                f"allowed: the grace period ended {iso_time(self.standing.grace_ends_at)}; "
                "creating and updating configuration is blocked from the next midnight's "
                "evaluation if the day's peak is still over the quota"
            )
        else:
            grace = (
                "allowed during the grace period, which ends "
                f"{iso_time(self.standing.grace_ends_at)}"
            )
        allowed = {
            reason: Decision(
                True, reason, message, warnings, self.standing.state, self.serial_number
            )
            for reason, message in (
                (DecisionReason.LICENSE_RESOURCE, "the license itself may always be managed"),
                (DecisionReason.READ, "reads are always allowed"),
                (
                    DecisionReason.DELETE,
                    "deletes are always allowed, so configuration can always be removed",
                ),
                (DecisionReason.GRACE_PERIOD, grace),
                (DecisionReason.LICENSED, "allowed"),
            )
        }
        return warnings, allowed

    def _state_warnings(self, grace_passed: bool) -> tuple[StatusWarning, ...]:
        if self.license is None:
            return ()
        state = self.standing.state
        if state is RuntimeState.DP_CORE_EXCEEDED:
            assert self.standing.grace_ends_at is not None
            grace_end = iso_time(self.standing.grace_ends_at)
            if grace_passed:
                message = (
                    f"data-plane core usage exceeds the licensed {self.license.max_dp_cores} "
                    f"cores and the grace period ended {grace_end}: creating and updating "
                    "configuration is blocked from the next midnight's evaluation unless the "
                    "day's peak is back within the quota"
                )
            else:
                message = (
                    f"data-plane core usage exceeds the licensed {self.license.max_dp_cores} "
                    f"cores; the grace period ends {grace_end}, after which creating and "
                    "updating configuration is blocked"
                )
            return (StatusWarning(WarningKind.DP_CORE_EXCEEDED, message),)
        if state is RuntimeState.RESTRICTED:
            return (
                StatusWarning(
                    WarningKind.RESTRICTED,
                    f"data-plane core usage exceeded the licensed {self.license.max_dp_cores} "
                    "cores past the grace period: creating and updating configuration is "
                    "blocked; scale the gateways down or upload a license with more cores",
                ),
            )
        return ()

    def at(self, now: float) -> Enforcement:
        """The snapshot in force at `now`: this one, or the pending license's once it is due."""
        return self._successor if now >= self.successor_at else self

    def warnings(self, now: float) -> tuple[StatusWarning, ...]:
        """The warnings every CheckWrite and GetStatus answer carries."""
        if now >= self.successor_at:
            return self._successor.warnings(now)
        state_warnings = (self._before_grace if now < self.grace_ends_at else self._after_grace)[0]
        if now <= self._warn_after:
            return state_warnings
        if now >= self.license_ends_at:
            ending = StatusWarning(
                WarningKind.LICENSE_EXPIRED,
                f"license {self.serial_number} ended {iso_time(self.license_ends_at)}: "
                "creating and updating configuration is blocked until a new license is "
                "uploaded",
            )
        else:
            left = days_left(self.license_ends_at, now)
            ending = StatusWarning(
                WarningKind.LICENSE_EXPIRING,
                f"license {self.serial_number} ends {iso_time(self.license_ends_at)}, "
                f"in {left} day{'s' if left != 1 else ''}: plan the renewal",
            )
        return (ending, *state_warnings)

    def decide(
        self, resource_type: str, operation: Operation, feature: str, now: float
    ) -> Decision:
        """The decision table: create and update need a valid license within quota."""
        if now >= self.successor_at:
            return self._successor.decide(resource_type, operation, feature, now)
        if resource_type == LICENSE_RESOURCE:
            reason = DecisionReason.LICENSE_RESOURCE
        elif operation is Operation.READ:
            reason = DecisionReason.READ
        elif operation is Operation.DELETE:
            reason = DecisionReason.DELETE
        elif self.license is None:
            return self._denied(
                DecisionReason.NO_LICENSE,
                f"no license is installed: cannot {operation.name.lower()} {resource_type}; "
                "upload a license first",
                now,
            )
        elif now >= self.license_ends_at:
            return self._denied(
                DecisionReason.LICENSE_EXPIRED,
                f"license {self.serial_number} ended {iso_time(self.license_ends_at)}: cannot "
                f"{operation.name.lower()} {resource_type}; upload a new license",
                now,
            )
        elif feature and feature not in self.features:
            licensed = ", ".join(sorted(self.features)) or "none"
            return self._denied(
                DecisionReason.FEATURE_NOT_LICENSED,
                f"{resource_type} needs feature {quote(feature)}, which license "
                f"{self.serial_number} does not include (it has: {licensed})",
                now,
            )
        elif self.standing.state is RuntimeState.RESTRICTED:
            return self._denied(
                DecisionReason.RESTRICTED,
                f"restricted: data-plane core usage exceeded the licensed "
                f"{self.license.max_dp_cores} cores past the 7-day grace period; cannot "
                f"{operation.name.lower()} {resource_type}. Scale the gateways down or upload "
                "a license with more cores",
                now,
            )
        elif self.standing.state is RuntimeState.DP_CORE_EXCEEDED:
            reason = DecisionReason.GRACE_PERIOD
        else:
            reason = DecisionReason.LICENSED
        decision = (self._before_grace if now < self.grace_ends_at else self._after_grace)[1][
            reason
        ]
        if now <= self._warn_after:
            return decision
        return replace(decision, warnings=self.warnings(now))

    def _denied(self, reason: DecisionReason, message: str, now: float) -> Decision:
        return Decision(
            False, reason, message, self.warnings(now), self.standing.state, self.serial_number
        )
