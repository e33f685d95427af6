"""The one place that turns a failure into a gRPC status with a google.rpc.ErrorInfo."""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.domain.refusal import Refused

ERROR_DOMAIN = "licensing.v1"


def rich_status(code: grpc.StatusCode, reason: str, message: str) -> grpc.Status:
    """A status whose details carry one ErrorInfo; `reason` is an ErrorReason name sans prefix."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=[detail])
    )


def refuse(context: grpc.ServicerContext, refusal: Refused) -> NoReturn:
    """Bad input a rule refused: INVALID_ARGUMENT with the rule's reason code."""
    abort(context, grpc.StatusCode.INVALID_ARGUMENT, refusal.reason, refusal.message)


def abort(
    context: grpc.ServicerContext, code: grpc.StatusCode, reason: str, message: str
) -> NoReturn:
    context.abort_with_status(rich_status(code, reason, message))
    raise AssertionError("abort_with_status returns only by raising")
