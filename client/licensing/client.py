"""A typed Python client for LicenseService over the generated stubs.

    from licensing.client import LicensingClient
    with LicensingClient("127.0.0.1:7443", token="...") as client:
        status = client.status()
        decision = client.check_write("route", Operation.CREATE)

Errors raise `LicensingError`, which carries the status code and the stable
reason code from the google.rpc.ErrorInfo in the status details.

`LocalDecider` answers the same `check_write` in-process, in microseconds,
from the decision table the service streams (WatchEnforcement), and keeps
answering while the service is unreachable:

    from licensing.client import LocalDecider, StalePolicy
    with LocalDecider("127.0.0.1:7443", token="...", on_stale=StalePolicy.CLOSED) as decider:
        decision = decider.check_write("route", Operation.CREATE)
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from licensing.clock import Clock, SystemClock
from licensing.decision import (
    INVALID_OPERATION,
    LICENSE_RESOURCE,
    MAX_FEATURE_CHARS,
    MAX_RESOURCE_TYPE_CHARS,
    Decision,
    DecisionReason,
    Enforcement,
    request_problem,
)

# one Operation for the client and the decision table; its values are the proto's
from licensing.decision import Operation as Operation
from licensing.snapshot import InvalidSnapshot, decision_proto, enforcement_from_proto, instant
from licensing.v1 import licensing_pb2 as pb
from licensing.v1 import licensing_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:7443"
DEFAULT_TIMEOUT = 10.0

Response = TypeVar("Response")


class LicensingError(Exception):
    """A failed call: `code` is the gRPC status, `reason` the ErrorInfo reason (e.g. MALFORMED)."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(
            f"{code.name} {reason}: {message}" if reason else f"{code.name}: {message}"
        )
        self.code = code
        self.reason = reason
        self.message = message

    @staticmethod
    def from_rpc_error(error: grpc.RpcError) -> LicensingError:
        reason = ""
        status = rpc_status.from_call(error)
        if status is not None:
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason
                    break
        return LicensingError(error.code(), reason, error.details() or "")


def reason_of(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call, or "" if it has none."""
    return LicensingError.from_rpc_error(error).reason


class EnforcementStream:
    """A WatchEnforcement stream: iterate for its messages; `cancel()` ends it from any thread.

    Iterating raises LicensingError when the stream fails (the service went
    away, a bad token, ...) and simply stops once cancelled.
    """

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = False

    def __iter__(self) -> Iterator[pb.WatchEnforcementResponse]:
        try:
            yield from self._call
        except grpc.RpcError as error:
            if self._cancelled and error.code() == grpc.StatusCode.CANCELLED:
                return
            raise LicensingError.from_rpc_error(error) from None

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> EnforcementStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cancel()


class LicensingClient:
    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        token: str | None = None,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        channel: grpc.Channel | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if channel is None:
            if tls:
                channel = grpc.secure_channel(
                    target,
                    grpc.ssl_channel_credentials(root_certificates=root_certificates),
                    options=options,
                )
            else:
                channel = grpc.insecure_channel(target, options=options)
        self._channel = channel
        self._stub = licensing_pb2_grpc.LicenseServiceStub(channel)
        self._metadata: Sequence[tuple[str, str]] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._timeout = timeout

    def __enter__(self) -> LicensingClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(
        self, method: Callable[..., Any], request: Any, response_type: type[Response]
    ) -> Response:
        try:
            response: Response = method(request, metadata=self._metadata, timeout=self._timeout)
            return response
        except grpc.RpcError as error:
            raise LicensingError.from_rpc_error(error) from None

    def upload(self, license_text: str) -> pb.UploadResponse:
        """Verify and apply a license; raises LicensingError(reason=MALFORMED, ...) on rejection."""
        return self._call(
            self._stub.Upload, pb.UploadRequest(license=license_text), pb.UploadResponse
        )

    def validate(self, license_text: str) -> pb.ValidateResponse:
        """Check a license without applying it, and see what applying it would do."""
        return self._call(
            self._stub.Validate, pb.ValidateRequest(license=license_text), pb.ValidateResponse
        )

    def status(self) -> pb.GetStatusResponse:
        return self._call(self._stub.GetStatus, pb.GetStatusRequest(), pb.GetStatusResponse)

    def report_usage(
        self, instance_id: str, cores: int, *, stopping: bool = False
    ) -> pb.ReportUsageResponse:
        return self._call(
            self._stub.ReportUsage,
            pb.ReportUsageRequest(instance_id=instance_id, cores=cores, stopping=stopping),
            pb.ReportUsageResponse,
        )

    def check_write(
        self, resource_type: str, operation: Operation | int, feature: str = ""
    ) -> pb.CheckWriteResponse:
        return self._call(
            self._stub.CheckWrite,
            pb.CheckWriteRequest(
                resource_type=resource_type,
                operation=pb.Operation.ValueType(int(operation)),
                feature=feature,
            ),
            pb.CheckWriteResponse,
        )

    def watch_enforcement(self) -> EnforcementStream:
        """The decision table as the service streams it: a snapshot at once, then every change,
        and a heartbeat while nothing changes. The stream has no deadline; cancel it to end it.
        """
        call = self._stub.WatchEnforcement(pb.WatchEnforcementRequest(), metadata=self._metadata)
        return EnforcementStream(call)

    def usage_history(
        self, days: int = 0, *, include_peak_instances: bool = False, day: str = ""
    ) -> pb.GetUsageHistoryResponse:
        """Evaluated days, newest first (0 days means 30), and the recent state changes."""
        return self._call(
            self._stub.GetUsageHistory,
            pb.GetUsageHistoryRequest(
                days=days, include_peak_instances=include_peak_instances, day=day
            ),
            pb.GetUsageHistoryResponse,
        )

    def peak_instances(self, day: str, *, page_size: int = 0) -> Iterator[pb.InstanceUsage]:
        """Every instance that made up `day`'s peak, in instance_id order, a page per call.

        Raises LicensingError(reason=DAY_NOT_EVALUATED) for a day not evaluated.
        """
        page_token = ""
        while True:
            page = self.peak_instances_page(day, page_size=page_size, page_token=page_token)
            yield from page.instances
            page_token = page.next_page_token
            if not page_token:
                return

    def peak_instances_page(
        self, day: str, *, page_size: int = 0, page_token: str = ""
    ) -> pb.ListPeakInstancesResponse:
        """One page of `day`'s peak instances (page_size 0: the server's default)."""
        return self._call(
            self._stub.ListPeakInstances,
            pb.ListPeakInstancesRequest(day=day, page_size=page_size, page_token=page_token),
            pb.ListPeakInstancesResponse,
        )


class StalePolicy(StrEnum):
    """What a LocalDecider does once it has heard nothing from the service for too long."""

    # keep deciding from the last snapshot, time-driven changes included
    STATIC = "static"
    # deny creates and updates (DECISION_REASON_STALE); reads, deletes and the license stay allowed
    CLOSED = "closed"


class SnapshotUnavailable(LicensingError):
    """No snapshot arrived within the first-snapshot timeout: nothing to decide from yet."""


@dataclass(frozen=True, slots=True)
class _Table:
    """The snapshot a LocalDecider decides from, and when it last heard from the service."""

    enforcement: Enforcement
    snapshot: pb.EnforcementSnapshot
    # the service's time in the last message, and this host's clocks when it arrived
    service_time: float
    received_monotonic: float
    received_at: float
    # the CheckWrite answers already built for this snapshot's ready decisions
    responses: dict[int, tuple[Decision, pb.CheckWriteResponse]]


# this host's clock agrees with the service's when no more than this behind it (arithmetic on
# two clocks' readings is not exact, and a millisecond decides nothing about a license)
CLOCK_AGREEMENT = 0.001
MAX_HEARTBEAT_INTERVAL = 15.0
WATCHDOG_PERIOD = 1.0
RESPONSE_CACHE_SIZE = 64
OPERATIONS = {operation.value: operation for operation in Operation}
WRITES = frozenset({Operation.CREATE, Operation.UPDATE})

log = logging.getLogger("licensing.client")


def silence_limit(heartbeat_interval: float) -> float:
    """How long a stream may stay silent before it counts as dead: a heartbeat may be late by
    as much again (a busy service, the network), and by at least a second."""
    return heartbeat_interval + max(1.0, heartbeat_interval)


class LocalDecider:
    """Answers CheckWrite in-process from the decision table the service streams.

    A background thread subscribes to WatchEnforcement, keeps the latest
    snapshot, and resubscribes with jittered exponential backoff whenever the
    stream fails or falls silent. `check_write` decides from memory with the
    same code the service runs (`licensing.decision`), applying on time the
    changes the snapshot schedules (a grace end, the expiry warning window, the
    license's end, a pending license's takeover). It decides at this host's
    wall clock, but never earlier than the service's time in the last message
    plus the time passed since (give or take a millisecond): a clock behind
    the service's never extends a license.

    When nothing (not even a heartbeat) has arrived for `max_staleness`
    seconds the decider is `stale`, and follows `on_stale`: keep deciding from
    the last snapshot (STATIC, the default), or deny creates and updates with
    the reason STALE (CLOSED). Before the first snapshot `check_write` waits,
    at most `first_snapshot_timeout` seconds after the decider was made, then
    raises SnapshotUnavailable.

    The answers are the very `CheckWriteResponse` messages the service would
    send; they are shared between calls, so treat them as read-only.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        token: str | None = None,
        *,
        max_staleness: float = 300.0,
        on_stale: StalePolicy | str = StalePolicy.STATIC,
        first_snapshot_timeout: float = DEFAULT_TIMEOUT,
        tls: bool = False,
        root_certificates: bytes | None = None,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self.max_staleness = max_staleness
        self.on_stale = StalePolicy(on_stale)
        self._clock: Clock = clock or SystemClock()
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._first_deadline = time.monotonic() + first_snapshot_timeout
        self._client = LicensingClient(
            target,
            token,
            tls=tls,
            root_certificates=root_certificates,
            # the channel reconnects no slower than the decider retries
            options=(
                ("grpc.initial_reconnect_backoff_ms", max(1, round(initial_backoff * 1000))),
                ("grpc.min_reconnect_backoff_ms", max(1, round(initial_backoff * 1000))),
                ("grpc.max_reconnect_backoff_ms", max(1, round(max_backoff * 1000))),
            ),
        )
        self._table: _Table | None = None
        self._updates = 0
        self._changed = threading.Condition()
        self._stream: EnforcementStream | None = None
        self._last_message_at = time.monotonic()
        self._silence_limit = float("inf")
        self.last_error: LicensingError | None = None
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._subscribe, name="licensing-watch", daemon=True),
            threading.Thread(target=self._watchdog, name="licensing-watchdog", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # --- the hot path ---------------------------------------------------------------------

    def check_write(
        self, resource_type: str, operation: Operation | int, feature: str = ""
    ) -> pb.CheckWriteResponse:
        """The CheckWrite answer the service would give now, decided in-process.

        Raises LicensingError (INVALID_ARGUMENT) for a request the service would
        refuse, and SnapshotUnavailable when no snapshot has arrived in time.
        """
        table = self._table or self._first_table()
        clock = self._clock
        monotonic = clock.monotonic()
        now = clock.now()
        since = monotonic - table.received_monotonic
        if table.service_time + since > now + CLOCK_AGREEMENT:
            now = table.service_time + since
        op = OPERATIONS.get(operation)
        if op is None:
            raise LicensingError(grpc.StatusCode.INVALID_ARGUMENT, *INVALID_OPERATION)
        if not 0 < len(resource_type) <= MAX_RESOURCE_TYPE_CHARS or (
            len(feature) > MAX_FEATURE_CHARS
        ):
            reason, message = request_problem(resource_type, feature) or ("", "")
            raise LicensingError(grpc.StatusCode.INVALID_ARGUMENT, reason, message)
        if (
            since > self.max_staleness
            and self.on_stale is StalePolicy.CLOSED
            and op in WRITES
            and resource_type != LICENSE_RESOURCE
        ):
            return decision_proto(self._stale_denial(table, resource_type, op, since, now))
        decision = table.enforcement.decide(resource_type, op, feature, now)
        responses = table.responses
        cached = responses.get(id(decision))
        if cached is not None and cached[0] is decision:
            return cached[1]
        response = decision_proto(decision)
        if len(responses) >= RESPONSE_CACHE_SIZE:
            responses.clear()
        # keeping the decision keeps its id from being reused while the entry lives
        responses[id(decision)] = (decision, response)
        return response

    def _stale_denial(
        self, table: _Table, resource_type: str, operation: Operation, since: float, now: float
    ) -> Decision:
        enforcement = table.enforcement.at(now)
        return Decision(
            False,
            DecisionReason.STALE,
            f"no word from the license service for {since:.0f} s, longer than the "
            f"{self.max_staleness:g} s this client allows: cannot {operation.name.lower()} "
            f"{resource_type} until it answers again (fail-closed)",
            enforcement.warnings(now),
            enforcement.standing.state,
            enforcement.serial_number,
        )

    def _first_table(self) -> _Table:
        with self._changed:
            self._changed.wait_for(
                lambda: self._table is not None, max(0.0, self._first_deadline - time.monotonic())
            )
            table = self._table
        if table is not None:
            return table
        error = self.last_error
        raise SnapshotUnavailable(
            error.code if error else grpc.StatusCode.UNAVAILABLE,
            error.reason if error else "",
            "no decision snapshot from the license service yet"
            + (f": {error.message}" if error else ""),
        )

    # --- what callers may look at -----------------------------------------------------------

    @property
    def snapshot(self) -> pb.EnforcementSnapshot | None:
        """The snapshot decided from; None before the first."""
        table = self._table
        return table.snapshot if table else None

    @property
    def last_update(self) -> float | None:
        """When (this host's wall clock) the last message, a heartbeat included, arrived."""
        table = self._table
        return table.received_at if table else None

    @property
    def stale(self) -> bool:
        """Nothing has arrived for longer than max_staleness (or nothing at all yet)."""
        table = self._table
        if table is None:
            return True
        return self._clock.monotonic() - table.received_monotonic > self.max_staleness

    @property
    def updates(self) -> int:
        """How many snapshots have been applied: the first, and one per change or new stream."""
        return self._updates

    def wait_for_update(self, after: int, timeout: float) -> bool:
        """Wait until more than `after` snapshots have been applied; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._updates > after, timeout)

    # --- the background ---------------------------------------------------------------------

    def _subscribe(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            # the first message is due at once; heartbeats come at most 15 s apart
            self._last_message_at = time.monotonic()
            self._silence_limit = silence_limit(MAX_HEARTBEAT_INTERVAL)
            stream = self._client.watch_enforcement()
            self._stream = stream
            if self._stop.is_set():
                stream.cancel()
                break
            try:
                for message in stream:
                    self._receive(message)
                    attempt = 0
                error = None
            except LicensingError as failure:
                error = failure
            if self._stop.is_set():
                break
            self.last_error = error
            delay = self._backoff(attempt)
            attempt += 1
            log.warning(
                "the enforcement stream %s; deciding from the last snapshot, resubscribing "
                "in %.1f s",
                f"failed: {error}" if error else "ended",
                delay,
            )
            self._stop.wait(delay)

    def _backoff(self, attempt: int) -> float:
        """Exponential, capped, with jitter, so many clients do not retry in step."""
        ceiling = min(self._max_backoff, self._initial_backoff * 2.0 ** min(attempt, 32))
        return ceiling * random.uniform(0.5, 1.0)

    def _receive(self, message: pb.WatchEnforcementResponse) -> None:
        clock = self._clock
        self._last_message_at = time.monotonic()
        self._silence_limit = silence_limit(message.heartbeat_interval.ToNanoseconds() / 1e9)
        previous = self._table
        snapshot = message.snapshot
        renewed = (
            previous is not None
            and message.event
            in (pb.WATCH_ENFORCEMENT_EVENT_HEARTBEAT, pb.WATCH_ENFORCEMENT_EVENT_TIME_PASSED)
            and snapshot.version == previous.snapshot.version
        )
        if previous is not None and renewed:
            enforcement, responses = previous.enforcement, previous.responses
        else:
            try:
                enforcement = enforcement_from_proto(snapshot)
            except InvalidSnapshot as problem:
                # keep the last good snapshot; staying silent lets it go stale
                log.error("cannot decide from the service's snapshot: %s", problem)
                return
            responses = {}
        self._table = _Table(
            enforcement,
            snapshot,
            instant(message.send_time),
            clock.monotonic(),
            clock.now(),
            responses,
        )
        self.last_error = None
        if not renewed:
            with self._changed:
                self._updates += 1
                self._changed.notify_all()

    def _watchdog(self) -> None:
        """Drop a stream that fell silent (a peer gone without a word) so it is resubscribed."""
        while not self._stop.wait(WATCHDOG_PERIOD):
            stream = self._stream
            if (
                stream is not None
                and time.monotonic() - self._last_message_at > self._silence_limit
            ):
                log.warning("the enforcement stream fell silent; resubscribing")
                self._silence_limit = float("inf")
                stream.cancel()

    # --- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()
        for thread in self._threads:
            thread.join(DEFAULT_TIMEOUT)
        self._client.close()

    def __enter__(self) -> LocalDecider:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
