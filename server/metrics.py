"""Prometheus metrics: RPC timings and write decisions counted on the way, the rest read at scrape.

The gauges come from `LicensingService.status()` when Prometheus scrapes, so
they cost the hot path nothing. The RPC histogram and the decision counter are
updated by one server interceptor whose per-call work is two clock reads and
pre-bound children (no label lookups, no allocations beyond the call itself).
Each server has its own registry, so several can run in one process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from licensing.v1 import licensing_pb2 as pb
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from licensing_server.config import join_host_port, split_host_port
from licensing_server.domain.runtime import RuntimeState
from licensing_server.service import LicensingService

# 50 us .. 1 s: CheckWrite is answered from memory in well under a millisecond.
RPC_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
CHECK_WRITE = "/licensing.v1.LicenseService/CheckWrite"

Behaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class Metrics:
    """One server's metrics: its registry, the RPC interceptor and the status collector."""

    def __init__(self) -> None:
        # `_created` series double the output and say nothing a restart counter does not
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self.rpc_seconds = Histogram(
            "licensing_rpc_handling_seconds",
            "Time the server spent handling a unary RPC, by service, method and status code.",
            ["grpc_service", "grpc_method", "grpc_code"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "licensing_check_write_decisions",
            "CheckWrite answers by decision reason (allowed is implied by the reason).",
            ["reason", "allowed"],
            registry=self.registry,
        )
        self.interceptor = RpcMetrics(self.rpc_seconds, self.decisions)
        self.http = HttpMetrics(self.registry)

    def watch(self, service: LicensingService) -> None:
        self.registry.register(StatusCollector(service))

    def serve(self, address: str) -> MetricsServer:
        """Serve /metrics over HTTP on HOST:PORT (port 0: any free port). Raises OSError."""
        host, port = split_host_port(address)
        httpd, thread = start_http_server(port, host, registry=self.registry)
        return MetricsServer(httpd, thread)


class MetricsServer:
    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.port: int = httpd.server_port
        # HOST:PORT as bound, for the log (port 0 was a free one)
        self.address = join_host_port(str(httpd.server_address[0]), self.port)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


class RpcMetrics(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Times every unary RPC, including those the auth interceptor refuses, and counts decisions.

    gRPC hands back the same handler object for a method on every call, so the
    timed wrapper is made once per (method, handler) and reused. It runs on
    the server's one event loop, so its caches need no lock.
    """

    def __init__(self, rpc_seconds: Histogram, decisions: Counter) -> None:
        self._rpc_seconds = rpc_seconds
        self._decisions = decisions
        # method -> id(handler) -> (handler, its timed wrapper)
        self._wrapped: dict[str, dict[int, tuple[Any, grpc.RpcMethodHandler]]] = {}
        self._decision_children: dict[int, Any] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.response_streaming:
            return handler  # unknown methods and streams (health Watch, reflection) pass untimed
        method: str = handler_call_details.method
        by_handler = self._wrapped.setdefault(method, {})
        cached = by_handler.get(id(handler))
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        by_handler[id(handler)] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, name = method.lstrip("/").rpartition("/")
        histogram = self._rpc_seconds
        ok = histogram.labels(service, name, grpc.StatusCode.OK.name)
        by_code: dict[grpc.StatusCode, Any] = {grpc.StatusCode.OK: ok}

        def child(code: grpc.StatusCode | None) -> Any:
            code = code or grpc.StatusCode.UNKNOWN
            found = by_code.get(code)
            if found is None:
                found = by_code[code] = histogram.labels(service, name, code.name)
            return found

        # a refusal is request-streaming (answered before any message), a method unary
        behaviour: Behaviour = handler.stream_unary or handler.unary_unary
        clock = time.perf_counter
        decisions = self._decision_children
        count_decision = self._count_decision

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = clock()
            try:
                response = await behaviour(request, context)
            except BaseException:
                child(context.code()).observe(clock() - start)
                raise
            code = context.code()
            (ok if code is None else child(code)).observe(clock() - start)
            return response

        async def timed_check_write(request: Any, context: grpc.aio.ServicerContext) -> Any:
            response = await timed(request, context)
            counter = decisions.get(response.reason)
            if counter is None:
                counter = count_decision(response)
            counter.inc()
            return response

        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                timed,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            timed_check_write if method == CHECK_WRITE else timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _count_decision(self, response: Any) -> Any:
        """The counter child for a decision reason; a reason always has the same verdict."""
        reason = pb.DecisionReason.Name(response.reason).removeprefix("DECISION_REASON_")
        counter = self._decisions.labels(reason, "true" if response.allowed else "false")
        self._decision_children[response.reason] = counter
        return counter


class HttpMetrics:
    """The HTTP edge's requests, timed by method, route and HTTP status.

    The labels come from the route table (or "unmatched"), never from what a
    client sent, so they stay few; each label set's child is bound once.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._seconds = Histogram(
            "licensing_http_request_handling_seconds",
            "Time the server spent handling an Admin API request, by HTTP method, route (the "
            "proto's path; 'unmatched' when none) and HTTP status.",
            ["method", "route", "status"],
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._seconds.labels(method, route, str(status))
        child.observe(seconds)


class StatusCollector(Collector):
    """The service's state as gauges, read from `status()` at scrape time."""

    def __init__(self, service: LicensingService) -> None:
        self._service = service

    def collect(self) -> Iterable[Metric]:
        status = self._service.status()
        now = status.now

        def gauge(name: str, documentation: str, value: float | None) -> Iterable[Metric]:
            if value is not None:
                yield GaugeMetricFamily(name, documentation, value=value)

        state = GaugeMetricFamily(
            "licensing_runtime_state",
            "The license runtime state: 1 for the current state, 0 for the others.",
            labels=["state"],
        )
        for candidate in RuntimeState:
            state.add_metric([candidate.value], 1.0 if candidate is status.standing.state else 0.0)
        yield state
        info = GaugeMetricFamily(
            "licensing_deployment_info",
            "This deployment's ID (send it to the vendor for a license); always 1.",
            labels=["deployment_id"],
        )
        info.add_metric([status.deployment.deployment_id], 1.0)
        yield info
        ends_at = status.license_ends_at
        yield from gauge(
            "licensing_license_valid",
            "1 when a license is installed and has not ended, else 0.",
            1.0 if ends_at is not None and now < ends_at else 0.0,
        )
        active = status.active
        if active is not None:
            lic = active.license
            license_info = GaugeMetricFamily(
                "licensing_license_info",
                "The license in force and where it came from (upload or file); always 1.",
                labels=["serial_number", "source"],
            )
            license_info.add_metric([lic.serial_number, active.source.value], 1.0)
            yield license_info
            # base units only: alerts compute days left as (this - time()) / 86400
            yield from gauge(
                "licensing_license_expiry_timestamp_seconds",
                "When the license in force ends (a trial: at most 90 days from deployment).",
                ends_at,
            )
            yield from gauge(
                "licensing_license_max_dp_cores",
                "Data-plane cores the license in force allows across all gateway instances.",
                lic.max_dp_cores,
            )
        yield from gauge(
            "licensing_current_total_cores",
            "Data-plane cores of the gateway instances counting now.",
            status.current_total_cores,
        )
        yield from gauge(
            "licensing_live_instances",
            "Gateway instances counting now.",
            status.live_instances,
        )
        last = status.last_evaluation
        if last is not None:
            yield from gauge(
                "licensing_last_evaluated_day_peak_cores",
                "Peak total data-plane cores of the last evaluated day.",
                last.peak_cores,
            )
            yield from gauge(
                "licensing_last_evaluation_timestamp_seconds",
                "When the last day was evaluated.",
                last.evaluated_at,
            )
        yield from gauge(
            "licensing_grace_end_timestamp_seconds",
            "When the grace period ends, while usage exceeds the license (DP_CORE_EXCEEDED).",
            status.standing.grace_ends_at,
        )
        yield CounterMetricFamily(
            "licensing_evaluations",
            "Days evaluated against the license since the server started.",
            value=self._service.evaluations_total,
        )
        yield from gauge(
            "licensing_clock_moved_back",
            "1 once the system clock has been seen going backwards, else 0.",
            1.0 if status.clock.moved_back else 0.0,
        )
        file_report = status.license_file
        if file_report is not None:
            yield CounterMetricFamily(
                "licensing_license_file_reload_errors",
                "License file reads that failed or held an invalid license, once per distinct "
                "content or error.",
                value=file_report.reload_errors,
            )
            yield from gauge(
                "licensing_license_file_last_read_successful",
                "1 when the last poll of the license file found a valid license, else 0.",
                0.0 if file_report.last_error or file_report.last_read_at is None else 1.0,
            )
