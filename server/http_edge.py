"""The HTTP edge: the seed's Admin API over HTTPS/JSON, beside gRPC, on the same event loop.

aiohttp's web server does the HTTP (no hand-written parsing); the routes come
from the proto's `google.api.http` annotations (`server.transcoding`). A
request passes the middlewares, outermost first: metrics (when on), failures
(every refusal and failure becomes a `google.rpc.Status` in JSON, with the
HTTP status grpc-gateway gives its gRPC code), auth (the same token check and
role table as gRPC's handler lookup). Then the route's handler turns JSON into
the request message and awaits the very coroutine gRPC calls on the same
`LicenseServicer` (the same checks, reason codes, logs and audit trail), and
writes the response message as JSON. Every answer carries strict security
headers.

Beside the API it serves the license console (`server.console`): a static page
and its assets, which need no token; the page calls the API with the token the
operator signs in with.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

import grpc
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from google.protobuf.message import Message
from google.rpc import status_pb2
from licensing.v1 import licensing_pb2

from licensing_server.auth import TokenCheck
from licensing_server.config import join_host_port
from licensing_server.console import console_routes
from licensing_server.domain.refusal import Refused, quote
from licensing_server.errors import failure_status, rich_status
from licensing_server.metrics import HttpMetrics
from licensing_server.servicer import LicenseServicer
from licensing_server.transcoding import (
    HttpRoute,
    admin_api_routes,
    message_json,
    request_from_body,
    request_from_query,
)

SERVICE = licensing_pb2.DESCRIPTOR.services_by_name["LicenseService"]
# a license is at most 64 KiB; anything larger than this is not a request of ours
MAX_BODY_BYTES = 1024 * 1024
JSON = "application/json"
# grpc-gateway's runtime/errors.go HTTPStatusFromCode: the HTTP status of a gRPC code
HTTP_STATUS_OF_CODE = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 408,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
CODE_OF_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
# API answers are JSON for programs: nothing may run, frame, sniff or cache them
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    # no version for a scanner to match against
    "Server": "license-server",
}
ROUTE = web.RequestKey("route", HttpRoute)
# metric labels for what no route matched: a client cannot invent label values
UNMATCHED = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EdgeRefusal(Exception):
    """A request refused by the HTTP edge itself, with an HTTP status of its own (as
    grpc-gateway's HTTPStatusError): 408, 413, 415, 404, 405."""

    def __init__(self, http_status: int, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.status = rich_status(code, reason, message)


class Aborted(grpc.aio.AbortError):  # type: ignore[misc]
    """The servicer answered with a status (its `context.abort`); the edge writes it."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__()
        self.status = status


class HttpCallContext:
    """The part of a gRPC servicer context the servicer's coroutines use: `abort`.

    The edge calls the servicer in process, as grpc-gateway's
    `Register...HandlerServer` calls a server implementation: no second copy
    of the conversions, the caches or the failure mapping.
    """

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Iterable[tuple[str, str | bytes]] = (),
    ) -> NoReturn:
        raise Aborted(status_message(code, details, trailing_metadata))


CONTEXT = HttpCallContext()


def status_message(
    code: grpc.StatusCode, details: str, trailing_metadata: Iterable[tuple[str, str | bytes]]
) -> status_pb2.Status:
    """The google.rpc.Status a gRPC answer carries in its details, or one made of its code."""
    for key, value in trailing_metadata:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return status_pb2.Status(code=code.value[0], message=details)


def _as_message(status: grpc.Status) -> status_pb2.Status:
    return status_message(status.code, status.details, status.trailing_metadata)


def error_response(status: status_pb2.Status, http_status: int | None = None) -> web.Response:
    """An error as Envoy and grpc-gateway write it: google.rpc.Status as JSON."""
    if http_status is None:
        code = CODE_OF_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
        http_status = HTTP_STATUS_OF_CODE.get(code, 500)
    return web.Response(status=http_status, body=message_json(status), content_type=JSON)


async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    # the console's page and assets set their own policy (the page runs its own scripts and
    # styles), which stands; every other answer gets the API's
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    # aiohttp has already named itself (and its version) by now
    response.headers["Server"] = SECURITY_HEADERS["Server"]


class ClientFaultLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's log of requests it could not parse: only the kind of fault, never the bytes
    (they may hold a token), and at DEBUG: a client's malformed request is not the operator's
    error. Anything else is logged as it is."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(error, HttpProcessingError):
            kwargs.pop("exc_info", None)
            self.logger.log(
                logging.DEBUG, f"{msg} (%s, HTTP {error.code})", *args, type(error).__name__
            )
            return
        self.logger.log(level, msg, *args, **kwargs)


class HttpEdge:
    """The Admin API's aiohttp application and its listener."""

    def __init__(
        self,
        servicer: LicenseServicer,
        check: TokenCheck | None,
        metrics: HttpMetrics | None,
        body_timeout: float,
        idle_timeout: float,
    ) -> None:
        self._servicer = servicer
        self._check = check
        self._metrics = metrics
        self._body_timeout = body_timeout
        self._idle_timeout = idle_timeout
        self.routes = admin_api_routes(SERVICE)
        self._by_method_and_path: dict[tuple[str, str], list[HttpRoute]] = {}
        for route in self.routes:
            self._by_method_and_path.setdefault((route.http_method, route.path), []).append(route)
        for (method, path), routes in self._by_method_and_path.items():
            if sum(route.selector is None for route in routes) != 1:
                raise ValueError(f"{method} {path} needs exactly one route without a selector")
        # the last answer written, reused while the servicer hands back the same message
        # (GetStatus does, until something it shows changes)
        self._last_json: tuple[Message, bytes] | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        # HOST:PORT as bound, for the log (port 0 was a free one)
        self.address = ""

    def application(self) -> web.Application:
        middlewares = [self._answers_failures, self._authenticated]
        if self._metrics is not None:
            middlewares.insert(0, self._measured)
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
        # one table: one aiohttp route per HTTP method and path, from the proto's annotations,
        # grouped by path so each path is one aiohttp resource
        by_path = sorted(self._by_method_and_path, key=lambda method_and_path: method_and_path[1])
        app.add_routes(web.route(method, path, self._handle) for method, path in by_path)
        # the license console: a page that calls the routes above, with the caller's token
        app.add_routes(console_routes())
        app.on_response_prepare.append(_add_security_headers)
        return app

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        """Listen (raises OSError when the address is taken); returns the port bound."""
        self._runner = web.AppRunner(
            self.application(),
            access_log=None,  # like gRPC calls: changes are logged by the service, not requests
            logger=ClientFaultLog(logging.getLogger("licensing.http"), {}),
            keepalive_timeout=self._idle_timeout,
        )
        await self._runner.setup()
        # two servers must never silently share a port
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context, reuse_port=False)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.port = int(bound_port)
        self.address = join_host_port(str(bound_host), self.port)
        return self.port

    async def stop(self, grace: float) -> None:
        """Stop listening, let requests in progress finish for up to `grace` s, close."""
        runner = self._runner
        if runner is None:
            return
        self._runner = None
        for site in list(runner.sites):
            await site.stop()
        server = runner.server
        if server is not None:
            server.pre_shutdown()  # idle keep-alive connections close now
            await server.shutdown(grace)
        await runner.cleanup()

    # --- middlewares, outermost first ---

    @web.middleware
    async def _measured(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        assert self._metrics is not None
        began = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            route = request.get(ROUTE)
            method = request.method if request.method in KNOWN_METHODS else "other"
            label = route.label if route is not None else UNMATCHED
            self._metrics.observe(method, label, status, time.perf_counter() - began)

    @web.middleware
    async def _answers_failures(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Aborted as aborted:
            return error_response(aborted.status)
        except EdgeRefusal as refusal:
            response = error_response(_as_message(refusal.status), refusal.http_status)
            if refusal.http_status == 408:
                await _answer_and_close(request, response)
            # (a body refused for its size is read and dropped by aiohttp's lingering close,
            # bounded in time, so its client sees the answer)
            return response
        except web.HTTPException as http_error:
            return self._http_error(request, http_error)
        except Exception as error:
            route = request.get(ROUTE)
            return error_response(_as_message(failure_status(error, route.rpc if route else "")))

    @web.middleware
    async def _authenticated(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        routes = self._routes_of(request)
        if routes is None:
            return await handler(request)  # no route: the handler raises 404 or 405
        route = _select(routes, request)
        request[ROUTE] = route
        if self._check is not None:
            refusal = self._check.refusal(route.grpc_method, request.headers.get("Authorization"))
            if refusal is not None:
                return error_response(_as_message(refusal))
        return await handler(request)

    # --- the one handler ---

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = request[ROUTE]
        if route.body:
            _refuse_query(route, request.query.items())
            message = request_from_body(route, await self._body(request))
        else:
            message = request_from_query(route, request.query.items())
        response = await getattr(self._servicer, route.rpc)(message, CONTEXT)
        last = self._last_json
        if last is not None and last[0] is response:
            body = last[1]
        else:
            body = message_json(response)
            self._last_json = (response, body)
        return web.Response(body=body, content_type=JSON)

    async def _body(self, request: web.Request) -> bytes:
        if request.content_type != JSON or (request.charset or "utf-8").lower() not in (
            "utf-8",
            "utf8",
        ):
            raise EdgeRefusal(
                415,
                grpc.StatusCode.INVALID_ARGUMENT,
                "UNSUPPORTED_MEDIA_TYPE",
                "send the body as Content-Type: application/json (UTF-8); got "
                + quote(request.headers.get("Content-Type", "none")),
            )
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise _too_large()
        try:
            async with asyncio.timeout(self._body_timeout):
                return await request.read()
        except TimeoutError:
            raise EdgeRefusal(
                408,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "REQUEST_TIMEOUT",
                f"the body did not arrive within {self._body_timeout:g} s",
            ) from None
        except web.HTTPRequestEntityTooLarge:
            raise _too_large() from None
        except ConnectionError:
            # the client hung up: nobody reads this answer, but the metrics count it
            raise EdgeRefusal(
                408,
                grpc.StatusCode.CANCELLED,
                "REQUEST_TIMEOUT",
                "the client closed the connection before its body arrived",
            ) from None

    def _routes_of(self, request: web.Request) -> list[HttpRoute] | None:
        if request.match_info.http_exception is not None:
            return None
        resource = request.match_info.route.resource
        if resource is None:
            return None
        # aiohttp answers HEAD with GET's handler, without the body, as HTTP says
        method = "GET" if request.method == "HEAD" else request.method
        return self._by_method_and_path.get((method, resource.canonical))

    def _http_error(self, request: web.Request, error: web.HTTPException) -> web.Response:
        """aiohttp's own refusals (no route, wrong method, too large) in the same JSON shape."""
        method = request.method if request.method in KNOWN_METHODS else quote(request.method, 16)
        where = f"{method} {quote(request.path, 80)}"
        if isinstance(error, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(error.allowed_methods))
            refusal = EdgeRefusal(
                405,
                grpc.StatusCode.UNIMPLEMENTED,
                "METHOD_NOT_ALLOWED",
                f"{where}: the path takes {allowed}",
            )
            response = error_response(_as_message(refusal.status), 405)
            response.headers["Allow"] = ",".join(sorted(error.allowed_methods))
            return response
        if isinstance(error, web.HTTPNotFound):
            routes = ", ".join(sorted({f"{m} {p}" for m, p in self._by_method_and_path}))
            refusal = EdgeRefusal(
                404,
                grpc.StatusCode.NOT_FOUND,
                "ROUTE_NOT_FOUND",
                f"no route for {where}; the routes are {routes}",
            )
        elif isinstance(error, web.HTTPRequestEntityTooLarge):
            refusal = _too_large()
        else:
            code = (
                grpc.StatusCode.INTERNAL
                if error.status >= 500
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            refusal = EdgeRefusal(error.status, code, "INVALID_ARGUMENT", error.reason)
        return error_response(_as_message(refusal.status), refusal.http_status)


async def _answer_and_close(request: web.Request, response: web.Response) -> None:
    """Send the answer now and close the connection: a client too slow to send its body gets
    no more time, not even aiohttp's lingering read of the rest."""
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # it hung up already
    request.protocol.force_close()  # the answer is flushed before the socket closes


def _too_large() -> EdgeRefusal:
    return EdgeRefusal(
        413,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "REQUEST_TOO_LARGE",
        f"the body is larger than {MAX_BODY_BYTES} bytes",
    )


def _select(routes: list[HttpRoute], request: web.Request) -> HttpRoute:
    """The route a query selector picks (`?dry-run=all`), or the one without a selector."""
    plain = routes[0]
    for route in routes:
        selector = route.selector
        if selector is None:
            plain = route
            continue
        if selector.name in request.query:
            if request.query.getall(selector.name) != [selector.value]:
                raise Refused(
                    "INVALID_QUERY_PARAMETER",
                    f"{selector.name} must be {selector.value!r} (the only value it takes)",
                )
            return route
    return plain


def _refuse_query(route: HttpRoute, query: Iterable[tuple[str, str]]) -> None:
    """A route whose body is the whole request takes no query parameter but its selector."""
    for name, _value in query:
        if route.selector is None or name != route.selector.name:
            raise Refused(
                "INVALID_QUERY_PARAMETER",
                f"{route.http_method} {route.path} takes no query parameter {quote(name)}",
            )


def tls_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or later, HTTP/1.1) from PEM files; raises OSError or
    ssl.SSLError when they cannot be read."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    context.set_alpn_protocols(["http/1.1"])
    return context
