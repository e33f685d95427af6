"""The seed's Admin API over HTTPS/JSON: its curl commands, the same service as gRPC, its errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    ADMIN_TOKEN,
    CONTROL_PLANE_TOKEN,
    DAY,
    GATEWAY_TOKEN,
    START,
    Harness,
    Vendor,
    read_only,
    self_signed_certificate,
    server_config,
    store_evaluated_days,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format
from http_client import ERROR_INFO, Answer, call, put_license, trusting
from licensing.client import LicensingClient
from licensing.v1 import licensing_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from licensing_server.app import StartupError, start_server
from licensing_server.config import load_config
from licensing_server.console import console_routes
from licensing_server.domain.clock import ManualClock
from licensing_server.http_edge import SECURITY_HEADERS, HttpEdge
from licensing_server.metrics import MetricsServer
from licensing_server.transcoding import annotated_routes

ROOT = Path(__file__).resolve().parent.parent

# The seed's three commands, character for character (its own line breaks included).
SEED_APPLY = """curl -k "https://localhost:7443/api/license" -X PUT \\
-H "Authorization: Bearer $API7_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{
"license": "<LICENSE_CONTENT>"
}'"""
SEED_DRY_RUN = """curl -k "https://localhost:7443/api/license?dry-run=all" -X PUT \\
-H "Authorization: Bearer $API7_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{
"license": "<LICENSE_CONTENT>"
}'"""
SEED_READ = """curl -k "https://localhost:7443/api/license" \\
-H "Authorization: Bearer $API7_TOKEN\""""
# the README's, where the Admin API listens by default
README_PORT = 7444


def seed_command(command: str, port: int) -> str:
    return command.replace("localhost:7443", f"localhost:{port}")


def run_curl(command: str, license_text: str = "") -> dict[str, object]:
    """Run a seed command with the real curl binary, the token in $API7_TOKEN as the seed has
    it; returns the JSON it printed."""
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is not installed: CI must run the seed's curl commands")
        pytest.skip("curl is not installed")
    done = subprocess.run(
        ["bash", "-c", command.replace("<LICENSE_CONTENT>", license_text)],
        env=dict(os.environ, API7_TOKEN=ADMIN_TOKEN),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed: dict[str, object] = json.loads(done.stdout)
    return printed


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    directory = tmp_path / "tls"
    directory.mkdir()
    return self_signed_certificate(directory)


@pytest.fixture
def https_harness(
    make_harness: Callable[..., Harness], tls_files: tuple[Path, Path]
) -> Iterator[tuple[Harness, LicensingClient]]:
    """A server with TLS on both edges, and an admin gRPC client that trusts its certificate."""
    cert_path, key_path = tls_files
    harness = make_harness("--tls-cert", str(cert_path), "--tls-key", str(key_path))
    with LicensingClient(
        harness.target, ADMIN_TOKEN, tls=True, root_certificates=cert_path.read_bytes()
    ) as admin:
        yield harness, admin


def http_port(harness: Harness) -> int:
    port = harness.running.http_port
    assert port
    return int(port)


def forger(vendor: Vendor, kid: str) -> Vendor:
    """Someone signing with a key of their own under key id `kid`."""
    return Vendor(Ed25519PrivateKey.generate(), kid, vendor.public_path)


def as_status(answer: Answer) -> pb.GetStatusResponse:
    assert answer.status == 200, answer.body
    return json_format.Parse(answer.body, pb.GetStatusResponse())


# --- the seed's curl commands ---


def test_the_readme_shows_the_seeds_three_curl_commands_verbatim_but_for_the_port() -> None:
    readme = (ROOT / "README.md").read_text()
    for command in (SEED_APPLY, SEED_DRY_RUN, SEED_READ):
        assert seed_command(command, README_PORT) in readme


def test_the_seeds_curl_commands_apply_dry_run_and_read_back_over_https(
    https_harness: tuple[Harness, LicensingClient], vendor: Vendor
) -> None:
    harness, admin = https_harness
    port = http_port(harness)

    applied = run_curl(seed_command(SEED_APPLY, port), vendor.issue(serial_number="LIC-APPLIED"))
    assert applied["license"]["serial_number"] == "LIC-APPLIED"  # type: ignore[index]
    assert applied["state"] == "RUNTIME_STATE_NORMAL"
    assert admin.status().license.serial_number == "LIC-APPLIED"

    before = admin.status()
    what_if = run_curl(
        seed_command(SEED_DRY_RUN, port),
        vendor.issue(serial_number="LIC-WHAT-IF", max_dp_cores=32, features=["api7-portal"]),
    )
    assert what_if["valid"] is True
    assert what_if["license"]["serial_number"] == "LIC-WHAT-IF"  # type: ignore[index]
    assert what_if["features_gained"] == ["api7-portal"]
    assert what_if["features_lost"] == ["api7-gateway"]
    # a dry run changes nothing: the whole status is as it was
    assert admin.status() == before

    read_back = run_curl(seed_command(SEED_READ, port))
    assert read_back["license"]["serial_number"] == "LIC-APPLIED"  # type: ignore[index]
    assert read_back["license"]["max_dp_cores"] == 16  # type: ignore[index]
    assert read_back["state"] == "RUNTIME_STATE_NORMAL"
    # it is GetStatus, field for field
    assert json_format.ParseDict(read_back, pb.GetStatusResponse()) == admin.status()


def test_the_https_edge_presents_the_configured_certificate(
    https_harness: tuple[Harness, LicensingClient], tls_files: tuple[Path, Path]
) -> None:
    harness, _ = https_harness
    answer = call(
        http_port(harness), "GET", "/api/license", tls=trusting(tls_files[0]), token=ADMIN_TOKEN
    )
    assert answer.status == 200
    # and does not speak plaintext
    with pytest.raises((ConnectionError, OSError)):
        reply = call(http_port(harness), "GET", "/api/license", timeout=10)
        assert reply.status != 200


# --- one service behind both edges ---


def test_a_license_applied_over_http_and_over_grpc_gives_the_same_status(
    make_harness: Callable[..., Harness], vendor: Vendor, tmp_path: Path
) -> None:
    text = vendor.issue(serial_number="LIC-BOTH", features=["api7-gateway", "api7-portal"])
    over_http = make_harness(data_dir=tmp_path / "http")
    over_grpc = make_harness(data_dir=tmp_path / "grpc")

    uploaded = put_license(http_port(over_http), text)
    assert uploaded.status == 200, uploaded.body
    over_grpc.admin.upload(text)

    assert over_http.admin.status() == over_grpc.admin.status()
    assert over_http.service.usage_history(30).state_changes == (
        over_grpc.service.usage_history(30).state_changes
    )


def test_get_api_license_is_get_status_in_json_with_proto_field_names_and_enum_names(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue())
    answer = call(http_port(harness), "GET", "/api/license", token=CONTROL_PLANE_TOKEN)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    shown = answer.json()
    assert shown["license"]["max_dp_cores"] == 16
    assert shown["license"]["serial_number"] == "LIC-0001"
    assert shown["state"] == "RUNTIME_STATE_NORMAL"
    assert shown["license_source"] == "LICENSE_SOURCE_UPLOAD"
    # every field is shown, even at its default
    assert shown["live_instances"] == 0
    assert as_status(answer) == harness.control_plane.status()


def test_an_upload_answers_what_grpc_answers_and_is_in_the_audit_trail(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(max_dp_cores=64))
    harness.gateway.report_usage("gw-1", 48)
    harness.advance(DAY)  # the day's peak, 48, is evaluated against 64
    answer = put_license(
        http_port(harness), vendor.issue(serial_number="LIC-SMALL", max_dp_cores=8)
    )
    assert answer.status == 200, answer.body
    uploaded = json_format.Parse(answer.body, pb.UploadResponse())
    assert uploaded.license.serial_number == "LIC-SMALL"
    assert uploaded.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert uploaded.grace_end_time.seconds > 0
    change = harness.admin.status().last_state_change
    assert change.state_after == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert "upload" in change.cause


def test_validate_is_served_at_its_annotated_route_too(harness: Harness, vendor: Vendor) -> None:
    text = vendor.issue(serial_number="LIC-CHECKED")
    answer = call(
        http_port(harness), "POST", "/api/license:validate", json.dumps({"license": text})
    )
    assert answer.status == 200, answer.body
    assert json_format.Parse(answer.body, pb.ValidateResponse()) == harness.admin.validate(text)
    assert not harness.admin.status().HasField("license")


def test_a_dry_run_of_a_bad_license_is_the_validate_verdict_not_an_error(
    harness: Harness, vendor: Vendor
) -> None:
    answer = put_license(
        http_port(harness), forger(vendor, "stranger").issue(), query="?dry-run=all"
    )
    assert answer.status == 200
    assert answer.json()["valid"] is False
    assert answer.json()["reason"] == "LICENSE_REJECTION_REASON_UNKNOWN_KEY"


def test_a_dry_run_spelled_otherwise_is_refused_and_applies_nothing(
    harness: Harness, vendor: Vendor
) -> None:
    port = http_port(harness)
    for query in ("?dry-run=true", "?dry-run=all&dry-run=all", "?dryRun=All", "?dry-run"):
        answer = put_license(port, vendor.issue(), query=query)
        assert (answer.status, answer.reason) == (400, "INVALID_QUERY_PARAMETER"), query
    assert not harness.admin.status().HasField("license")


def test_usage_history_takes_its_request_fields_as_query_parameters(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    store_evaluated_days(
        tmp_path / "data", {"2026-12-30": ["gw-a"], "2026-12-31": ["gw-a", "gw-b"]}
    )
    harness = make_harness()
    port = http_port(harness)

    answer = call(
        port,
        "GET",
        "/api/license/usage?days=1&include_peak_instances=true",
        token=CONTROL_PLANE_TOKEN,
    )
    assert answer.status == 200, answer.body
    history = json_format.Parse(answer.body, pb.GetUsageHistoryResponse())
    assert history == harness.admin.usage_history(1, include_peak_instances=True)
    assert [d.day for d in history.days] == ["2026-12-31"]
    assert [i.instance_id for i in history.days[0].peak_instances] == ["gw-a", "gw-b"]
    # the JSON names work too, as grpc-gateway reads them
    camel = call(port, "GET", "/api/license/usage?day=2026-12-30&includePeakInstances=1")
    assert [d["day"] for d in camel.json()["days"]] == ["2026-12-30"]

    for query, reason in (
        ("?weeks=2", "INVALID_QUERY_PARAMETER"),
        ("?days=two", "INVALID_QUERY_PARAMETER"),
        ("?days=1&days=2", "INVALID_QUERY_PARAMETER"),
        ("?include_peak_instances=yes", "INVALID_QUERY_PARAMETER"),
        ("?days=100000", "INVALID_ARGUMENT"),
        ("?day=yesterday", "INVALID_ARGUMENT"),
    ):
        refused = call(port, "GET", "/api/license/usage" + query)
        assert (refused.status, refused.reason) == (400, reason), query


def test_the_route_table_is_the_protos_http_annotations_and_the_seeds_dry_run() -> None:
    service = pb.DESCRIPTOR.services_by_name["LicenseService"]
    assert [(r.http_method, r.path, r.rpc, r.body) for r in annotated_routes(service)] == [
        ("PUT", "/api/license", "Upload", "*"),
        ("POST", "/api/license:validate", "Validate", "*"),
        ("GET", "/api/license", "GetStatus", ""),
        ("GET", "/api/license/usage", "GetUsageHistory", ""),
    ]
    edge = HttpEdge(servicer=None, check=None, metrics=None, body_timeout=1, idle_timeout=1)  # type: ignore[arg-type]
    assert [(r.http_method, r.label, r.rpc) for r in edge.routes] == [
        ("PUT", "/api/license", "Upload"),
        ("POST", "/api/license:validate", "Validate"),
        ("GET", "/api/license", "GetStatus"),
        ("GET", "/api/license/usage", "GetUsageHistory"),
        ("PUT", "/api/license?dry-run=all", "Validate"),
    ]
    served = {
        (route.method, route.resource.canonical)
        for route in edge.application().router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    # and the license console's page and assets, which only read files of the package
    console = {(route.method, route.path) for route in console_routes()}
    assert served == {(r.http_method, r.path) for r in annotated_routes(service)} | console


# --- errors: the gRPC status, its HTTP status, google.rpc.Status as JSON ---


@pytest.mark.parametrize(
    ("make_text", "reason"),
    [
        (lambda vendor: "not-a-license", "MALFORMED"),
        (lambda vendor: forger(vendor, vendor.kid).issue(), "BAD_SIGNATURE"),
        (lambda vendor: forger(vendor, "stranger").issue(), "UNKNOWN_KEY"),
        (lambda vendor: vendor.issue(deployment_id="someone-else"), "DEPLOYMENT_MISMATCH"),
        (lambda vendor: vendor.issue(expires_at=START - 1), "EXPIRED"),
    ],
)
def test_a_rejected_license_is_400_with_its_reason_and_changes_nothing(
    harness: Harness, vendor: Vendor, make_text: Callable[[Vendor], str], reason: str
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-IN-FORCE"))
    before = harness.admin.status()
    answer = put_license(http_port(harness), make_text(vendor))
    assert answer.status == 400
    assert answer.headers["Content-Type"].startswith("application/json")
    status = answer.json()
    assert status["code"] == 3  # INVALID_ARGUMENT
    assert status["details"] == [
        {"@type": ERROR_INFO, "reason": reason, "domain": "licensing.v1", "metadata": {}}
    ]
    assert harness.admin.status() == before


def test_a_missing_or_unknown_token_is_401(harness: Harness) -> None:
    port = http_port(harness)
    missing = call(port, "GET", "/api/license", token=None)
    assert (missing.status, missing.reason, missing.json()["code"]) == (401, "MISSING_TOKEN", 16)
    unknown = call(port, "GET", "/api/license", token="not-a-token")
    assert (unknown.status, unknown.reason) == (401, "INVALID_TOKEN")
    lower_case = call(
        port, "GET", "/api/license", headers={"authorization": f"bearer {ADMIN_TOKEN}"}
    )
    assert lower_case.status == 200


@pytest.mark.parametrize(
    ("method", "path", "token", "allowed"),
    [
        ("PUT", "/api/license", ADMIN_TOKEN, True),
        ("PUT", "/api/license", CONTROL_PLANE_TOKEN, False),
        ("PUT", "/api/license", GATEWAY_TOKEN, False),
        ("PUT", "/api/license?dry-run=all", ADMIN_TOKEN, True),
        ("PUT", "/api/license?dry-run=all", CONTROL_PLANE_TOKEN, False),
        ("GET", "/api/license", ADMIN_TOKEN, True),
        ("GET", "/api/license", CONTROL_PLANE_TOKEN, True),
        ("GET", "/api/license", GATEWAY_TOKEN, False),
        ("GET", "/api/license/usage", CONTROL_PLANE_TOKEN, True),
        ("GET", "/api/license/usage", GATEWAY_TOKEN, False),
    ],
)
def test_roles_are_the_grpc_roles_admin_applies_and_the_control_plane_reads(
    harness: Harness, vendor: Vendor, method: str, path: str, token: str, allowed: bool
) -> None:
    body = json.dumps({"license": vendor.issue()}) if method == "PUT" else None
    answer = call(http_port(harness), method, path, body, token=token)
    if allowed:
        assert answer.status == 200, answer.body
    else:
        assert (answer.status, answer.reason, answer.json()["code"]) == (
            403,
            "ROLE_NOT_ALLOWED",
            7,
        )


def test_an_unknown_path_is_404_and_a_wrong_method_405_in_the_same_json(harness: Harness) -> None:
    port = http_port(harness)
    unknown = call(port, "GET", "/api/licenses", token=None)
    assert (unknown.status, unknown.reason, unknown.json()["code"]) == (404, "ROUTE_NOT_FOUND", 5)
    assert "GET /api/license" in unknown.message
    wrong = call(port, "DELETE", "/api/license")
    assert (wrong.status, wrong.reason, wrong.json()["code"]) == (405, "METHOD_NOT_ALLOWED", 12)
    assert set(wrong.headers["Allow"].split(",")) == {"GET", "HEAD", "PUT"}
    head = call(port, "HEAD", "/api/license")
    assert (head.status, head.body) == (200, b"")


def test_a_body_that_is_not_json_is_415_by_its_type_and_400_by_its_content(
    harness: Harness,
) -> None:
    port = http_port(harness)
    form = call(
        port, "PUT", "/api/license", "license=abc", content_type="application/x-www-form-urlencoded"
    )
    assert (form.status, form.reason) == (415, "UNSUPPORTED_MEDIA_TYPE")
    latin = call(
        port, "PUT", "/api/license", "{}", content_type="application/json; charset=latin-1"
    )
    assert latin.status == 415
    untyped = call(port, "PUT", "/api/license", "{}", content_type=None)
    assert untyped.status == 415
    text = call(port, "PUT", "/api/license", "not json")
    assert (text.status, text.reason) == (400, "INVALID_REQUEST_BODY")
    utf8 = call(
        port,
        "PUT",
        "/api/license",
        '{"license": ""}',
        content_type="application/json; charset=UTF-8",
    )
    assert (utf8.status, utf8.reason) == (400, "MALFORMED")


def test_a_body_over_one_mebibyte_is_413(harness: Harness) -> None:
    answer = call(http_port(harness), "PUT", "/api/license", b"x" * (1024 * 1024 + 1))
    assert (answer.status, answer.reason, answer.json()["code"]) == (413, "REQUEST_TOO_LARGE", 8)


def test_a_database_that_cannot_be_written_is_503_with_storage_unavailable(
    harness: Harness, vendor: Vendor
) -> None:
    with read_only(harness.running.store):
        answer = put_license(http_port(harness), vendor.issue())
    assert (answer.status, answer.reason, answer.json()["code"]) == (503, "STORAGE_UNAVAILABLE", 14)
    assert "readonly" not in answer.message
    assert not harness.admin.status().HasField("license")


def test_an_unexpected_failure_is_500_internal_without_its_detail(
    harness: Harness, vendor: Vendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(text: str) -> None:
        raise RuntimeError("a secret detail")

    monkeypatch.setattr(harness.service, "upload", broken)
    answer = put_license(http_port(harness), vendor.issue())
    assert (answer.status, answer.reason, answer.json()["code"]) == (500, "INTERNAL", 13)
    assert b"secret" not in answer.body


def test_every_answer_carries_the_security_headers(harness: Harness, vendor: Vendor) -> None:
    port = http_port(harness)
    answers = [
        call(port, "GET", "/api/license"),
        put_license(port, "not-a-license"),
        call(port, "GET", "/api/license", token=None),
        call(port, "GET", "/nowhere"),
        call(port, "POST", "/api/license", "{}"),
        call(port, "PUT", "/api/license", b"x" * (1024 * 1024 + 1)),
    ]
    assert sorted(a.status for a in answers) == [200, 400, 401, 404, 405, 413]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value, (answer.status, name)
    assert "default-src 'none'" in SECURITY_HEADERS["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in SECURITY_HEADERS["Content-Security-Policy"]
    assert SECURITY_HEADERS["Cache-Control"] == "no-store"


def test_http_requests_are_counted_by_route_and_status_in_the_metrics(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness("--metrics-listen", "127.0.0.1:0")
    port = http_port(harness)
    call(port, "GET", "/api/license")
    call(port, "GET", "/api/license")
    call(port, "GET", "/api/license", token=None)
    put_license(port, "not-a-license", query="?dry-run=all")
    call(port, "GET", "/no/such/thing")
    metrics = next(e for e in harness.running.extras if isinstance(e, MetricsServer))
    scraped = call(metrics.port, "GET", "/metrics", token=None).body.decode()
    counts = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
        if s.name == "licensing_http_request_handling_seconds_count"
    }
    assert counts == {
        ("GET", "/api/license", "200"): 2,
        ("GET", "/api/license", "401"): 1,
        ("PUT", "/api/license?dry-run=all", "200"): 1,
        ("GET", "unmatched", "404"): 1,
    }
    # HTTP calls are not gRPC calls
    assert 'grpc_method="GetStatus"' not in scraped


# --- the listener ---


def test_the_admin_api_listens_on_loopback_by_default_and_an_empty_address_turns_it_off(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    assert load_config([], {}).http_listen == "127.0.0.1:7444"
    assert load_config(["--http-listen", ""], {}).http_listen is None
    assert load_config([], {"LICENSING_HTTP_LISTEN": ""}).http_listen is None
    toml = tmp_path / "server.toml"
    toml.write_text('http_listen = "[::1]:8444"\n')
    assert load_config(["--config", str(toml)], {}).http_listen == "[::1]:8444"

    off = make_harness("--http-listen", "")
    assert off.running.http_edge is None and off.running.http_port is None
    assert off.admin.status().deployment_id


def test_the_admin_api_off_loopback_needs_tls_and_tokens_like_grpc(
    tmp_path: Path, vendor: Vendor, tls_files: tuple[Path, Path]
) -> None:
    clock = ManualClock(START)
    plaintext = server_config(tmp_path / "data", vendor, "--http-listen", "0.0.0.0:0")
    with pytest.raises(StartupError, match=r"refusing to serve 0\.0\.0\.0:0 in plaintext"):
        start_server(plaintext, clock)
    tokenless = server_config(tmp_path / "data", vendor, "--http-listen", "0.0.0.0:0", environ={})
    with pytest.raises(
        StartupError, match=r"refusing to serve 0\.0\.0\.0:0 without authentication"
    ):
        start_server(tokenless, clock)
    cert, key = tls_files
    with_tls = server_config(
        tmp_path / "data",
        vendor,
        "--http-listen",
        "0.0.0.0:0",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )
    running = start_server(with_tls, clock)
    running.stop(grace=0)


def test_an_address_in_use_refuses_the_start_and_lets_go_of_the_data_directory(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port} \\(HTTP\\)"):
            make_harness("--http-listen", f"127.0.0.1:{port}", data_dir=tmp_path / "d")
    assert make_harness(data_dir=tmp_path / "d").admin.status().deployment_id


def test_dev_mode_serves_https_with_a_self_signed_certificate_made_once_and_says_so(
    make_harness: Callable[..., Harness], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "dev-data"
    with caplog.at_level("WARNING", logger="licensing"):
        first = make_harness("--dev", data_dir=data_dir)
    cert_path = data_dir / "dev-tls" / "tls.crt"
    assert "self-signed certificate" in caplog.text and str(cert_path) in caplog.text
    assert (data_dir / "dev-tls" / "tls.key").stat().st_mode & 0o077 == 0
    answer = call(http_port(first), "GET", "/api/license", tls=trusting(cert_path))
    assert answer.status == 200 and answer.json()["development_mode"] is True
    # gRPC stays as configured: plaintext on loopback, as the README's grpcurl examples use it
    assert first.admin.status().development_mode
    made = cert_path.read_bytes()
    first.running.stop(grace=0)

    second = make_harness("--dev", data_dir=data_dir)
    assert cert_path.read_bytes() == made
    assert call(http_port(second), "GET", "/api/license", tls=trusting(cert_path)).status == 200


def test_stopping_the_server_stops_the_admin_api(harness: Harness) -> None:
    port = http_port(harness)
    assert call(port, "GET", "/api/license").status == 200
    harness.running.stop(grace=1)
    with pytest.raises(ConnectionRefusedError):
        call(port, "GET", "/api/license", timeout=5)
