"""Bearer-token authentication and role checks: one check, used by the gRPC service's handler
lookup and the HTTP edge alike.

Tokens are compared in constant time and never logged. Methods without a
role entry (health, reflection) need no token.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
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
    SERVICE + "WatchEnforcement": frozenset({Role.ADMIN, Role.CONTROL_PLANE, Role.GATEWAY}),
}


def _refusal(status: grpc.Status) -> grpc.RpcMethodHandler:
    """A handler that answers at once, made once.

    It is request-streaming, so gRPC calls it as soon as the headers are in,
    before any message: a caller without a token is answered even if it never
    sends its request, and holds nothing on the server while it waits.
    """

    async def refuse(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        await abort_with(context, status)

    return grpc.stream_unary_rpc_method_handler(refuse)


class TokenCheck:
    """Who may call what: a bearer token's role, and the refusal of a call it may not make.

    The one check behind every edge (the gRPC handler lookup, the HTTP edge). Per
    call: one constant-time comparison with every configured token, and no
    allocation when the header has the usual form, `Bearer <token>`. The
    refusals are made once, at start.
    """

    def __init__(self, tokens: Mapping[Role, Iterable[str]]) -> None:
        configured = [(token, role) for role, values in tokens.items() for token in values]
        if not configured:
            raise ValueError("no tokens configured")
        self._tokens = [(token.encode(), role) for token, role in configured]
        # the header as clients send it, compared whole: no parsing on the hot path
        self._headers = [(f"Bearer {token}", role) for token, role in configured if token.isascii()]
        self.missing = rich_status(
            grpc.StatusCode.UNAUTHENTICATED,
            "MISSING_TOKEN",
            "send the header 'authorization: Bearer <token>'",
        )
        self.invalid = rich_status(
            grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN", "the bearer token is not valid"
        )
        self.forbidden = {
            method: rich_status(
                grpc.StatusCode.PERMISSION_DENIED,
                "ROLE_NOT_ALLOWED",
                f"{method.rsplit('/', 1)[-1]} needs the role "
                + " or ".join(sorted(r.value for r in roles)),
            )
            for method, roles in METHOD_ROLES.items()
        }

    def refusals(self) -> list[grpc.Status]:
        """Every status `refusal` can answer, for an edge that prepares its answers."""
        return [self.missing, self.invalid, *self.forbidden.values()]

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

    def refusal(self, method: str, header: str | None) -> grpc.Status | None:
        """None when `header` (the authorization value, None when absent) may call `method`
        (a full gRPC method name); else the status that refuses the call."""
        roles = METHOD_ROLES.get(method)
        if roles is None:
            return None
        if header is None:
            return self.missing
        role = self.role_of(header)
        if role is None:
            return self.invalid
        if role not in roles:
            return self.forbidden[method]
        return None


class AuthorizedService(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The service's method handlers behind the token check.

    gRPC asks for a call's handler with its method and metadata in hand, before
    any message: the answer is the method's own handler when the token's role
    may call it, else a refusal made at start. Per call: one dictionary lookup,
    one look through the metadata and the token check; no coroutine, no
    wrapping. With no token check (no tokens configured) every call is allowed.
    """

    def __init__(
        self, handlers: Mapping[str, grpc.RpcMethodHandler], check: TokenCheck | None
    ) -> None:
        self._handlers = dict(handlers)
        self._check = check
        self._refusals = (
            {id(status): _refusal(status) for status in check.refusals()} if check else {}
        )

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None or self._check is None:
            return handler
        header = None
        for key, value in handler_call_details.invocation_metadata:
            if key == "authorization":
                header = value
                break
        refusal = self._check.refusal(method, header)
        if refusal is None:
            return handler
        return self._refusals[id(refusal)]


def service_handlers(
    add_to_server: Callable[[Any, Any], None], servicer: Any
) -> dict[str, grpc.RpcMethodHandler]:
    """The method handlers the generated `add_..._to_server` makes, by full method name, without
    registering them anywhere (a registered method would bypass the check)."""

    class Capture:
        def __init__(self) -> None:
            self.found: dict[str, grpc.RpcMethodHandler] = {}

        def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
            pass

        def add_registered_method_handlers(
            self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
        ) -> None:
            self.found = {f"/{service}/{name}": handler for name, handler in handlers.items()}

    capture = Capture()
    add_to_server(servicer, capture)
    if not capture.found:
        raise RuntimeError("the generated code registered no method handlers")
    return capture.found
