"""licensectl as an operator runs it: a real subprocess against a real server on port 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    ADMIN_TOKEN,
    DAY,
    DEPLOYMENT_ID,
    GATEWAY_TOKEN,
    START,
    Harness,
    Vendor,
    free_port,
    midnight_after,
    self_signed_certificate,
    store_evaluated_days,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

CLI_TIMEOUT = 20.0


def licensectl(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    # the operator's own LICENSING_* variables must not leak into the test
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LICENSING_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "licensing.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def operator(
    harness: Harness, *args: str, token: str | None = ADMIN_TOKEN, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """licensectl pointed at the harness the way an operator would: through the environment."""
    env = {"LICENSING_SERVER": harness.target}
    if token is not None:
        env["LICENSING_TOKEN"] = token
    return licensectl(*args, env=env, stdin=stdin)


def field_value(output: str, label: str) -> str:
    """The value licensectl printed after `label` (the first such line)."""
    for line in output.splitlines():
        text = line.strip()
        if text.startswith(label + " "):
            return text[len(label) :].strip()
    raise AssertionError(f"no {label!r} in:\n{output}")


def license_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    # a license file as a vendor mails it: with a trailing newline
    path.write_text(text + "\n")
    return str(path)


def go_over_quota_on_the_first_day(harness: Harness) -> None:
    """20 cores against the license's 16 on 2027-01-01, evaluated at the next midnight."""
    harness.gateway.report_usage("gw-a", 12)
    harness.gateway.report_usage("gw-b", 8)
    harness.advance_to(midnight_after(START) + 60)


def test_an_uploaded_license_shows_in_status_for_a_person_and_as_json(
    harness: Harness, vendor: Vendor, tmp_path: Path
) -> None:
    path = license_file(
        tmp_path, "license.jws", vendor.issue(features=["api7-gateway", "api7-portal"])
    )
    # the global options also work before the command
    uploaded = licensectl("--server", harness.target, "--token", ADMIN_TOKEN, "upload", path)
    assert uploaded.returncode == 0, uploaded.stderr
    assert "License LIC-0001 applied." in uploaded.stdout

    shown = operator(harness, "status")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Deployment ID")
    assert field_value(shown.stdout, "Deployment ID").startswith(DEPLOYMENT_ID)
    assert {
        label: field_value(shown.stdout, label)
        for label in (
            "License",
            "Customer",
            "Effective",
            "Expires",
            "Max DP cores",
            "Features",
            "Free trial",
            "Source",
            "Applied",
            "Runtime state",
            "Development mode",
        )
    } == {
        "License": "LIC-0001  (valid, 365 days left)",
        "Customer": "Example Corp",
        "Effective": "2026-12-31T10:00:00Z",
        "Expires": "2028-01-01T10:00:00Z",
        "Max DP cores": "16",
        "Features": "api7-gateway, api7-portal",
        "Free trial": "no",
        "Source": "upload",
        "Applied": "2027-01-01T10:00:00Z",
        "Runtime state": "NORMAL",
        "Development mode": "off",
    }

    as_json = operator(harness, "status", "--json")
    assert as_json.returncode == 0, as_json.stderr
    status = json.loads(as_json.stdout)
    assert status["deployment_id"] == DEPLOYMENT_ID
    assert status["license"]["serial_number"] == "LIC-0001"
    assert status["license"]["max_dp_cores"] == 16
    assert status["license_source"] == "LICENSE_SOURCE_UPLOAD"
    assert status["state"] == "RUNTIME_STATE_NORMAL"
    assert status["license_valid"] is True


def test_status_before_any_license_shows_the_deployment_id_to_send_to_the_vendor(
    harness: Harness,
) -> None:
    shown = operator(harness, "status")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Deployment ID")
    assert field_value(shown.stdout, "Deployment ID").startswith(DEPLOYMENT_ID)
    assert field_value(shown.stdout, "License").startswith("none installed")
    assert "  ! no license is installed" in shown.stdout


def test_upload_reads_the_license_from_stdin(harness: Harness, vendor: Vendor) -> None:
    uploaded = operator(harness, "upload", "-", stdin=vendor.issue() + "\n")
    assert uploaded.returncode == 0, uploaded.stderr
    assert harness.admin.status().license.serial_number == "LIC-0001"


def test_upload_of_the_active_license_again_says_nothing_changed(
    harness: Harness, vendor: Vendor, tmp_path: Path
) -> None:
    path = license_file(tmp_path, "license.jws", vendor.issue())
    harness.admin.upload(vendor.issue())
    again = operator(harness, "upload", path)
    assert again.returncode == 0, again.stderr
    assert "already in force: nothing changed" in again.stdout


def test_upload_of_a_rejected_license_exits_1_and_names_the_reason(
    harness: Harness, vendor: Vendor, tmp_path: Path
) -> None:
    harness.admin.upload(vendor.issue())
    before = harness.admin.status()
    # signed by someone else under the vendor's key id
    impostor = Vendor(Ed25519PrivateKey.generate(), vendor.kid, vendor.public_path)
    path = license_file(tmp_path, "forged.jws", impostor.issue(serial_number="LIC-FORGED"))

    rejected = operator(harness, "upload", path)
    assert rejected.returncode == 1
    assert rejected.stderr.startswith("error: BAD_SIGNATURE: ")
    assert rejected.stdout == ""
    after = harness.admin.status()
    assert after.license == before.license
    assert after.license_applied_time == before.license_applied_time


def test_validate_of_a_valid_license_shows_the_verdict_and_what_applying_it_would_do(
    harness: Harness, vendor: Vendor, tmp_path: Path
) -> None:
    harness.admin.upload(vendor.issue())
    go_over_quota_on_the_first_day(harness)
    smaller = vendor.issue(serial_number="LIC-2", max_dp_cores=12, features=["api7-portal"])
    path = license_file(tmp_path, "smaller.jws", smaller)

    shown = operator(harness, "validate", path)
    assert shown.returncode == 0, shown.stderr
    what_if = shown.stdout.split("If applied", 1)[1]
    assert field_value(shown.stdout, "Verdict") == "VALID"
    assert {
        label: field_value(what_if, label)
        for label in (
            "Resulting state",
            "Judged against",
            "Core headroom",
            "Features gained",
            "Features lost",
            "Until expiry",
            "Pending",
        )
    } == {
        "Resulting state": "DP_CORE_EXCEEDED  (grace ends 2027-01-09T00:00:00Z)",
        "Judged against": "2027-01-01's peak of 20 cores",
        "Core headroom": "-8 cores (OVER QUOTA by 8)",
        "Features gained": "api7-portal",
        "Features lost": "api7-gateway",
        "Until expiry": "364 days left",
        "Pending": "no: it would take effect at once",
    }

    as_json = operator(harness, "validate", "--json", path)
    assert as_json.returncode == 0, as_json.stderr
    verdict = json.loads(as_json.stdout)
    assert verdict["valid"] is True
    assert verdict["core_headroom"] == "-8"  # int64 is a string in the protobuf JSON mapping
    assert verdict["features_lost"] == ["api7-gateway"]
    # a what-if changes nothing
    assert harness.admin.status().license.serial_number == "LIC-0001"


def test_validate_of_a_pending_license_says_when_it_would_take_over(
    harness: Harness, vendor: Vendor, tmp_path: Path
) -> None:
    renewal = vendor.issue(
        serial_number="LIC-RENEWAL", effective_at=START + 10 * DAY, expires_at=START + 400 * DAY
    )
    shown = operator(harness, "validate", license_file(tmp_path, "renewal.jws", renewal))
    assert shown.returncode == 0, shown.stderr
    assert (
        field_value(shown.stdout, "Pending")
        == "yes: it would wait and take over 2027-01-11T10:00:00Z"
    )


def test_validate_of_an_invalid_license_exits_1_and_still_prints_the_verdict(
    harness: Harness, vendor: Vendor, tmp_path: Path
) -> None:
    expired = vendor.issue(effective_at=START - 30 * DAY, expires_at=START - DAY)
    path = license_file(tmp_path, "expired.jws", expired)

    shown = operator(harness, "validate", path)
    assert shown.returncode == 1
    assert field_value(shown.stdout, "Verdict") == "INVALID"
    assert field_value(shown.stdout, "Reason") == "EXPIRED"

    as_json = operator(harness, "--json", "validate", path)
    assert as_json.returncode == 1
    verdict = json.loads(as_json.stdout)
    assert verdict["valid"] is False
    assert verdict["reason"] == "LICENSE_REJECTION_REASON_EXPIRED"
    assert verdict["message"]


def test_a_gateway_token_calling_upload_exits_3_with_role_not_allowed(
    harness: Harness, vendor: Vendor, tmp_path: Path
) -> None:
    path = license_file(tmp_path, "license.jws", vendor.issue())
    refused = operator(harness, "upload", path, token=GATEWAY_TOKEN)
    assert refused.returncode == 3
    assert refused.stderr.startswith("error: ROLE_NOT_ALLOWED: ")
    assert not harness.admin.status().HasField("license")


def test_a_missing_token_exits_3_and_says_how_to_pass_one(harness: Harness) -> None:
    refused = operator(harness, "status", token=None)
    assert refused.returncode == 3
    assert refused.stderr.startswith("error: MISSING_TOKEN: ")
    assert "LICENSING_TOKEN" in refused.stderr


def test_a_token_read_from_a_secret_with_a_trailing_newline_still_works(harness: Harness) -> None:
    shown = operator(harness, "status", token=ADMIN_TOKEN + "\n")
    assert shown.returncode == 0, shown.stderr


def test_a_server_that_cannot_be_reached_exits_3() -> None:
    unreachable = licensectl(
        "--server", f"127.0.0.1:{free_port()}", "--token", ADMIN_TOKEN, "--timeout", "3", "status"
    )
    assert unreachable.returncode == 3
    assert unreachable.stderr.startswith(("error: UNAVAILABLE: ", "error: DEADLINE_EXCEEDED: "))


@pytest.mark.parametrize(
    "args",
    [
        ["upload", "no-such-license.jws"],
        ["usage", "--days", "0"],
        ["usage", "--day", "yesterday"],
        ["--ca-cert", "no-such-ca.pem", "status"],
        ["--ca-cert", __file__, "status"],
    ],
    ids=[
        "missing-license-file",
        "days-out-of-range",
        "day-not-a-date",
        "missing-ca-certificate",
        "not-a-pem",
    ],
)
def test_a_usage_error_or_unreadable_file_exits_2_without_calling_the_server(
    args: list[str],
) -> None:
    # nothing listens on this port: exit 2 proves the CLI stopped before calling
    failed = licensectl("--server", f"127.0.0.1:{free_port()}", *args)
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert failed.stderr


def test_usage_shows_each_days_peak_against_the_quota_and_the_state_changes(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue())
    go_over_quota_on_the_first_day(harness)
    harness.gateway.report_usage("gw-a", 12)
    harness.advance_to(midnight_after(START, days=2) + 60)

    shown = operator(harness, "usage", "--instances")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    second = next(line for line in lines if line.startswith("2027-01-02"))
    first = next(line for line in lines if line.startswith("2027-01-01"))
    assert lines.index(second) < lines.index(first), "newest first"
    assert second.split()[1:4] == ["12", "16", "NORMAL"]
    assert second.endswith("█" * 15 + "░" * 5 + " 12/16")
    assert first.split()[1:4] == ["20", "16", "DP_CORE_EXCEEDED"]
    assert first.endswith("█" * 20 + " 20/16 ▲ OVER QUOTA by 4")
    # the instances that made up 2027-01-01's peak follow its row
    instances = lines[lines.index(first) + 1 : lines.index(first) + 4]
    assert "peak at 2027-01-01T10:00:00Z from 2 instances" in instances[0]
    assert [line.split()[:2] for line in instances[1:]] == [["gw-a", "12"], ["gw-b", "8"]]
    changes = lines[lines.index("State changes, newest first") + 1 :]
    assert "2027-01-03T00:00:00Z  DP_CORE_EXCEEDED -> NORMAL" in changes[0]
    assert "evaluation of 2027-01-02" in changes[0]
    assert "2027-01-02T00:00:00Z  NORMAL -> DP_CORE_EXCEEDED" in changes[1]
    assert "(grace ends 2027-01-09T00:00:00Z)" in changes[1]

    as_json = operator(harness, "usage", "--day", "2027-01-01", "--json")
    assert as_json.returncode == 0, as_json.stderr
    history = json.loads(as_json.stdout)
    assert [day["day"] for day in history["days"]] == ["2027-01-01"]
    assert history["days"][0]["peak_cores"] == "20"  # int64 is a string in JSON
    assert history["days"][0]["state_after"] == "RUNTIME_STATE_DP_CORE_EXCEEDED"
    # instances only when asked for: a large fleet makes them large
    assert history["days"][0]["peak_instances"] == []
    assert history["max_dp_cores"] == 16


def test_usage_before_any_evaluated_day_says_so(harness: Harness) -> None:
    shown = operator(harness, "usage")
    assert shown.returncode == 0, shown.stderr
    assert "No day has been evaluated yet" in shown.stdout
    one_day = operator(harness, "usage", "--day", "2027-03-01")
    assert one_day.returncode == 0, one_day.stderr
    assert "2027-03-01 has not been evaluated." in one_day.stdout


def test_status_over_tls_trusts_the_given_ca_certificate(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    cert_path, key_path = self_signed_certificate(tmp_path)
    harness = make_harness("--tls-cert", str(cert_path), "--tls-key", str(key_path))

    shown = operator(harness, "--ca-cert", str(cert_path), "status")
    assert shown.returncode == 0, shown.stderr
    assert field_value(shown.stdout, "Deployment ID").startswith(DEPLOYMENT_ID)

    # a TLS server is not reachable in plaintext
    plaintext = operator(harness, "--timeout", "3", "status")
    assert plaintext.returncode == 3


def test_usage_of_one_day_with_instances_lists_every_instance_of_its_peak(
    tmp_path: Path, make_harness: Callable[..., Harness]
) -> None:
    # more than the server's default page, and more than a usage history carries per day
    ids = [f"gw-{n:04d}" for n in range(2_500)]
    store_evaluated_days(tmp_path / "data", {"2026-12-31": ids})
    harness = make_harness()

    shown = operator(harness, "usage", "--day", "2026-12-31", "--instances")
    assert shown.returncode == 0, shown.stderr
    assert "peak at 2026-12-31T22:00:00Z from 2500 instances:" in shown.stdout
    listed = [line.split()[0] for line in shown.stdout.splitlines() if line.startswith("      ")]
    assert listed == ids

    as_json = operator(harness, "usage", "--day", "2026-12-31", "--instances", "--json")
    assert as_json.returncode == 0, as_json.stderr
    [day] = json.loads(as_json.stdout)["days"]
    assert [i["instance_id"] for i in day["peak_instances"]] == ids
    assert day["peak_instances_truncated"] is False

    # over several days each day shows its first 1,000 and says where the rest are
    several = operator(harness, "usage", "--days", "3", "--instances")
    assert several.returncode == 0, several.stderr
    assert (
        "peak at 2026-12-31T22:00:00Z; the first 1000 instances of more "
        "(every one: licensectl usage --day 2026-12-31 --instances):"
    ) in several.stdout


def licensectl_into_a_closed_pipe(harness: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    """licensectl whose reader went away before it wrote, as `licensectl status | head -0`."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LICENSING_")}
    environ.update(LICENSING_SERVER=harness.target, LICENSING_TOKEN=ADMIN_TOKEN)
    try:
        return subprocess.run(
            [sys.executable, "-m", "licensing.cli", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=environ,
            timeout=CLI_TIMEOUT,
            check=False,
        )
    finally:
        os.close(write_end)


def test_a_reader_that_stops_early_is_no_error_and_the_exit_code_still_tells_the_outcome(
    harness: Harness, vendor: Vendor, tmp_path: Path
) -> None:
    status = licensectl_into_a_closed_pipe(harness, "status")
    assert (status.returncode, status.stderr) == (0, "")

    expired = vendor.issue(effective_at=START - 30 * DAY, expires_at=START - DAY)
    path = license_file(tmp_path, "expired.jws", expired)
    invalid = licensectl_into_a_closed_pipe(harness, "validate", path)
    assert (invalid.returncode, invalid.stderr) == (1, "")

    helped = licensectl_into_a_closed_pipe(harness, "--help")
    assert (helped.returncode, helped.stderr) == (0, "")


def json_error(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The one JSON object that licensectl --json writes to stderr when it fails."""
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    error: dict[str, object] = json.loads(line)
    assert set(error) == {"error", "code", "reason", "message"}
    return error


def test_with_json_an_error_is_one_json_object_on_stderr(
    harness: Harness, vendor: Vendor, tmp_path: Path
) -> None:
    impostor = Vendor(Ed25519PrivateKey.generate(), vendor.kid, vendor.public_path)
    forged = license_file(tmp_path, "forged.jws", impostor.issue())
    rejected = operator(harness, "--json", "upload", forged)
    assert rejected.returncode == 1
    error = json_error(rejected)
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "BAD_SIGNATURE")
    assert error["error"] == f"BAD_SIGNATURE: {error['message']}"

    no_token = operator(harness, "status", "--json", token=None)
    assert no_token.returncode == 3
    error = json_error(no_token)
    assert (error["code"], error["reason"]) == ("UNAUTHENTICATED", "MISSING_TOKEN")
    assert (
        error["error"] == f"MISSING_TOKEN: {error['message']} (pass --token or set LICENSING_TOKEN)"
    )

    # nothing was sent: no status code, no reason
    for args in (["upload", str(tmp_path / "missing.jws")], ["usage", "--days", "0"]):
        usage = operator(harness, "--json", *args)
        assert usage.returncode == 2
        error = json_error(usage)
        assert (error["code"], error["reason"]) == (None, None)
        assert error["error"] == error["message"]


@pytest.mark.parametrize("output", [[], ["--json"]], ids=["text", "json"])
def test_a_tls_failure_is_one_line_without_grpcs_own_log_lines(
    make_harness: Callable[..., Harness], tmp_path: Path, output: list[str]
) -> None:
    cert_path, key_path = self_signed_certificate(tmp_path)
    harness = make_harness("--tls-cert", str(cert_path), "--tls-key", str(key_path))
    # the server's certificate is not among the system's roots: the handshake fails
    failed = operator(harness, "--tls", "--timeout", "5", *output, "status")
    assert failed.returncode == 3
    [line] = failed.stderr.splitlines()
    if output:
        assert json.loads(line)["code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    else:
        assert line.startswith(("error: UNAVAILABLE: ", "error: DEADLINE_EXCEEDED: "))
