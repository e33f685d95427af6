"""The standard grpc.health.v1 service, NOT_SERVING until the server is ready.

It flips to SERVING once everything is wired, and to NOT_SERVING for good
when shutdown begins, before the server drains. While a shared database
cannot be reached the licensing service itself (the readiness probe's
service name) is NOT_SERVING, and the server as a whole ("", the liveness
probe's) stays SERVING: CheckWrite still answers from memory, and a restart
would not bring the database back. The methods may be called from any
thread: the change is made on the server's event loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from grpc_health.v1 import health, health_pb2

from licensing_server.loop import ServerLoop

SERVICE_NAME = health.SERVICE_NAME


class Health:
    def __init__(self, server_loop: ServerLoop, services: Sequence[str]) -> None:
        self._server_loop = server_loop
        # "" is the server as a whole, as Kubernetes probes ask
        self._services = ("", *services)
        self.servicer = health.aio.HealthServicer()
        self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    def _set(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        async def set_all() -> None:
            for name in self._services:
                await self.servicer.set(name, status)

        self._server_loop.run(set_all())

    def serving(self) -> None:
        self._set(health_pb2.HealthCheckResponse.SERVING)

    def ready(self, ready: bool) -> None:
        """Readiness: whether the named services can take every call (their storage answers)."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )

        async def set_services() -> None:
            for name in self._services[1:]:
                await self.servicer.set(name, status)

        self._server_loop.run(set_services())

    def enter_graceful_shutdown(self) -> None:
        self._server_loop.run(self.servicer.enter_graceful_shutdown())
