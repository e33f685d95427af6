"""Prometheus metrics scraped over HTTP from a running server agree with GetStatus."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ADMIN_TOKEN, START, Harness, Vendor, midnight_after
from licensing.client import LicensingError, Operation
from licensing.v1 import licensing_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from licensing_server.license_file import LicenseFileWatcher
from licensing_server.metrics import MetricsServer

METRICS = ("--metrics-listen", "127.0.0.1:0")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_text(harness: Harness) -> str:
    port = harness.running.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        return answer.read().decode()


def scrape(harness: Harness) -> Samples:
    text = scrape_text(harness)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def test_metrics_show_what_get_status_shows_after_uploads_reports_and_an_evaluation(
    vendor: Vendor, make_harness: Callable[..., Harness]
) -> None:
    harness = make_harness(*METRICS)
    samples = scrape(harness)
    assert value(samples, "licensing_runtime_state", state="NORMAL") == 1
    assert value(samples, "licensing_license_valid") == 0
    assert "licensing_license_max_dp_cores" not in names(samples)
    assert value(samples, "licensing_evaluations_total") == 0
    assert "licensing_license_file_reload_errors_total" not in names(samples)

    harness.admin.upload(vendor.issue(serial_number="LIC-SMALL", max_dp_cores=4))
    harness.gateway.report_usage("gw-1", 3)
    harness.gateway.report_usage("gw-2", 3)
    harness.advance_to(midnight_after(START) + 60)  # the day is evaluated: peak 6 > 4
    harness.gateway.report_usage("gw-1", 2)
    assert harness.control_plane.check_write("route", Operation.CREATE).allowed  # grace
    unlicensed = harness.control_plane.check_write("route", Operation.CREATE, "no-such-feature")
    assert not unlicensed.allowed
    harness.control_plane.check_write("route", Operation.DELETE)
    with pytest.raises(LicensingError):
        harness.client("wrong-token").check_write("route", Operation.CREATE)

    status = harness.admin.status()
    samples = scrape(harness)
    assert status.state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert value(samples, "licensing_runtime_state", state="DP_CORE_EXCEEDED") == 1
    assert value(samples, "licensing_runtime_state", state="NORMAL") == 0
    assert value(samples, "licensing_runtime_state", state="RESTRICTED") == 0
    assert value(samples, "licensing_license_valid") == 1
    assert value(samples, "licensing_license_info", serial_number="LIC-SMALL", source="upload") == 1
    assert value(samples, "licensing_deployment_info", deployment_id=status.deployment_id) == 1
    assert value(samples, "licensing_license_expiry_timestamp_seconds") == pytest.approx(
        status.license.end_time.ToSeconds()
    )
    assert value(samples, "licensing_license_max_dp_cores") == status.license.max_dp_cores == 4
    assert value(samples, "licensing_current_total_cores") == status.current_total_cores == 2
    assert value(samples, "licensing_live_instances") == status.live_instances == 1
    assert value(samples, "licensing_last_evaluated_day_peak_cores") == (
        status.last_evaluated_day.peak_cores
    )
    assert status.last_evaluated_day.peak_cores == 6
    assert value(samples, "licensing_last_evaluation_timestamp_seconds") == pytest.approx(
        status.last_evaluated_day.evaluation_time.ToNanoseconds() / 1e9
    )
    assert value(samples, "licensing_grace_end_timestamp_seconds") == pytest.approx(
        status.grace_end_time.ToSeconds()
    )
    assert value(samples, "licensing_evaluations_total") == 1
    assert value(samples, "licensing_clock_moved_back") == 0

    def rpc_count(method: str, code: str) -> float:
        return value(
            samples,
            "licensing_rpc_handling_seconds_count",
            grpc_service="licensing.v1.LicenseService",
            grpc_method=method,
            grpc_code=code,
        )

    assert rpc_count("CheckWrite", "OK") == 3
    assert rpc_count("CheckWrite", "UNAUTHENTICATED") == 1
    assert rpc_count("ReportUsage", "OK") == 3
    assert rpc_count("Upload", "OK") == 1
    assert rpc_count("GetStatus", "OK") == 1
    smallest_bucket = value(
        samples,
        "licensing_rpc_handling_seconds_bucket",
        grpc_service="licensing.v1.LicenseService",
        grpc_method="CheckWrite",
        grpc_code="OK",
        le="5e-05",
    )
    assert 0 <= smallest_bucket <= 3

    def decisions(reason: str, allowed: str) -> float:
        return value(
            samples, "licensing_check_write_decisions_total", reason=reason, allowed=allowed
        )

    assert decisions("GRACE_PERIOD", "true") == 1
    assert decisions("FEATURE_NOT_LICENSED", "false") == 1
    assert decisions("DELETE", "true") == 1


def test_the_grace_end_disappears_and_restricted_shows_after_eight_days_over_quota(
    vendor: Vendor, make_harness: Callable[..., Harness]
) -> None:
    harness = make_harness(*METRICS)
    harness.admin.upload(vendor.issue(max_dp_cores=1))
    for day in range(8):
        harness.gateway.report_usage("gw-1", 8)
        harness.advance_to(midnight_after(START, day + 1) + 1)

    status = harness.admin.status()
    samples = scrape(harness)
    assert status.state == pb.RUNTIME_STATE_RESTRICTED
    assert value(samples, "licensing_runtime_state", state="RESTRICTED") == 1
    assert "licensing_grace_end_timestamp_seconds" not in names(samples)
    assert value(samples, "licensing_evaluations_total") == 8
    assert not harness.control_plane.check_write("route", Operation.UPDATE).allowed
    samples = scrape(harness)
    assert (
        value(
            samples, "licensing_check_write_decisions_total", reason="RESTRICTED", allowed="false"
        )
        == 1
    )


def test_license_file_reload_errors_are_counted_once_per_distinct_content(
    tmp_path: Path, vendor: Vendor, make_harness: Callable[..., Harness]
) -> None:
    license_path = tmp_path / "license.jws"
    license_path.write_text(vendor.issue(serial_number="LIC-FILE"))
    harness = make_harness(*METRICS, "--license-file", str(license_path))
    samples = scrape(harness)
    assert value(samples, "licensing_license_file_reload_errors_total") == 0
    assert value(samples, "licensing_license_file_last_read_successful") == 1
    assert value(samples, "licensing_license_info", serial_number="LIC-FILE", source="file") == 1

    watcher = next(e for e in harness.running.extras if isinstance(e, LicenseFileWatcher))
    license_path.write_text("not a license")
    watcher.poll_once()
    watcher.poll_once()

    samples = scrape(harness)
    status = harness.admin.status()
    assert status.license_file.last_error
    assert value(samples, "licensing_license_file_reload_errors_total") == 1
    assert value(samples, "licensing_license_file_last_read_successful") == 0


def test_two_servers_in_one_process_keep_their_own_metrics(
    tmp_path: Path, vendor: Vendor, make_harness: Callable[..., Harness]
) -> None:
    first = make_harness(*METRICS, data_dir=tmp_path / "one")
    second = make_harness(*METRICS, data_dir=tmp_path / "two")
    first.control_plane.check_write("route", Operation.READ)

    def check_writes(harness: Harness) -> float:
        return scrape(harness).get(
            (
                "licensing_rpc_handling_seconds_count",
                frozenset(
                    {
                        "grpc_service": "licensing.v1.LicenseService",
                        "grpc_method": "CheckWrite",
                        "grpc_code": "OK",
                    }.items()
                ),
            ),
            0.0,
        )

    assert check_writes(first) == 1
    assert check_writes(second) == 0


def test_metrics_are_off_unless_asked_for(harness: Harness) -> None:
    assert not [e for e in harness.running.extras if isinstance(e, MetricsServer)]


def promtool() -> str:
    """Prometheus's own checker (Debian's `prometheus` package); required under CI."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def test_a_scrape_with_every_metric_passes_promtool_check_metrics(
    tmp_path: Path, vendor: Vendor, make_harness: Callable[..., Harness]
) -> None:
    checker = promtool()
    license_path = tmp_path / "license.jws"
    license_path.write_text("not a license")
    harness = make_harness(*METRICS, "--license-file", str(license_path))
    harness.admin.upload(vendor.issue(max_dp_cores=4))
    harness.gateway.report_usage("gw-1", 8)
    harness.advance_to(midnight_after(START) + 60)  # evaluated: over quota, in grace
    harness.control_plane.check_write("route", Operation.CREATE)
    status_over_http = urllib.request.Request(
        f"http://127.0.0.1:{harness.running.http_port}/api/license",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    with urllib.request.urlopen(status_over_http, timeout=10) as answer:
        assert answer.status == 200
    text = scrape_text(harness)
    for family in (
        "licensing_license_expiry_timestamp_seconds",
        "licensing_grace_end_timestamp_seconds",
        "licensing_last_evaluation_timestamp_seconds",
        "licensing_license_file_reload_errors_total",
        "licensing_check_write_decisions_total",
        "licensing_http_request_handling_seconds_count",
    ):
        assert f"\n{family}" in text, family

    checked = subprocess.run(
        [checker, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")
