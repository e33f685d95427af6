"""The Admin API's load generator: `GET /api/license` over keep-alive HTTP/1.1 connections.

Closed loop, as `load`: each of `concurrency` workers holds one connection
(TLS or not) and sends the next request as soon as the last answer is in.
The request's bytes are made beforehand and an answer is read by its
Content-Length, so the generator spends little per request; it prints one
JSON line with the same figures as `load`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import time

from .common import CALL_TIMEOUT, START_TIMEOUT, TOKEN_ENV
from .load import Recorder, Window, print_answer

PATH = "/api/license"


def request_bytes(host: str, token: str) -> bytes:
    return (
        f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and body of one answer with a Content-Length (all of the edge's have one)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def drive(
    host: str,
    port: int,
    tls: bool,
    token: str,
    concurrency: int,
    window: Window,
    rec: Recorder,
) -> None:
    context = None
    if tls:
        # the benchmark's own self-signed certificate: encrypt, do not verify
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    request = request_bytes(host, token)

    async def worker() -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context), START_TIMEOUT
        )
        try:
            while window.running(time.perf_counter_ns()):
                began = time.perf_counter_ns()
                writer.write(request)
                try:
                    status, body = await asyncio.wait_for(read_answer(reader), CALL_TIMEOUT)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as error:
                    rec.error(type(error).__name__)
                    return
                if status != 200:
                    rec.error(f"HTTP {status}")
                    continue
                rec.answered(began, body)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def cmd_load_http(args: argparse.Namespace) -> int:
    token = os.environ.get(TOKEN_ENV, "")
    host, _, port = args.target.rpartition(":")
    rec = Recorder()
    window = Window(args.warmup, args.duration, args.server_pid)
    asyncio.run(drive(host, int(port), args.tls, token, args.concurrency, window, rec))
    first = (rec.first_response or b"").decode(errors="replace")[:200]
    return print_answer(window, rec, first)
