"""Logs: one line per event, JSON on request, every change with its cause, and never a token."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    ADMIN_TOKEN,
    CONTROL_PLANE_TOKEN,
    DAY,
    GATEWAY_TOKEN,
    START,
    Harness,
    ServerProcess,
    Vendor,
    midnight_after,
    self_signed_certificate,
)
from licensing.client import LicensingClient, LicensingError, Operation

from licensing_server.license_file import LicenseFileWatcher
from licensing_server.metrics import MetricsServer

WRONG_TOKEN = "wrong-token-that-must-not-be-logged"
SECRETS = (ADMIN_TOKEN, GATEWAY_TOKEN, CONTROL_PLANE_TOKEN, WRONG_TOKEN)


def test_a_full_session_logs_every_change_with_its_cause_and_never_a_token(
    tmp_path: Path,
    vendor: Vendor,
    make_harness: Callable[..., Harness],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    license_path = tmp_path / "license.jws"
    from_file = vendor.issue(serial_number="LIC-FILE", max_dp_cores=4)
    license_path.write_text(from_file)
    harness = make_harness("--license-file", str(license_path), "--metrics-listen", "127.0.0.1:0")

    uploaded = vendor.issue(serial_number="LIC-UPLOAD", max_dp_cores=2)
    harness.admin.upload(uploaded)
    harness.admin.validate(uploaded)
    harness.gateway.report_usage("gw-1", 8)
    harness.advance_to(midnight_after(START) + 1)  # over quota: DP_CORE_EXCEEDED
    harness.control_plane.check_write("route", Operation.CREATE, "no-such-feature")
    harness.control_plane.check_write("route\ninjected", Operation.UPDATE, "no-such-feature")
    harness.control_plane.status()
    harness.control_plane.usage_history()
    for token in (WRONG_TOKEN, None, GATEWAY_TOKEN):
        with pytest.raises(LicensingError):
            harness.client(token).upload(uploaded)
    license_path.write_text("not a license")
    watcher = next(e for e in harness.running.extras if isinstance(e, LicenseFileWatcher))
    watcher.poll_once()
    metrics = next(e for e in harness.running.extras if isinstance(e, MetricsServer))
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=10):
        pass

    messages = [record.getMessage() for record in caplog.records]
    logged = "\n".join(messages) + caplog.text
    for secret in (*SECRETS, from_file, uploaded):
        assert secret not in logged
    assert all("\n" not in message for message in messages)
    assert any("LIC-FILE in force" in m and "applied from file" in m for m in messages)
    assert any("LIC-UPLOAD in force" in m and "applied from upload" in m for m in messages)
    assert any(
        "runtime state NORMAL -> DP_CORE_EXCEEDED" in m and "evaluation of" in m for m in messages
    )
    denied = [m for m in messages if m.startswith("write denied")]
    assert denied == [
        "write denied: create 'route' (feature 'no-such-feature'): FEATURE_NOT_LICENSED",
        # a caller's newline stays inside the one line
        "write denied: update 'route\\ninjected' (feature 'no-such-feature'): FEATURE_NOT_LICENSED",
    ]
    assert any("license file" in m and "MALFORMED" in m for m in messages)


def test_a_denied_write_is_one_info_line_and_an_allowed_one_is_not_logged(
    vendor: Vendor, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="licensing")
    harness.control_plane.check_write("route", Operation.CREATE)
    harness.admin.upload(vendor.issue())
    caplog.clear()
    harness.control_plane.check_write("route", Operation.CREATE)
    harness.control_plane.check_write("route", Operation.DELETE)
    assert caplog.records == []

    harness.advance_to(START + 400 * DAY)  # past the license's end
    caplog.clear()
    harness.control_plane.check_write("upstream", Operation.UPDATE)
    [record] = [r for r in caplog.records if r.getMessage().startswith("write denied")]
    assert record.levelno == logging.INFO
    assert record.getMessage() == "write denied: update 'upstream': LICENSE_EXPIRED"


def current_license(vendor: Vendor, deployment_id: str) -> str:
    now = time.time()
    return vendor.issue(
        effective_at=now - DAY, expires_at=now + 365 * DAY, deployment_id=deployment_id
    )


def test_the_server_process_logs_json_lines_and_its_configuration_with_secrets_redacted(
    tmp_path: Path, vendor: Vendor, server_processes: Callable[..., ServerProcess]
) -> None:
    server = server_processes(
        tmp_path / "data",
        vendor,
        "--log-format",
        "json",
        "--log-level",
        "DEBUG",
        "--license-file",
        str(tmp_path / "missing-license.jws"),
        "--metrics-listen",
        "127.0.0.1:0",
    ).start()
    with server.client() as admin:
        license_text = current_license(vendor, admin.status().deployment_id)
        admin.upload(license_text)
    with server.client(CONTROL_PLANE_TOKEN) as control_plane:
        control_plane.check_write("route", Operation.CREATE, "no-such-feature")
    with server.client(WRONG_TOKEN) as stranger, pytest.raises(LicensingError):
        stranger.status()
    assert server.terminate() == 0

    log_text = server.log()
    for secret in (*SECRETS, license_text):
        assert secret not in log_text
    entries = [json.loads(line) for line in log_text.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    messages = [entry["message"] for entry in entries]
    [configuration] = [m for m in messages if m.startswith("effective configuration: ")]
    shown = json.loads(configuration.removeprefix("effective configuration: "))
    assert shown["admin_token"] == "<1 redacted>"
    assert shown["control_plane_token"] == "<1 redacted>"
    assert shown["license_file"] == str(tmp_path / "missing-license.jws")
    assert shown["log_format"] == "json"
    assert any("LICENSE_FILE_MISSING" in m for m in messages)
    assert any("applied from upload" in m for m in messages)
    assert any(m.startswith("write denied: create 'route'") for m in messages)


def test_the_start_logs_the_real_address_of_every_listener(
    make_harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="licensing")
    # every listener on port 0: only the log (and RunningServer) can tell where it is
    running = make_harness("--metrics-listen", "127.0.0.1:0").running
    assert running.http_port and running.metrics_port
    messages = [record.getMessage() for record in caplog.records]

    def started(prefix: str) -> str:
        [message] = [m for m in messages if m.startswith(prefix)]
        return message

    assert started("serving licensing.v1.LicenseService on ").startswith(
        f"serving licensing.v1.LicenseService on 127.0.0.1:{running.port} (plaintext)"
    )
    assert started("serving the Admin API on ") == (
        f"serving the Admin API on http://127.0.0.1:{running.http_port}: PUT and GET /api/license"
    )
    assert started("serving Prometheus metrics on ") == (
        f"serving Prometheus metrics on http://127.0.0.1:{running.metrics_port}/metrics"
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=10):
        pass


def test_grpcs_own_lines_reach_the_json_log_as_json(
    tmp_path: Path, vendor: Vendor, server_processes: Callable[..., ServerProcess]
) -> None:
    cert_path, key_path = self_signed_certificate(tmp_path)
    server = server_processes(
        tmp_path / "data",
        vendor,
        "--log-format",
        "json",
        "--log-level",
        "DEBUG",
        "--tls-cert",
        str(cert_path),
        "--tls-key",
        str(key_path),
        ca_cert=cert_path,
    ).start()
    # a client that speaks plaintext to the TLS port: gRPC's C core logs the failed handshake
    with (
        LicensingClient(server.target, token=ADMIN_TOKEN) as plaintext,
        pytest.raises(LicensingError),
    ):
        plaintext.status()
    assert server.terminate() == 0

    entries = [json.loads(line) for line in server.log().splitlines()]
    native = [entry for entry in entries if entry["logger"] == "grpc"]
    assert any(
        entry["level"] == "DEBUG" and entry["message"].startswith("Handshake failed")
        for entry in native
    ), native
