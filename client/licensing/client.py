"""A typed Python client for LicenseService over the generated stubs.

    from licensing.client import LicensingClient
    with LicensingClient("127.0.0.1:7443", token="...") as client:
        status = client.status()
        decision = client.check_write("route", Operation.CREATE)

Errors raise `LicensingError`, which carries the status code and the stable
reason code from the google.rpc.ErrorInfo in the status details.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

# one Operation for the client and the decision table; its values are the proto's
from licensing.decision import Operation as Operation
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
