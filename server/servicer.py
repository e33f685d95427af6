"""The gRPC edge: proto in, a call on the service, proto out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from licensing.decision import INVALID_OPERATION
from licensing.snapshot import STATES, decision_proto, timestamp, warning_proto
from licensing.v1 import licensing_pb2 as pb
from licensing.v1 import licensing_pb2_grpc

from licensing_server.domain.decision import Decision, Operation
from licensing_server.domain.license import Deployment, License
from licensing_server.domain.usage import DEFAULT_HISTORY_DAYS, check_history_request
from licensing_server.errors import abort, abort_with, answers_failures, failure_status
from licensing_server.group_commit import GroupCommit
from licensing_server.paging import requested_page
from licensing_server.service import (
    DayRecord,
    LicenseFileReport,
    LicenseSource,
    LicensingService,
    StateChange,
    Status,
)
from licensing_server.watch import EnforcementFeed, TooManyWatchers

DECISION_CACHE_SIZE = 64

T = TypeVar("T")

SOURCES = {
    LicenseSource.UPLOAD: pb.LICENSE_SOURCE_UPLOAD,
    LicenseSource.FILE: pb.LICENSE_SOURCE_FILE,
}
OPERATIONS = {
    pb.OPERATION_CREATE: Operation.CREATE,
    pb.OPERATION_UPDATE: Operation.UPDATE,
    pb.OPERATION_DELETE: Operation.DELETE,
    pb.OPERATION_READ: Operation.READ,
}


def duration(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))


def license_proto(lic: License, deployment: Deployment) -> pb.License:
    return pb.License(
        serial_number=lic.serial_number,
        customer=lic.customer,
        effective_time=timestamp(lic.effective_at),
        expiration_time=timestamp(lic.expires_at),
        max_dp_cores=lic.max_dp_cores,
        features=lic.features,
        deployment_id=lic.deployment_id,
        free_trial=lic.free_trial,
        end_time=timestamp(lic.ends_at(deployment)),
        key_id=lic.key_id,
    )


def day_proto(record: DayRecord, with_instances: bool) -> pb.DayUsage:
    message = pb.DayUsage(
        day=record.day,
        peak_cores=record.peak_cores,
        max_dp_cores=record.max_dp_cores or 0,
        state_before=STATES[record.state_before],
        state_after=STATES[record.state_after],
        evaluation_time=timestamp(record.evaluated_at),
        license_serial_number=record.license_serial_number,
    )
    if record.peak_at is not None:
        message.peak_time.CopyFrom(timestamp(record.peak_at))
    if record.grace_ends_at is not None:
        message.grace_end_time.CopyFrom(timestamp(record.grace_ends_at))
    if record.starts_at is not None and record.ends_at is not None:
        message.start_time.CopyFrom(timestamp(record.starts_at))
        message.end_time.CopyFrom(timestamp(record.ends_at))
    if record.observed_seconds is not None:
        message.observed_duration.CopyFrom(duration(record.observed_seconds))
    message.observed = record.observed
    if with_instances:
        message.peak_instances.extend(
            pb.InstanceUsage(instance_id=i, cores=c) for i, c in record.peak_instances
        )
        message.peak_instances_truncated = record.peak_instances_truncated
    return message


def state_change_proto(change: StateChange) -> pb.StateChange:
    message = pb.StateChange(
        change_time=timestamp(change.changed_at),
        state_before=STATES[change.state_before],
        state_after=STATES[change.state_after],
        cause=change.cause,
    )
    if change.grace_ends_at is not None:
        message.grace_end_time.CopyFrom(timestamp(change.grace_ends_at))
    return message


def license_file_proto(report: LicenseFileReport) -> pb.LicenseFileStatus:
    message = pb.LicenseFileStatus(
        path=report.path,
        content_sha256=report.content_sha256,
        last_error=report.last_error,
        last_error_reason=pb.ErrorReason.Value("ERROR_REASON_" + report.last_error_reason)
        if report.last_error_reason
        else pb.ERROR_REASON_UNSPECIFIED,
    )
    if report.last_read_at is not None:
        message.last_read_time.CopyFrom(timestamp(report.last_read_at))
    if report.last_applied_at is not None:
        message.last_applied_time.CopyFrom(timestamp(report.last_applied_at))
    return message


class Offload(Protocol):
    """Runs blocking work off the event loop (see ServerLoop.offload)."""

    def __call__(self, function: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


class LicenseServicer(licensing_pb2_grpc.LicenseServiceServicer):
    """Coroutines on the server's event loop.

    CheckWrite and GetStatus read memory only and are answered on the loop;
    whatever touches the database or verifies a signature is offloaded.
    """

    def __init__(
        self,
        service: LicensingService,
        offload: Offload,
        feed: EnforcementFeed,
        commit_lane: Offload,
    ) -> None:
        self._service = service
        self._offload = offload
        # usage commits run one at a time, on a thread of their own
        self._group_commit = GroupCommit(service.commit_usage, commit_lane)
        self._feed = feed
        self._deployment = service.deployment
        self._decisions: dict[int, tuple[Decision, pb.CheckWriteResponse]] = {}
        self._last_status: tuple[Status, pb.GetStatusResponse] | None = None

    @answers_failures
    async def Upload(
        self, request: pb.UploadRequest, context: grpc.aio.ServicerContext
    ) -> pb.UploadResponse:
        outcome = await self._offload(self._service.upload, request.license)
        response = pb.UploadResponse(
            license=license_proto(outcome.license, self._deployment),
            pending=outcome.pending,
            unchanged=outcome.unchanged,
            state=STATES[outcome.standing.state],
        )
        if outcome.standing.grace_ends_at is not None:
            response.grace_end_time.CopyFrom(timestamp(outcome.standing.grace_ends_at))
        return response

    @answers_failures
    async def Validate(
        self, request: pb.ValidateRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateResponse:
        result = await self._offload(self._service.validate, request.license)
        response = pb.ValidateResponse(
            valid=result.valid,
            message=result.message,
            pending=result.pending,
            already_active=result.already_active,
            last_evaluated_day=result.last_evaluated_day,
            last_evaluated_peak_cores=result.last_evaluated_peak_cores,
            core_headroom=result.core_headroom,
            features_gained=result.features_gained,
            features_lost=result.features_lost,
            days_until_expiration=result.days_until_expiration,
        )
        if result.reason is not None:
            response.reason = pb.LicenseRejectionReason.Value(
                "LICENSE_REJECTION_REASON_" + result.reason.value
            )
        if result.license is not None:
            response.license.CopyFrom(license_proto(result.license, self._deployment))
        if result.resulting is not None:
            response.resulting_state = STATES[result.resulting.state]
            if result.resulting.grace_ends_at is not None:
                response.resulting_grace_end_time.CopyFrom(
                    timestamp(result.resulting.grace_ends_at)
                )
        return response

    @answers_failures
    async def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatusResponse:
        status = self._service.status()
        last = self._last_status
        if last is not None and last[0] is status:
            return last[1]
        response = self._status_response(status)
        self._last_status = (status, response)
        return response

    def _status_response(self, status: Status) -> pb.GetStatusResponse:
        clock = status.clock
        response = pb.GetStatusResponse(
            state=STATES[status.standing.state],
            deployment_id=status.deployment.deployment_id,
            deployment_time=timestamp(status.deployment.deployment_time),
            license_valid=status.active is not None
            and status.license_ends_at is not None
            and status.now < status.license_ends_at,
            days_until_expiration=status.days_until_expiration,
            warnings=[warning_proto(w) for w in status.warnings],
            current_total_cores=status.current_total_cores,
            live_instances=status.live_instances,
            development_mode=status.development_mode,
            clock=pb.ClockStatus(
                system_time=timestamp(clock.system_time),
                high_water_time=timestamp(clock.high_water_at),
                moved_back=clock.moved_back,
            ),
        )
        # a clock that never moved back has no step: unset, not "0s"
        if clock.moved_back:
            response.clock.last_backward_step.CopyFrom(duration(clock.last_backward_step))
        if clock.last_backward_step_at is not None:
            response.clock.last_backward_step_time.CopyFrom(timestamp(clock.last_backward_step_at))
        if status.active is not None:
            response.license.CopyFrom(license_proto(status.active.license, status.deployment))
            response.license_source = SOURCES[status.active.source]
            response.license_applied_time.CopyFrom(timestamp(status.active.applied_at))
        if status.pending is not None:
            response.pending_license.CopyFrom(
                license_proto(status.pending.license, status.deployment)
            )
        if status.standing.grace_ends_at is not None:
            response.grace_end_time.CopyFrom(timestamp(status.standing.grace_ends_at))
        if status.standing.episode_grace_ends_at is not None:
            response.episode_grace_end_time.CopyFrom(
                timestamp(status.standing.episode_grace_ends_at)
            )
        if status.last_evaluation is not None:
            response.last_evaluated_day.CopyFrom(
                day_proto(status.last_evaluation, with_instances=False)
            )
        if status.license_file is not None:
            response.license_file.CopyFrom(license_file_proto(status.license_file))
        if status.last_state_change is not None:
            response.last_state_change.CopyFrom(state_change_proto(status.last_state_change))
        return response

    @answers_failures
    async def ReportUsage(
        self, request: pb.ReportUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportUsageResponse:
        # applied in memory here, on the loop; answered once a commit carried it, together
        # with the others recorded meanwhile
        recorded = self._service.record_usage(request.instance_id, request.cores, request.stopping)
        await self._group_commit.wait(recorded.ticket)
        if recorded.ticket.error is not None:
            await self._offload(self._service.usage_refused, recorded)
        outcome = recorded.outcome
        return pb.ReportUsageResponse(
            state=STATES[outcome.state],
            next_report_in=duration(outcome.next_report_in),
            receive_time=timestamp(outcome.received_at),
        )

    @answers_failures
    async def CheckWrite(
        self, request: pb.CheckWriteRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckWriteResponse:
        operation = OPERATIONS.get(request.operation)
        if operation is None:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, *INVALID_OPERATION)
        decision = self._service.check_write(request.resource_type, operation, request.feature)
        # most answers are one of a few ready Decisions: reuse their built responses
        cached = self._decisions.get(id(decision))
        if cached is not None and cached[0] is decision:
            return cached[1]
        response = decision_proto(decision)
        if len(self._decisions) >= DECISION_CACHE_SIZE:
            self._decisions.clear()
        self._decisions[id(decision)] = (decision, response)
        return response

    @answers_failures
    async def GetUsageHistory(
        self, request: pb.GetUsageHistoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUsageHistoryResponse:
        check_history_request(request.days, request.day)
        day = request.day or None
        history = await self._offload(
            partial(
                self._service.usage_history,
                request.days or DEFAULT_HISTORY_DAYS,
                with_instances=request.include_peak_instances,
                day=day,
            )
        )
        return pb.GetUsageHistoryResponse(
            days=[
                day_proto(d, with_instances=request.include_peak_instances) for d in history.days
            ],
            state_changes=[state_change_proto(c) for c in history.state_changes],
            max_dp_cores=history.max_dp_cores or 0,
        )

    @answers_failures
    async def ListPeakInstances(
        self, request: pb.ListPeakInstancesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPeakInstancesResponse:
        page = requested_page(
            f"peak-instances/{request.day}", request.page_size, request.page_token
        )
        found = await self._offload(
            self._service.peak_instances, request.day, page.offset, page.size
        )
        if found is None:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                "DAY_NOT_EVALUATED",
                f"{request.day} has not been evaluated",
            )
        return pb.ListPeakInstancesResponse(
            instances=[pb.InstanceUsage(instance_id=i, cores=c) for i, c in found.instances],
            next_page_token=page.next_token(found.total),
            total_size=found.total,
        )

    async def WatchEnforcement(
        self, request: pb.WatchEnforcementRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchEnforcementResponse]:
        try:
            watcher = self._feed.subscribe()
        except TooManyWatchers as refusal:
            await abort(
                context, grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_WATCHERS", str(refusal)
            )
        # a watcher that reads slowly waits in the send; changes meanwhile only update what
        # it owes, so it never holds more than one message
        with watcher:
            while True:
                try:
                    message = await watcher.next_message()
                except Exception as error:
                    await abort_with(context, failure_status(error, "WatchEnforcement"))
                if message is None:
                    return
                yield message
