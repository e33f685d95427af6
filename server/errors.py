"""The one place that turns a failure into a gRPC status with a google.rpc.ErrorInfo.

Bad input a rule refused is INVALID_ARGUMENT with the rule's reason. A store
that cannot read or write is UNAVAILABLE (STORAGE_UNAVAILABLE), anything
else unexpected INTERNAL (INTERNAL): the detail goes to the log, never into
the answer.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from licensing_server.domain.refusal import Refused
from licensing_server.store import StoreError

log = logging.getLogger("licensing")

ERROR_DOMAIN = "licensing.v1"

Servicer = TypeVar("Servicer")
Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Servicer, Request, grpc.aio.ServicerContext], Awaitable[Response]]


def rich_status(code: grpc.StatusCode, reason: str, message: str) -> grpc.Status:
    """A status whose details carry one ErrorInfo; `reason` is an ErrorReason name sans prefix."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=[detail])
    )


STORAGE_UNAVAILABLE = rich_status(
    grpc.StatusCode.UNAVAILABLE,
    "STORAGE_UNAVAILABLE",
    "the service cannot use its database right now: nothing was stored; try again later",
)
INTERNAL = rich_status(
    grpc.StatusCode.INTERNAL,
    "INTERNAL",
    "the service failed unexpectedly; its log has the detail",
)


async def abort_with(context: grpc.aio.ServicerContext, status: grpc.Status) -> NoReturn:
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("abort returns only by raising")


async def abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, reason: str, message: str
) -> NoReturn:
    await abort_with(context, rich_status(code, reason, message))


def failure_status(error: Exception, method: str) -> grpc.Status:
    """The answer to a call that raised `error`; what went wrong inside is logged here."""
    if isinstance(error, Refused):
        return rich_status(grpc.StatusCode.INVALID_ARGUMENT, error.reason, error.message)
    if isinstance(error, StoreError | sqlite3.Error):
        log.error("%s: the database failed: %s", method, error)
        return STORAGE_UNAVAILABLE
    log.error("%s failed unexpectedly", method, exc_info=error)
    return INTERNAL


def answers_failures(handler: Handler[Servicer, Request, Response]) -> Handler[Any, Any, Any]:
    """Wrap a servicer method once, at class definition, so every failure it raises is mapped."""
    method = handler.__name__

    @functools.wraps(handler)
    async def guarded(
        servicer: Servicer, request: Request, context: grpc.aio.ServicerContext
    ) -> Response:
        try:
            return await handler(servicer, request, context)
        except grpc.aio.AbortError:
            raise  # the handler answered already
        except Exception as error:
            await abort_with(context, failure_status(error, method))

    return guarded
