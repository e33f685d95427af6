"""Bearer-token authentication and role checks, as one server interceptor.

Tokens are compared in constant time and never logged. Methods without a
role entry (health, reflection) need no token.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any

import grpc

from server.errors import rich_status

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
    status = rich_status(code, reason, message)

    def refuse(request: Any, context: grpc.ServicerContext) -> None:
        context.abort_with_status(status)

    return grpc.unary_unary_rpc_method_handler(refuse)


class BearerTokenAuth(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, tokens: Mapping[Role, Iterable[str]]) -> None:
        self._tokens = [
            (token.encode(), role) for role, values in tokens.items() for token in values
        ]
        if not self._tokens:
            raise ValueError("no tokens configured")
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

    def role_of(self, token: bytes) -> Role | None:
        """Compare against every configured token, in constant time, without stopping early."""
        found = None
        for known, role in self._tokens:
            if hmac.compare_digest(token, known):
                found = role
        return found

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        roles = METHOD_ROLES.get(handler_call_details.method)
        if roles is None:
            return continuation(handler_call_details)
        header = None
        for key, value in handler_call_details.invocation_metadata:
            if key == "authorization":
                header = value
                break
        if header is None:
            return self._missing
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return self._invalid
        role = self.role_of(token.strip().encode())
        if role is None:
            return self._invalid
        if role not in roles:
            return self._forbidden[handler_call_details.method]
        return continuation(handler_call_details)
