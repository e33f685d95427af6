"""HTTP/JSON to the service's proto messages and back, as google/api/http.proto describes.

The routes are read from the `google.api.http` annotations in the proto, so
the proto is their one source: `PUT /api/license` is Upload with the whole
body as the request, `GET /api/license/usage` is GetUsageHistory with its
request fields as query parameters. JSON is the protobuf JSON mapping with
the proto field names (`max_dp_cores`, as the seed writes it) and enum value
names, as Envoy's gRPC-JSON transcoder and grpc-gateway write it. Nothing
here knows aiohttp; refusals are `Refused`, so they map to a status as any
other bad input does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from google.api import annotations_pb2, http_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from licensing_server.domain.refusal import Refused, quote

# how much of a parse error's text an answer may quote (it can hold request text)
ERROR_DETAIL_CHARS = 120
# http.proto: values of a bool query parameter, as grpc-gateway reads them
BOOLEANS = {
    "true": True,
    "True": True,
    "TRUE": True,
    "t": True,
    "1": True,
    "false": False,
    "False": False,
    "FALSE": False,
    "f": False,
    "0": False,
}


@dataclass(frozen=True)
class QuerySelector:
    """A query parameter that picks a route among those of one method and path."""

    name: str
    value: str

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP method and path, and the RPC it calls."""

    http_method: str
    path: str
    # the full gRPC method name, as the role table knows it: /licensing.v1.LicenseService/Upload
    grpc_method: str
    # the RPC's name on the servicer: Upload
    rpc: str
    # "*": the body is the whole request message; "": there is no body, the request's fields
    # are query parameters
    body: str
    request_type: type[Message]
    selector: QuerySelector | None = None

    @property
    def label(self) -> str:
        """The route as a metric label or a log names it."""
        return self.path if self.selector is None else f"{self.path}?{self.selector}"


def _route(
    method: MethodDescriptor, rule: http_pb2.HttpRule, selector: QuerySelector | None = None
) -> HttpRoute:
    kind = rule.WhichOneof("pattern")
    where = f"{method.full_name}: google.api.http"
    if kind is None or kind == "custom":
        raise ValueError(f"{where} has no GET, PUT, POST, DELETE or PATCH pattern")
    path: str = getattr(rule, kind)
    if "{" in path or not path.startswith("/"):
        raise ValueError(f"{where} path {path!r}: only literal paths are served")
    if rule.body not in ("", "*") or rule.response_body:
        raise ValueError(f"{where}: only body '*' or none, and the whole response, are served")
    if method.client_streaming or method.server_streaming:
        raise ValueError(f"{where}: only unary methods are served over HTTP")
    return HttpRoute(
        http_method=kind.upper(),
        path=path,
        grpc_method=f"/{method.containing_service.full_name}/{method.name}",
        rpc=method.name,
        body=rule.body,
        request_type=GetMessageClass(method.input_type),
        selector=selector,
    )


def annotated_routes(service: ServiceDescriptor) -> list[HttpRoute]:
    """Every route the service's `google.api.http` annotations declare, in proto order."""
    routes = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        rule = options.Extensions[annotations_pb2.http]
        for binding in (rule, *rule.additional_bindings):
            routes.append(_route(method, binding))
    return routes


# The seed validates with `PUT /api/license?dry-run=all` (Kubernetes' spelling), which no
# annotation can say: a query parameter on Upload's route that turns it into Validate.
SEED_DRY_RUN = QuerySelector("dry-run", "all")


def admin_api_routes(service: ServiceDescriptor) -> list[HttpRoute]:
    """The annotated routes, and the seed's dry-run on Upload's route calling Validate."""
    routes = annotated_routes(service)
    by_rpc = {route.rpc: route for route in routes}
    upload, validate = by_rpc["Upload"], by_rpc["Validate"]
    dry_run = HttpRoute(
        http_method=upload.http_method,
        path=upload.path,
        grpc_method=validate.grpc_method,
        rpc=validate.rpc,
        body=validate.body,
        request_type=validate.request_type,
        selector=SEED_DRY_RUN,
    )
    return [*routes, dry_run]


def _refuse_body(route: HttpRoute, detail: str) -> Refused:
    return Refused(
        "INVALID_REQUEST_BODY",
        f"the body must be JSON of {route.request_type.DESCRIPTOR.full_name}, e.g. "
        f'{{"license": "<license text>"}}: {detail}',
    )


def request_from_body(route: HttpRoute, body: bytes) -> Message:
    """The request message from a JSON body (`body: "*"`); unknown fields are refused."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _refuse_body(route, f"it is not UTF-8 (byte {error.start})") from None
    if not text.strip():
        raise _refuse_body(route, "it is empty")
    request = route.request_type()
    try:
        json_format.Parse(text, request, ignore_unknown_fields=False)
    except json_format.ParseError as error:
        raise _refuse_body(route, quote(str(error), ERROR_DETAIL_CHARS)) from None
    except RecursionError:  # JSON nested deeper than the parser goes
        raise _refuse_body(route, "it is nested too deeply") from None
    return request


def _query_value(field: FieldDescriptor, name: str, value: str) -> Any:
    """A query parameter's text as the JSON value json_format takes for the field."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        raise Refused(
            "INVALID_QUERY_PARAMETER", f"query parameter {quote(name)} is not a plain field"
        )
    if field.type == FieldDescriptor.TYPE_BOOL:
        if value not in BOOLEANS:
            raise Refused(
                "INVALID_QUERY_PARAMETER",
                f"query parameter {quote(name)} must be true or false; got {quote(value)}",
            )
        return BOOLEANS[value]
    return value  # json_format reads numbers and enum names from their text


def request_from_query(route: HttpRoute, query: Iterable[tuple[str, str]]) -> Message:
    """The request message from query parameters named by the request's fields (a route
    without a body); the route's own selector is not a field and is skipped."""
    descriptor = route.request_type.DESCRIPTOR
    values: dict[str, Any] = {}
    for name, value in query:
        if route.selector is not None and name == route.selector.name:
            continue
        field = cast(
            FieldDescriptor | None,
            descriptor.fields_by_name.get(name) or descriptor.fields_by_camelcase_name.get(name),
        )
        if field is None:
            raise Refused(
                "INVALID_QUERY_PARAMETER",
                f"{route.http_method} {route.path} takes no query parameter {quote(name)}; it "
                f"takes {', '.join(descriptor.fields_by_name) or 'none'}",
            )
        converted = _query_value(field, name, value)
        if field.is_repeated:
            values.setdefault(field.name, []).append(converted)
        elif field.name in values:
            raise Refused(
                "INVALID_QUERY_PARAMETER", f"query parameter {quote(name)} is given twice"
            )
        else:
            values[field.name] = converted
    request = route.request_type()
    try:
        json_format.ParseDict(values, request, ignore_unknown_fields=False)
    except json_format.ParseError as error:
        raise Refused(
            "INVALID_QUERY_PARAMETER",
            f"a query parameter does not fit {descriptor.full_name}: "
            + quote(str(error), ERROR_DETAIL_CHARS),
        ) from None
    return request


def message_json(message: Message) -> bytes:
    """The protobuf JSON mapping with proto field names and every field shown, UTF-8."""
    text = json_format.MessageToJson(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        ensure_ascii=False,
        indent=2,
    )
    return (text + "\n").encode("utf-8")
