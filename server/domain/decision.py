"""The write decision: may this configuration operation go ahead right now?

It is answered from an immutable `Enforcement` snapshot that the service
replaces whenever the license or the runtime state changes, so the hot path
reads memory only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from server.domain.clock import SECONDS_PER_DAY
from server.domain.license import License, iso_time
from server.domain.runtime import RuntimeState, Standing

LICENSE_RESOURCE = "license"
MAX_RESOURCE_TYPE_CHARS = 128


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


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: DecisionReason
    message: str
    warnings: tuple[StatusWarning, ...]


class InvalidWriteCheck(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def check_request(resource_type: str) -> None:
    if not resource_type or len(resource_type) > MAX_RESOURCE_TYPE_CHARS:
        raise InvalidWriteCheck(
            "INVALID_RESOURCE_TYPE",
            f"resource_type must be 1 to {MAX_RESOURCE_TYPE_CHARS} characters, e.g. 'route'",
        )


def days_left(ends_at: float, now: float) -> int:
    """Whole days until `ends_at`: 0 on the last day, negative once it has passed."""
    return math.floor((ends_at - now) / SECONDS_PER_DAY)


@dataclass(frozen=True)
class Enforcement:
    """What the write decision needs, fixed until the license or state changes."""

    license: License | None
    # When the license stops being valid here (the trial rule applied).
    license_ends_at: float
    standing: Standing
    expiry_warning_days: int
    features: frozenset[str] = field(default=frozenset())
    serial_number: str = ""

    @staticmethod
    def build(
        lic: License | None, ends_at: float | None, standing: Standing, expiry_warning_days: int
    ) -> Enforcement:
        return Enforcement(
            license=lic,
            license_ends_at=ends_at if ends_at is not None else math.inf,
            standing=standing,
            expiry_warning_days=expiry_warning_days,
            features=frozenset(lic.features) if lic else frozenset(),
            serial_number=lic.serial_number if lic else "",
        )

    def warnings(self, now: float) -> tuple[StatusWarning, ...]:
        """The warnings every CheckWrite and GetStatus answer carries."""
        found: list[StatusWarning] = []
        if self.license is None:
            return ()
        if now >= self.license_ends_at:
            found.append(
                StatusWarning(
                    WarningKind.LICENSE_EXPIRED,
                    f"license {self.serial_number} ended {iso_time(self.license_ends_at)}: "
                    "creating and updating configuration is blocked until a new license is "
                    "uploaded",
                )
            )
        else:
            left = days_left(self.license_ends_at, now)
            if left < self.expiry_warning_days:
                found.append(
                    StatusWarning(
                        WarningKind.LICENSE_EXPIRING,
                        f"license {self.serial_number} ends {iso_time(self.license_ends_at)}, "
                        f"in {left} day{'s' if left != 1 else ''}: plan the renewal",
                    )
                )
        state = self.standing.state
        if state is RuntimeState.DP_CORE_EXCEEDED:
            assert self.standing.grace_ends_at is not None
            found.append(
                StatusWarning(
                    WarningKind.DP_CORE_EXCEEDED,
                    f"data-plane core usage exceeds the licensed {self.license.max_dp_cores} "
                    f"cores; the grace period ends {iso_time(self.standing.grace_ends_at)}, "
                    "after which creating and updating configuration is blocked",
                )
            )
        elif state is RuntimeState.RESTRICTED:
            found.append(
                StatusWarning(
                    WarningKind.RESTRICTED,
                    f"data-plane core usage exceeded the licensed {self.license.max_dp_cores} "
                    "cores past the grace period: creating and updating configuration is "
                    "blocked; scale the gateways down or upload a license with more cores",
                )
            )
        return tuple(found)

    def decide(
        self, resource_type: str, operation: Operation, feature: str, now: float
    ) -> Decision:
        """The SPEC's decision table."""
        warnings = self.warnings(now)
        if resource_type == LICENSE_RESOURCE:
            return Decision(
                True,
                DecisionReason.LICENSE_RESOURCE,
                "the license itself may always be managed",
                warnings,
            )
        if operation is Operation.READ:
            return Decision(True, DecisionReason.READ, "reads are always allowed", warnings)
        if operation is Operation.DELETE:
            return Decision(
                True,
                DecisionReason.DELETE,
                "deletes are always allowed, so configuration can always be removed",
                warnings,
            )
        if self.license is None:
            return Decision(
                False,
                DecisionReason.NO_LICENSE,
                f"no license is installed: cannot {operation.name.lower()} {resource_type}; "
                "upload a license first",
                warnings,
            )
        if now >= self.license_ends_at:
            return Decision(
                False,
                DecisionReason.LICENSE_EXPIRED,
                f"license {self.serial_number} ended {iso_time(self.license_ends_at)}: cannot "
                f"{operation.name.lower()} {resource_type}; upload a new license",
                warnings,
            )
        if feature and feature not in self.features:
            return Decision(
                False,
                DecisionReason.FEATURE_NOT_LICENSED,
                f"{resource_type} needs feature {feature!r}, which license {self.serial_number} "
                f"does not include (it has: {', '.join(sorted(self.features)) or 'none'})",
                warnings,
            )
        state = self.standing.state
        if state is RuntimeState.RESTRICTED:
            return Decision(
                False,
                DecisionReason.RESTRICTED,
                f"restricted: data-plane core usage exceeded the licensed "
                f"{self.license.max_dp_cores} cores past the 7-day grace period; cannot "
                f"{operation.name.lower()} {resource_type}. Scale the gateways down or upload "
                "a license with more cores",
                warnings,
            )
        if state is RuntimeState.DP_CORE_EXCEEDED:
            assert self.standing.grace_ends_at is not None
            return Decision(
                True,
                DecisionReason.GRACE_PERIOD,
                f"allowed during the grace period, which ends "
                f"{iso_time(self.standing.grace_ends_at)}",
                warnings,
            )
        return Decision(True, DecisionReason.LICENSED, "allowed", warnings)
