"""Bearer-token authentication and role checks, as one server interceptor.

Tokens are compared in constant time and never logged. Methods without a
role entry (health, reflection) need no token.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any, AnyStr

import grpc

from licensing_server.errors import abort_with, rich_status

SERVICE = "/licensing.v1.LicenseService/"


class Role(StrEnum):
    ADMIN = "admin"
    GATEWAY = "gateway"
    CONTROL_PLANE = "control-plane"


METHOD_ROLES: dict[str, frozenset[Role]] = {
    SERVICE + "Upload": frozenset({Role.ADMIN}),
    SERVICE + "Validate": frozenset({Role.ADMIN}),
    SERVICE + "GetStatus": frozenset({Role.ADMIN, Role.CONTROL_PLANE}),
    SERVICE + "ReportUsage": frozenset({Role.ADMIN, Role.GATEWAY}),
    SERVICE + "CheckWrite": frozenset({Role.ADMIN, Role.CONTROL_PLANE}),
    SERVICE + "GetUsageHistory": frozenset({Role.ADMIN, Role.CONTROL_PLANE}),
    SERVICE + "ListPeakInstances": frozenset({Role.ADMIN, Role.CONTROL_PLANE}),
}


def _refusal(code: grpc.StatusCode, reason: str, message: str) -> grpc.RpcMethodHandler:
    """A handler that answers at once, made once.

    It is request-streaming, so gRPC calls it as soon as the headers are in,
    before any message: a caller without a token is answered even if it never
    sends its request, and holds nothing on the server while it waits.
    """
    status = rich_status(code, reason, message)

    async def refuse(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        await abort_with(context, status)

    return grpc.stream_unary_rpc_method_handler(refuse)


class BearerTokenAuth(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Checks every call to the service; hands back gRPC's own handler or a ready refusal.

    Per call: one look through the metadata and one constant-time comparison
    with every configured token; no wrapping and no allocation when the
    header has the usual form, `Bearer <token>`.
    """

    def __init__(self, tokens: Mapping[Role, Iterable[str]]) -> None:
        configured = [(token, role) for role, values in tokens.items() for token in values]
        if not configured:
            raise ValueError("no tokens configured")
        self._tokens = [(token.encode(), role) for token, role in configured]
        # the header as clients send it, compared whole: no parsing on the hot path
        self._headers = [(f"Bearer {token}", role) for token, role in configured if token.isascii()]
        self._missing = _refusal(
            grpc.StatusCode.UNAUTHENTICATED,
            "MISSING_TOKEN",
            "send 'authorization: Bearer <token>' metadata",
        )
        self._invalid = _refusal(
            grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN", "the bearer token is not valid"
        )
        self._forbidden = {
            method: _refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                "ROLE_NOT_ALLOWED",
                f"{method.rsplit('/', 1)[-1]} needs the role "
                + " or ".join(sorted(r.value for r in roles)),
            )
            for method, roles in METHOD_ROLES.items()
        }

    @staticmethod
    def _match(presented: AnyStr, known: list[tuple[AnyStr, Role]]) -> Role | None:
        """Compare against every entry, in constant time, without stopping early."""
        found = None
        for candidate, role in known:
            if hmac.compare_digest(presented, candidate):
                found = role
        return found

    def role_of(self, header: str) -> Role | None:
        """The role of an authorization header's bearer token, or None."""
        if header.isascii():  # compare_digest takes ASCII text as it is
            role = self._match(header, self._headers)
            if role is not None:
                return role
        # any other spelling of the scheme, or spaces around the token
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self._match(token.strip().encode("utf-8", "surrogateescape"), self._tokens)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        roles = METHOD_ROLES.get(method)
        if roles is None:
            return await continuation(handler_call_details)
        header = None
        for key, value in handler_call_details.invocation_metadata:
            if key == "authorization":
                header = value
                break
        if header is None:
            return self._missing
        role = self.role_of(header)
        if role is None:
            return self._invalid
        if role not in roles:
            return self._forbidden[method]
        return await continuation(handler_call_details)
