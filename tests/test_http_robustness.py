"""Bad input and misbehaving clients on the Admin API: refused with a reason, at their own cost."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable

import pytest
from conftest import ADMIN_TOKEN, CONTROL_PLANE_TOKEN, Harness, Vendor
from http_client import call, read_answer

MIB = 1024 * 1024
# an error message quotes at most a short prefix of what it refuses
MESSAGE_BOUND = 400


def http_port(harness: Harness) -> int:
    port = harness.running.http_port
    assert port
    return int(port)


def connect(port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    # each byte its own segment: the server sees the body trickle in
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def request_head(length: int, token: str = ADMIN_TOKEN) -> bytes:
    return (
        "PUT /api/license HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {length}\r\n"
        "\r\n"
    ).encode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"license": 5}', id="license-not-a-string"),
        pytest.param(os.urandom(MIB), id="one-MiB-of-random-bytes"),
        pytest.param(b"A" * MIB, id="one-MiB-of-letters"),
        pytest.param(b'{"license": "\xff\xfe"}', id="invalid-utf-8"),
        pytest.param(b'{"' + b"x" * 100_000 + b'": "y"}', id="unknown-field-with-a-long-name"),
        pytest.param(b"[" * 200_000, id="nested-deeper-than-any-parser"),
        pytest.param(b'{"license": "a", "license": "b"}', id="duplicate-key"),
        pytest.param(b'["license"]', id="an-array"),
    ],
)
def test_a_bad_body_is_400_with_a_short_reason_and_changes_nothing(
    harness: Harness, vendor: Vendor, body: bytes
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-IN-FORCE"))
    before = harness.admin.status()
    answer = call(http_port(harness), "PUT", "/api/license", body)
    assert (answer.status, answer.reason) == (400, "INVALID_REQUEST_BODY")
    assert len(answer.message) < MESSAGE_BOUND
    assert harness.admin.status() == before


def test_a_license_that_is_null_or_missing_is_malformed_like_an_empty_one_over_grpc(
    harness: Harness,
) -> None:
    for body in ('{"license": null}', "{}", '{"license": "   "}'):
        answer = call(http_port(harness), "PUT", "/api/license", body)
        assert (answer.status, answer.reason) == (400, "MALFORMED"), body


def test_a_huge_header_is_refused_by_the_http_parser_and_others_are_answered(
    harness: Harness,
) -> None:
    port = http_port(harness)
    with connect(port) as connection:
        connection.sendall(
            b"GET /api/license HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: "
            + b"a" * 20_000
            + b"\r\n\r\n"
        )
        answer = read_answer(connection)
    assert answer.status in (400, 431)
    assert call(port, "GET", "/api/license", token=CONTROL_PLANE_TOKEN).status == 200


def test_a_client_sending_its_body_byte_by_byte_does_not_delay_others(
    harness: Harness, vendor: Vendor
) -> None:
    port = http_port(harness)
    body = json.dumps({"license": vendor.issue(serial_number="LIC-SLOW")}).encode()
    with connect(port) as slow:
        slow.sendall(request_head(len(body)))
        for index, byte in enumerate(body):
            slow.sendall(bytes([byte]))
            if index % 100 == 0:
                # the server is waiting for the slow body; everyone else is answered meanwhile
                other = call(port, "GET", "/api/license", token=CONTROL_PLANE_TOKEN, timeout=10)
                assert other.status == 200
                assert not harness.control_plane.status().HasField("license")
        answer = read_answer(slow)
    assert answer.status == 200, answer.body
    assert harness.control_plane.status().license.serial_number == "LIC-SLOW"


def test_a_body_that_never_arrives_is_answered_408_and_its_connection_closed(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness("--http-body-timeout", "0.5")
    port = http_port(harness)
    with connect(port) as stalled:
        stalled.sendall(request_head(1000) + b'{"license": "')
        answer = read_answer(stalled)
        assert (answer.status, answer.reason) == (408, "REQUEST_TIMEOUT")
        assert stalled.recv(1) == b""  # closed
    assert call(port, "GET", "/api/license").status == 200
    assert not harness.admin.status().HasField("license")


def test_a_client_that_hangs_up_mid_body_leaves_nothing_behind(
    harness: Harness, vendor: Vendor, caplog: pytest.LogCaptureFixture
) -> None:
    port = http_port(harness)
    with caplog.at_level(logging.WARNING):
        with connect(port) as gone:
            gone.sendall(request_head(1000) + b'{"license": "abc')
        # the next request is answered, and nothing failed inside
        assert call(port, "GET", "/api/license").status == 200
        assert put_applies(port, vendor)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def put_applies(port: int, vendor: Vendor) -> bool:
    answer = call(port, "PUT", "/api/license", json.dumps({"license": vendor.issue()}))
    return answer.status == 200


def test_tokens_are_never_logged_whatever_the_request(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    port = http_port(harness)
    with caplog.at_level(logging.DEBUG):
        call(port, "GET", "/api/license", token=ADMIN_TOKEN)
        call(port, "GET", "/api/license", token=ADMIN_TOKEN + "-wrong")
        call(port, "PUT", "/api/license", "not json", token=ADMIN_TOKEN)
        call(port, "GET", "/nowhere", token=ADMIN_TOKEN)
        # a header the HTTP parser refuses, the token beside the bad byte
        with connect(port) as connection:
            connection.sendall(
                b"GET /api/license HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + ADMIN_TOKEN.encode()
                + b"\x01\r\n\r\n"
            )
            assert read_answer(connection).status == 400
        assert call(port, "GET", "/api/license").status == 200
    assert ADMIN_TOKEN not in caplog.text
    # a client's malformed request is not the operator's error
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
