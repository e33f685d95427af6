"""A plain HTTP/1.1 client for the Admin API tests: status, headers and the JSON body."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from conftest import ADMIN_TOKEN

JSON = "application/json"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def reason(self) -> str:
        """The ErrorInfo reason of an error answer (a google.rpc.Status in JSON)."""
        details = self.json()["details"]
        return str(next(d["reason"] for d in details if d["@type"] == ERROR_INFO))

    @property
    def message(self) -> str:
        return str(self.json()["message"])


def trusting(cert_path: Path) -> ssl.SSLContext:
    """A client TLS context that trusts this certificate only."""
    return ssl.create_default_context(cafile=str(cert_path))


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | str | None = None,
    *,
    token: str | None = ADMIN_TOKEN,
    content_type: str | None = JSON,
    headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    timeout: float = 30.0,
) -> Answer:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if content_type is not None and body is not None:
        sent["Content-Type"] = content_type
    connection: http.client.HTTPConnection
    if tls is not None:
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=tls, timeout=timeout)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def put_license(port: int, text: str, query: str = "", **kwargs: Any) -> Answer:
    return call(port, "PUT", "/api/license" + query, json.dumps({"license": text}), **kwargs)


def read_answer(connection: socket.socket) -> Answer:
    """Read one HTTP/1.1 answer from a raw socket (the slow-client tests write by hand)."""
    response = http.client.HTTPResponse(connection)
    response.begin()
    return Answer(response.status, response.headers, response.read())
