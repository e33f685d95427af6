"""The decision table on the wire: `licensing.decision` to and from the proto messages.

The service sends its `Enforcement` as an `EnforcementSnapshot`; a client
turns it back into the same `Enforcement` and decides with it. Both answer
with `decision_proto`, so a local answer is the very message CheckWrite
would have sent.

Instants travel as `google.protobuf.Timestamp`. A float of seconds since the
epoch survives the round trip exactly for every instant from April 1970 on
(the nanoseconds are finer than a float's resolution there), so an instant
such as a grace end compares the same on both sides.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from licensing.decision import (
    Decision,
    DecisionReason,
    Enforcement,
    LicenseInForce,
    RuntimeState,
    Standing,
    StatusWarning,
    WarningKind,
)
from licensing.v1 import licensing_pb2 as pb

NANOS_PER_SECOND = 1_000_000_000

STATES: dict[RuntimeState, pb.RuntimeState.ValueType] = {
    s: pb.RuntimeState.Value("RUNTIME_STATE_" + s.value) for s in RuntimeState
}
STATE_OF = {value: state for state, value in STATES.items()}
REASONS: dict[DecisionReason, pb.DecisionReason.ValueType] = {
    r: pb.DecisionReason.Value("DECISION_REASON_" + r.value) for r in DecisionReason
}
WARNING_KINDS: dict[WarningKind, pb.WarningKind.ValueType] = {
    k: pb.WarningKind.Value("WARNING_KIND_" + k.value) for k in WarningKind
}


class InvalidSnapshot(ValueError):
    """A snapshot this client cannot decide from (a newer service's state, say)."""


def timestamp(when: float) -> Timestamp:
    """An instant, to the nanosecond; 0.9999999999 s carries into the next second."""
    seconds = int(when // 1)
    nanos = round((when - seconds) * NANOS_PER_SECOND)
    if nanos == NANOS_PER_SECOND:
        seconds, nanos = seconds + 1, 0
    return Timestamp(seconds=seconds, nanos=nanos)


def instant(stamp: Timestamp) -> float:
    """Seconds since the epoch: the float `timestamp` was made from."""
    return stamp.seconds + stamp.nanos / NANOS_PER_SECOND


def warning_proto(warning: StatusWarning) -> pb.Warning:
    return pb.Warning(kind=WARNING_KINDS[warning.kind], message=warning.message)


def decision_proto(decision: Decision) -> pb.CheckWriteResponse:
    """The CheckWrite answer for a decision, made by the service and a local decider alike."""
    return pb.CheckWriteResponse(
        allowed=decision.allowed,
        reason=REASONS[decision.reason],
        message=decision.message,
        state=STATES[decision.state],
        license_serial_number=decision.serial_number,
        warnings=[warning_proto(w) for w in decision.warnings],
    )


def snapshot_proto(enforcement: Enforcement, version: int) -> pb.EnforcementSnapshot:
    message = pb.EnforcementSnapshot(
        version=version,
        state=STATES[enforcement.standing.state],
        expiry_warning_days=enforcement.expiry_warning_days,
    )
    lic = enforcement.license
    if lic is not None:
        if enforcement.license_ends_at == float("inf"):
            raise InvalidSnapshot("a license in force has an end")
        message.license.CopyFrom(
            pb.LicenseTerms(
                serial_number=lic.serial_number,
                max_dp_cores=lic.max_dp_cores,
                features=list(lic.features),
                end_time=timestamp(enforcement.license_ends_at),
            )
        )
        message.expiry_warning_start_time.CopyFrom(timestamp(enforcement.expiry_warning_starts_at))
    grace_ends_at = enforcement.standing.grace_ends_at
    if grace_ends_at is not None:
        message.grace_end_time.CopyFrom(timestamp(grace_ends_at))
    successor = enforcement.successor
    if successor is not None:
        message.takeover_time.CopyFrom(timestamp(enforcement.successor_at))
        message.successor.CopyFrom(snapshot_proto(successor, 0))
    return message


def enforcement_from_proto(message: pb.EnforcementSnapshot) -> Enforcement:
    """The snapshot as the `Enforcement` it was made from. Raises InvalidSnapshot."""
    state = STATE_OF.get(message.state)
    if state is None:
        raise InvalidSnapshot(f"unknown runtime state {message.state}")
    grace_ends_at = None
    if message.HasField("grace_end_time"):
        grace_ends_at = instant(message.grace_end_time)
    elif state is RuntimeState.DP_CORE_EXCEEDED:
        raise InvalidSnapshot("a DP_CORE_EXCEEDED snapshot without grace_end_time")
    lic, ends_at = None, None
    if message.HasField("license"):
        terms = message.license
        lic = LicenseInForce(terms.serial_number, terms.max_dp_cores, tuple(terms.features))
        ends_at = instant(terms.end_time)
    successor = None
    if message.HasField("successor"):
        if message.successor.HasField("successor"):
            raise InvalidSnapshot("a successor has no successor")
        successor = (instant(message.takeover_time), enforcement_from_proto(message.successor))
    return Enforcement(
        lic, ends_at, Standing(state, grace_ends_at), message.expiry_warning_days, successor
    )
