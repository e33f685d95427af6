"""The write decision: may this configuration operation go ahead right now?

The one implementation of the decision table. The service answers CheckWrite
with it, and a client answers the same question in-process from a snapshot
the service streams (`licensing.client.LocalDecider`), so the two cannot
drift apart. It is plain Python, the standard library only: no gRPC, no
protobuf (`licensing.snapshot` converts to and from the wire).

A decision is answered from an immutable `Enforcement` snapshot that is
replaced whenever the license or the runtime state changes, so the hot path
reads memory only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Protocol

from licensing.clock import SECONDS_PER_DAY

LICENSE_RESOURCE = "license"
MAX_RESOURCE_TYPE_CHARS = 128
MAX_FEATURE_CHARS = 128


class Operation(IntEnum):
    """What a configuration request does to a resource; the values are the proto's."""

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
    # only a client deciding locally, from a snapshot older than its caller allows
    STALE = "STALE"


class WarningKind(StrEnum):
    LICENSE_EXPIRING = "LICENSE_EXPIRING"
    DP_CORE_EXCEEDED = "DP_CORE_EXCEEDED"
    RESTRICTED = "RESTRICTED"
    LICENSE_EXPIRED = "LICENSE_EXPIRED"
    NO_LICENSE = "NO_LICENSE"
    CLOCK_MOVED_BACK = "CLOCK_MOVED_BACK"
    DEVELOPMENT_MODE = "DEVELOPMENT_MODE"
    LICENSE_FILE_ERROR = "LICENSE_FILE_ERROR"


class RuntimeState(StrEnum):
    NORMAL = "NORMAL"
    DP_CORE_EXCEEDED = "DP_CORE_EXCEEDED"
    RESTRICTED = "RESTRICTED"


@dataclass(frozen=True)
class Standing:
    """The runtime state and the open overage episode's grace end (None: no episode open)."""

    state: RuntimeState
    episode_grace_ends_at: float | None = None

    @property
    def grace_ends_at(self) -> float | None:
        """When the grace period ends, shown while DP_CORE_EXCEEDED."""
        if self.state is RuntimeState.DP_CORE_EXCEEDED:
            return self.episode_grace_ends_at
        return None


NORMAL = Standing(RuntimeState.NORMAL)


class LicenseTerms(Protocol):
    """What the decision reads of a license: a verified license, or a snapshot's copy of it."""

    @property
    def serial_number(self) -> str: ...

    @property
    def max_dp_cores(self) -> int: ...

    @property
    def features(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class LicenseInForce:
    """The terms of a license as a snapshot carries them."""

    serial_number: str
    max_dp_cores: int
    features: tuple[str, ...]


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


def iso_time(when: float) -> str:
    """An instant as ISO 8601 UTC with a Z, as every message writes it."""
    return datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")


def quote(value: object, limit: int = 40) -> str:
    """`value` as a message or log line may echo it: escaped, and cut to `limit` characters.

    A cut value says how long it was, so a person still learns what was sent.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value)} characters)"
    try:
        text = repr(value)
    except RecursionError:  # a JSON value nested nearly as deep as the parser allows
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# a resource type a denial names as it is; any other is quoted
PLAIN_RESOURCE_TYPE = re.compile(r"[A-Za-z0-9_.:/-]{1,40}")


def resource_name(resource_type: str) -> str:
    """A resource type as a denial names it: a plain name (`route`, `ssl-certificate`) as it
    is, anything else quoted, escaped and cut short, as every echo of a request is."""
    return resource_type if PLAIN_RESOURCE_TYPE.fullmatch(resource_type) else quote(resource_type)


def refused_action(operation: Operation, resource_type: str) -> str:
    """What a denial says was refused: `create route`."""
    return f"{operation.name.lower()} {resource_name(resource_type)}"


# what a write check that names no known operation is told
INVALID_OPERATION = (
    "INVALID_OPERATION",
    "operation must be OPERATION_CREATE, OPERATION_UPDATE, OPERATION_DELETE or OPERATION_READ",
)


def request_problem(resource_type: str, feature: str) -> tuple[str, str] | None:
    """Why a write check cannot be answered, as (ErrorReason name, message); None if it can.

    A write check names a resource type and at most a short feature; nothing unbounded.
    """
    if not resource_type or len(resource_type) > MAX_RESOURCE_TYPE_CHARS:
        return (
            "INVALID_RESOURCE_TYPE",
            f"resource_type must be 1 to {MAX_RESOURCE_TYPE_CHARS} characters, e.g. 'route'",
        )
    if len(feature) > MAX_FEATURE_CHARS:
        return (
            "INVALID_FEATURE",
            f"feature must be at most {MAX_FEATURE_CHARS} characters (or empty for none); "
            f"got {len(feature)}",
        )
    return None


def days_left(ends_at: float, now: float) -> int:
    """Whole days until `ends_at`: 0 on the last day, negative once it has passed."""
    return math.floor((ends_at - now) / SECONDS_PER_DAY)


class Enforcement:
    """What the write decision needs, fixed until the license or the runtime state changes.

    The answers that do not depend on the request are made once, here, so the
    hot path mostly picks a ready Decision. The instants at which the answer
    changes by itself are part of the snapshot: the grace end, the expiry
    warning window's start, the license's end, and a pending license's
    takeover (its `successor` answers from then on, until the service has
    applied it).
    """

    __slots__ = (
        "_after_grace",
        "_before_grace",
        "_expiring",
        "_successor",
        "expiry_warning_days",
        "expiry_warning_starts_at",
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
        lic: LicenseTerms | None,
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
        self.expiry_warning_starts_at = self.license_ends_at - expiry_warning_days * SECONDS_PER_DAY
        grace_ends_at = standing.grace_ends_at
        self.grace_ends_at = grace_ends_at if grace_ends_at is not None else math.inf
        self._before_grace = self._answers(grace_passed=False)
        self._after_grace = (
            self._answers(grace_passed=True) if grace_ends_at is not None else self._before_grace
        )
        # in the warning window: the answers of each day left (None: ended), before or after
        # the grace end, made when first asked for; at most expiry_warning_days + 2 of each
        self._expiring: dict[
            tuple[int | None, bool],
            tuple[tuple[StatusWarning, ...], dict[DecisionReason, Decision]],
        ] = {}
        self.successor_at, self._successor = successor if successor else (math.inf, self)

    @property
    def successor(self) -> Enforcement | None:
        """The pending license's snapshot, which answers from `successor_at` on."""
        return self._successor if self._successor is not self else None

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

    def changes_between(self, after: float, until: float) -> bool:
        """Whether an answer can differ between `after` and `until` (after <= until) by time
        alone: a takeover, a grace end, the warning window's start or the license's end lies
        between them. (Within the warning window the days left count down too.)"""
        if after < self.successor_at <= until:
            return True
        current = self.at(after)
        warn = current.expiry_warning_starts_at
        return (
            after < current.grace_ends_at <= until
            or after < current.license_ends_at <= until
            # the warning applies from just after its start
            or after <= warn < until
        )

    def next_change_after(self, now: float) -> float:
        """The first instant after `now` at which an answer changes by time alone (inf: none),
        the warning window's days-left count aside."""
        current = self.at(now)
        instants = (
            self.successor_at,
            current.grace_ends_at,
            current.license_ends_at,
            current.expiry_warning_starts_at,
        )
        return min((i for i in instants if i > now), default=math.inf)

    def warnings(self, now: float) -> tuple[StatusWarning, ...]:
        """The warnings every CheckWrite and GetStatus answer carries."""
        if now >= self.successor_at:
            return self._successor.warnings(now)
        if now <= self.expiry_warning_starts_at:
            return (self._before_grace if now < self.grace_ends_at else self._after_grace)[0]
        return self._expiry_answers(now)[0]

    def _expiry_answers(
        self, now: float
    ) -> tuple[tuple[StatusWarning, ...], dict[DecisionReason, Decision]]:
        """In the warning window: the warnings and the ready allowed Decisions at `now`."""
        grace_passed = now >= self.grace_ends_at
        ended = now >= self.license_ends_at
        key = (None if ended else days_left(self.license_ends_at, now), grace_passed)
        answers = self._expiring.get(key)
        if answers is not None:
            return answers
        if ended:
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
        state_warnings, allowed = self._after_grace if grace_passed else self._before_grace
        warnings = (ending, *state_warnings)
        answers = warnings, {r: replace(d, warnings=warnings) for r, d in allowed.items()}
        self._expiring[key] = answers
        return answers

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
                f"no license is installed: cannot {refused_action(operation, resource_type)}; "
                "upload a license first",
                now,
            )
        elif now >= self.license_ends_at:
            return self._denied(
                DecisionReason.LICENSE_EXPIRED,
                f"license {self.serial_number} ended {iso_time(self.license_ends_at)}: cannot "
                f"{refused_action(operation, resource_type)}; upload a new license",
                now,
            )
        elif feature and feature not in self.features:
            licensed = ", ".join(sorted(self.features)) or "none"
            return self._denied(
                DecisionReason.FEATURE_NOT_LICENSED,
                f"{resource_name(resource_type)} needs feature {quote(feature)}, which license "
                f"{self.serial_number} does not include (it has: {licensed})",
                now,
            )
        elif self.standing.state is RuntimeState.RESTRICTED:
            return self._denied(
                DecisionReason.RESTRICTED,
                f"restricted: data-plane core usage exceeded the licensed "
                f"{self.license.max_dp_cores} cores past the 7-day grace period; cannot "
                f"{refused_action(operation, resource_type)}. Scale the gateways down or upload a "
                "license with more cores",
                now,
            )
        elif self.standing.state is RuntimeState.DP_CORE_EXCEEDED:
            reason = DecisionReason.GRACE_PERIOD
        else:
            reason = DecisionReason.LICENSED
        if now <= self.expiry_warning_starts_at:
            return (self._before_grace if now < self.grace_ends_at else self._after_grace)[1][
                reason
            ]
        return self._expiry_answers(now)[1][reason]

    def _denied(self, reason: DecisionReason, message: str, now: float) -> Decision:
        return Decision(
            False, reason, message, self.warnings(now), self.standing.state, self.serial_number
        )
