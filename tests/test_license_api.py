"""Upload, Validate and GetStatus through a real server, and the bad input that changes nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from conftest import (
    ADMIN_TOKEN,
    CONTROL_PLANE_TOKEN,
    DAY,
    DEPLOYMENT_ID,
    GATEWAY_TOKEN,
    START,
    Harness,
    Vendor,
    grpcurl,
    make_vendor,
    midnight_after,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.json_format import MessageToDict
from grpc_health.v1 import health_pb2, health_pb2_grpc
from licensing.client import LicensingClient, LicensingError, Operation
from licensing.v1 import licensing_pb2 as pb

from licensing_server.domain.license import issue_license, public_key_pem

# storage is part of every rule here: each test runs on SQLite and on PostgreSQL
pytestmark = pytest.mark.both_backends


def status_fingerprint(harness: Harness) -> dict[str, object]:
    """What a rejected license must leave untouched: everything GetStatus shows but the clock."""
    status = MessageToDict(harness.admin.status())
    status.pop("clock", None)
    return status


def upload_rejection(harness: Harness, text: str) -> LicensingError:
    with pytest.raises(LicensingError) as raised:
        harness.admin.upload(text)
    return raised.value


def test_status_shows_the_deployment_id_before_any_license(harness: Harness) -> None:
    status = harness.admin.status()
    assert status.deployment_id == DEPLOYMENT_ID
    assert status.deployment_time.seconds == int(START)
    assert not status.HasField("license")
    assert not status.license_valid
    assert status.state == pb.RUNTIME_STATE_NORMAL
    assert any(w.kind == pb.WARNING_KIND_NO_LICENSE for w in status.warnings)


def test_an_uploaded_license_is_active_and_shown_in_status(
    harness: Harness, vendor: Vendor
) -> None:
    response = harness.admin.upload(vendor.issue(features=["api7-gateway", "api7-portal"]))
    assert response.license.serial_number == "LIC-0001"
    assert not response.pending and not response.unchanged
    status = harness.control_plane.status()
    assert status.license.serial_number == "LIC-0001"
    assert status.license.customer == "Example Corp"
    assert status.license.max_dp_cores == 16
    assert list(status.license.features) == ["api7-gateway", "api7-portal"]
    assert status.license.deployment_id == DEPLOYMENT_ID
    assert status.license.expiration_time.seconds == int(START + 365 * DAY)
    assert status.license.end_time.seconds == int(START + 365 * DAY)
    assert status.license_valid
    assert status.license_source == pb.LICENSE_SOURCE_UPLOAD
    assert status.license_applied_time.seconds == int(START)
    assert status.days_until_expiration == 365


def test_uploading_the_active_license_again_changes_nothing_and_succeeds(
    harness: Harness, vendor: Vendor
) -> None:
    text = vendor.issue()
    harness.admin.upload(text)
    before = status_fingerprint(harness)
    again = harness.admin.upload("  " + text + "\n")
    assert again.unchanged
    assert status_fingerprint(harness) == before
    assert len(harness.running.store.license_history()) == 1


def padded(token: str) -> str:
    """The same license with `=` padding on its 64-byte signature (86 base64url characters)."""
    assert len(token.rsplit(".", 1)[1]) == 86
    return token + "=="


@pytest.mark.parametrize(
    "make_text",
    [
        lambda v: v.issue(),
        lambda v: v.issue(serial_number="LIC-RENEWAL", effective_at=START + 10 * DAY),
    ],
    ids=["active", "pending"],
)
def test_the_same_license_with_a_padded_signature_uploads_unchanged(
    harness: Harness, vendor: Vendor, make_text: Callable[[Vendor], str]
) -> None:
    text = make_text(vendor)
    first = harness.admin.upload(text)
    before = status_fingerprint(harness)

    again = harness.admin.upload(padded(text))
    assert again.unchanged
    assert again.pending == first.pending
    assert status_fingerprint(harness) == before
    assert len(harness.running.store.license_history()) == 1


def test_a_padded_copy_of_the_active_license_validates_as_already_active(
    harness: Harness, vendor: Vendor
) -> None:
    text = vendor.issue()
    harness.admin.upload(text)
    verdict = harness.admin.validate(padded(text))
    assert verdict.valid
    assert verdict.already_active


def test_a_pending_license_keeps_the_active_one_in_force_until_its_effective_time(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-OLD", expires_at=START + 10 * DAY))
    renewal = vendor.issue(
        serial_number="LIC-NEW",
        effective_at=START + 10 * DAY,
        expires_at=START + 375 * DAY,
        max_dp_cores=32,
    )
    response = harness.admin.upload(renewal)
    assert response.pending
    status = harness.admin.status()
    assert status.license.serial_number == "LIC-OLD"
    assert status.pending_license.serial_number == "LIC-NEW"

    harness.advance_to(START + 10 * DAY - 1)
    assert harness.admin.status().license.serial_number == "LIC-OLD"
    harness.clock.set(START + 10 * DAY)
    # the takeover needs no manual step, and a write right at that instant already sees it
    decision = harness.control_plane.check_write("route", Operation.CREATE)
    assert decision.allowed
    assert decision.license_serial_number == "LIC-NEW"
    status = harness.admin.status()
    assert status.license.serial_number == "LIC-NEW"
    assert not status.HasField("pending_license")
    assert status.license_applied_time.seconds == int(START + 10 * DAY)


@pytest.mark.parametrize(
    ("make_text", "reason"),
    [
        (lambda v: "", "MALFORMED"),
        (lambda v: "   \n\t ", "MALFORMED"),
        (lambda v: os.urandom(1024 * 1024).decode("latin-1"), "MALFORMED"),
        (lambda v: base64.b64encode(os.urandom(3000)).decode(), "MALFORMED"),
        (lambda v: v.issue(deployment_id="some-other-deployment"), "DEPLOYMENT_MISMATCH"),
        (lambda v: v.issue(effective_at=START - 40 * DAY, expires_at=START - DAY), "EXPIRED"),
    ],
    ids=["empty", "whitespace", "1MB-random", "base64-noise", "other-deployment", "expired"],
)
def test_a_rejected_license_changes_nothing(
    harness: Harness, vendor: Vendor, make_text: Callable[[Vendor], str], reason: str
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-IN-FORCE"))
    before = status_fingerprint(harness)
    rejected = upload_rejection(harness, make_text(vendor))
    assert rejected.code == grpc.StatusCode.INVALID_ARGUMENT
    assert rejected.reason == reason
    assert rejected.message
    assert status_fingerprint(harness) == before
    assert len(harness.running.store.license_history()) == 1


def test_a_license_signed_by_an_unknown_key_is_rejected_as_unknown_key(
    harness: Harness, tmp_path: Path
) -> None:
    stranger = make_vendor(tmp_path / "stranger", kid="stranger")
    rejected = upload_rejection(harness, stranger.issue())
    assert (rejected.code, rejected.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_KEY")


def test_a_trusted_kid_with_a_forged_signature_is_rejected_as_bad_signature(
    harness: Harness, vendor: Vendor
) -> None:
    forged = issue_license(
        Ed25519PrivateKey.generate(),
        vendor.kid,
        serial_number="LIC-FORGED",
        customer="Mallory",
        effective_at=START - DAY,
        expires_at=START + DAY,
        max_dp_cores=100000,
        features=[],
        deployment_id=DEPLOYMENT_ID,
        free_trial=False,
    )
    assert upload_rejection(harness, forged).reason == "BAD_SIGNATURE"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims() -> dict[str, object]:
    return {
        "serial_number": "LIC-EVIL",
        "customer": "Mallory",
        "nbf": int(START - DAY),
        "exp": int(START + 999 * DAY),
        "max_dp_cores": 100000,
        "features": ["everything"],
        "deployment_id": DEPLOYMENT_ID,
        "free_trial": False,
    }


def test_alg_none_is_rejected_as_unsupported_algorithm(harness: Harness, vendor: Vendor) -> None:
    header = _b64(json.dumps({"alg": "none", "kid": vendor.kid}).encode())
    token = f"{header}.{_b64(json.dumps(_claims()).encode())}."
    assert upload_rejection(harness, token).reason == "UNSUPPORTED_ALGORITHM"


def test_hs256_keyed_with_the_public_key_is_rejected_as_unsupported_algorithm(
    harness: Harness, vendor: Vendor
) -> None:
    header = _b64(json.dumps({"alg": "HS256", "kid": vendor.kid}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    mac = hmac.new(
        public_key_pem(vendor.key.public_key()), f"{header}.{payload}".encode(), hashlib.sha256
    ).digest()
    assert (
        upload_rejection(harness, f"{header}.{payload}.{_b64(mac)}").reason
        == "UNSUPPORTED_ALGORITHM"
    )


def _signed(vendor: Vendor, header_json: str, payload_json: str) -> str:
    """A compact JWS over exactly these header and payload texts, signed by the vendor."""
    signing_input = f"{_b64(header_json.encode())}.{_b64(payload_json.encode())}"
    return f"{signing_input}.{_b64(vendor.key.sign(signing_input.encode()))}"


# "a short, escaped prefix": far below what a gRPC status message may carry
SHORT = 300
# a header value as long as still fits in a license (at most 64 Ki characters)
LONG = 40_000


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": "EdDSA", "kid": "k" * LONG}, "UNKNOWN_KEY"),
        ({"alg": "A" * LONG, "kid": "vendor-test"}, "UNSUPPORTED_ALGORITHM"),
        ({"alg": "EdDSA", "kid": "vendor-test", "crit": ["c" * LONG]}, "MALFORMED"),
    ],
    ids=["kid", "alg", "crit"],
)
def test_a_huge_header_value_is_refused_with_its_reason_and_a_short_message(
    harness: Harness, vendor: Vendor, header: dict[str, object], reason: str
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-IN-FORCE"))
    before = status_fingerprint(harness)
    token = _signed(vendor, json.dumps(header), json.dumps(_claims()))

    rejected = upload_rejection(harness, token)
    assert (rejected.code, rejected.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert 0 < len(rejected.message) < SHORT
    verdict = harness.admin.validate(token)
    assert not verdict.valid
    assert pb.LicenseRejectionReason.Name(verdict.reason) == "LICENSE_REJECTION_REASON_" + reason
    assert 0 < len(verdict.message) < SHORT
    assert status_fingerprint(harness) == before


@pytest.mark.parametrize(
    "overrides",
    [
        {"customer": "Soci\udce9t\udce9"},
        {"features": ["api7-gateway", "api7-\ud800"]},
    ],
    ids=["customer", "features"],
)
def test_a_lone_surrogate_in_a_license_is_rejected_as_malformed_and_status_still_answers(
    harness: Harness, vendor: Vendor, overrides: dict[str, object]
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-IN-FORCE"))
    before = status_fingerprint(harness)
    # json.dumps escapes a lone surrogate as \udce9: valid JSON, but not text
    token = _signed(
        vendor,
        json.dumps({"alg": "EdDSA", "kid": vendor.kid}),
        json.dumps({**_claims(), **overrides}),
    )

    rejected = upload_rejection(harness, token)
    assert (rejected.code, rejected.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED")
    verdict = harness.admin.validate(token)
    assert (verdict.valid, verdict.reason) == (False, pb.LICENSE_REJECTION_REASON_MALFORMED)
    assert status_fingerprint(harness) == before


@pytest.mark.parametrize("part", ["payload", "header"])
def test_a_license_nested_deeper_than_the_recursion_limit_is_rejected_as_malformed(
    harness: Harness, vendor: Vendor, part: str
) -> None:
    header = json.dumps({"alg": "EdDSA", "kid": vendor.kid})
    payload = json.dumps(_claims())
    deep = ', "x": ' + "[" * 20_000 + "]" * 20_000 + "}"
    if part == "header":
        header = header[:-1] + deep
    else:
        payload = payload[:-1] + deep
    token = _signed(vendor, header, payload)

    rejected = upload_rejection(harness, token)
    assert (rejected.code, rejected.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED")
    verdict = harness.admin.validate(token)
    assert (verdict.valid, verdict.reason) == (False, pb.LICENSE_REJECTION_REASON_MALFORMED)


def test_a_free_trial_for_a_deployment_older_than_90_days_is_rejected_as_expired(
    harness: Harness, vendor: Vendor
) -> None:
    harness.advance_to(START + 91 * DAY)
    trial = vendor.issue(
        serial_number="TRIAL-1",
        free_trial=True,
        effective_at=START + 90 * DAY,
        expires_at=START + 120 * DAY,
    )
    rejected = upload_rejection(harness, trial)
    assert rejected.reason == "EXPIRED"
    assert "90 days" in rejected.message


def test_a_free_trial_ends_90_days_after_deployment_in_status(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(free_trial=True, expires_at=START + 365 * DAY))
    status = harness.admin.status()
    assert status.license.free_trial
    assert status.license.end_time.seconds == int(START + 90 * DAY)
    harness.advance_to(START + 90 * DAY)
    decision = harness.control_plane.check_write("route", Operation.CREATE)
    assert not decision.allowed
    assert decision.reason == pb.DECISION_REASON_LICENSE_EXPIRED


def test_a_trial_that_ends_before_it_begins_is_rejected_as_expired(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-PAID"))
    before = status_fingerprint(harness)
    # effective after deployment + 90 days: it would be pending, and then never in force
    trial = vendor.issue(
        serial_number="TRIAL-LATE",
        free_trial=True,
        effective_at=START + 100 * DAY,
        expires_at=START + 200 * DAY,
    )

    verdict = harness.admin.validate(trial)
    assert (verdict.valid, verdict.reason) == (False, pb.LICENSE_REJECTION_REASON_EXPIRED)
    assert "never" in verdict.message
    rejected = upload_rejection(harness, trial)
    assert (rejected.code, rejected.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "EXPIRED")
    assert rejected.message == verdict.message
    assert status_fingerprint(harness) == before

    harness.advance_to(START + 100 * DAY)
    decision = harness.control_plane.check_write("route", Operation.CREATE)
    assert (decision.allowed, decision.license_serial_number) == (True, "LIC-PAID")


def test_a_never_valid_trial_stored_as_pending_before_the_rule_never_takes_over(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    first = make_harness()
    first.admin.upload(vendor.issue(serial_number="LIC-PAID"))
    trial = vendor.issue(
        serial_number="TRIAL-LATE",
        free_trial=True,
        effective_at=START + 100 * DAY,
        expires_at=START + 200 * DAY,
    )
    # what a server without the rule stored: the trial waiting for its effective time
    store = first.running.store
    store.add_pending_license(
        {
            "serial_number": "TRIAL-LATE",
            "customer": "Example Corp",
            "key_id": vendor.kid,
            "token": trial,
            "token_sha256": "",
            "source": "upload",
            "received_at": START,
            "effective_at": START + 100 * DAY,
            "expires_at": START + 200 * DAY,
            "max_dp_cores": 16,
        },
        START,
        START,
        expected_revision=store.revision(),
    )
    first.running.stop(grace=0.5)
    second = make_harness()
    assert not second.control_plane.status().HasField("pending_license")
    second.advance_to(START + 100 * DAY)
    decision = second.control_plane.check_write("route", Operation.CREATE)
    assert (decision.allowed, decision.license_serial_number) == (True, "LIC-PAID")


def test_validate_returns_the_rejection_as_data_and_changes_nothing(
    harness: Harness, vendor: Vendor
) -> None:
    before = status_fingerprint(harness)
    verdict = harness.admin.validate(vendor.issue(deployment_id="elsewhere"))
    assert not verdict.valid
    assert verdict.reason == pb.LICENSE_REJECTION_REASON_DEPLOYMENT_MISMATCH
    assert "elsewhere" in verdict.message
    assert verdict.license.deployment_id == "elsewhere"
    garbage = harness.admin.validate("garbage")
    assert (garbage.valid, garbage.reason) == (False, pb.LICENSE_REJECTION_REASON_MALFORMED)
    assert status_fingerprint(harness) == before


def test_validate_says_what_applying_the_license_would_do(harness: Harness, vendor: Vendor) -> None:
    harness.admin.upload(vendor.issue(max_dp_cores=16, features=["api7-gateway", "api7-portal"]))
    for i in range(5):
        harness.gateway.report_usage(f"gw-{i}", 4)
    harness.advance_to((START // DAY + 1) * DAY + 60)
    before = status_fingerprint(harness)
    assert harness.admin.status().state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED

    smaller = vendor.issue(
        serial_number="LIC-2", max_dp_cores=8, features=["api7-gateway", "api7-ai"]
    )
    verdict = harness.admin.validate(smaller)
    assert verdict.valid
    assert verdict.last_evaluated_day == "2027-01-01"
    assert verdict.last_evaluated_peak_cores == 20
    assert verdict.core_headroom == -12
    assert verdict.resulting_state == pb.RUNTIME_STATE_DP_CORE_EXCEEDED
    assert list(verdict.features_gained) == ["api7-ai"]
    assert list(verdict.features_lost) == ["api7-portal"]
    assert verdict.days_until_expiration == 364

    bigger = harness.admin.validate(vendor.issue(serial_number="LIC-3", max_dp_cores=64))
    assert bigger.resulting_state == pb.RUNTIME_STATE_NORMAL
    assert bigger.core_headroom == 44
    assert status_fingerprint(harness) == before


def test_a_missing_token_is_unauthenticated(harness: Harness, vendor: Vendor) -> None:
    with harness.client(None) as anonymous, pytest.raises(LicensingError) as raised:
        anonymous.upload(vendor.issue())
    assert (raised.value.code, raised.value.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "MISSING_TOKEN",
    )
    assert not harness.admin.status().HasField("license")


def test_a_wrong_token_is_unauthenticated(harness: Harness, vendor: Vendor) -> None:
    with harness.client("not-" + ADMIN_TOKEN) as intruder, pytest.raises(LicensingError) as raised:
        intruder.upload(vendor.issue())
    assert (raised.value.code, raised.value.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_TOKEN",
    )
    assert not harness.admin.status().HasField("license")


def test_a_gateway_token_may_not_upload(harness: Harness, vendor: Vendor) -> None:
    with pytest.raises(LicensingError) as raised:
        harness.gateway.upload(vendor.issue())
    assert (raised.value.code, raised.value.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "ROLE_NOT_ALLOWED",
    )
    assert not harness.admin.status().HasField("license")


@pytest.mark.parametrize(
    ("token", "allowed"),
    [
        (
            ADMIN_TOKEN,
            {
                "Upload",
                "Validate",
                "GetStatus",
                "ReportUsage",
                "CheckWrite",
                "GetUsageHistory",
                "ListPeakInstances",
            },
        ),
        (GATEWAY_TOKEN, {"ReportUsage"}),
        (
            CONTROL_PLANE_TOKEN,
            {"GetStatus", "CheckWrite", "GetUsageHistory", "ListPeakInstances"},
        ),
    ],
    ids=["admin", "gateway", "control-plane"],
)
def test_each_role_may_call_exactly_its_methods(
    harness: Harness, vendor: Vendor, token: str, allowed: set[str]
) -> None:
    calls: dict[str, Callable[[LicensingClient], object]] = {
        "Upload": lambda c: c.upload(vendor.issue()),
        "Validate": lambda c: c.validate(vendor.issue()),
        "GetStatus": lambda c: c.status(),
        "ReportUsage": lambda c: c.report_usage("gw-1", 2),
        "CheckWrite": lambda c: c.check_write("route", Operation.READ),
        "GetUsageHistory": lambda c: c.usage_history(),
        "ListPeakInstances": lambda c: c.peak_instances_page("2027-01-01"),
    }
    harness.advance_to(midnight_after(START) + 60)  # 2027-01-01 is evaluated
    with harness.client(token) as client:
        for method, call in calls.items():
            if method in allowed:
                call(client)
            else:
                with pytest.raises(LicensingError) as raised:
                    call(client)
                assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED, method


def test_health_and_reflection_need_no_token(harness: Harness) -> None:
    # the real grpcurl, with no authorization header, against a server that has tokens
    listed = grpcurl("-plaintext", harness.target, "list")
    assert listed.returncode == 0, listed.stderr
    assert {"licensing.v1.LicenseService", "grpc.health.v1.Health"} <= set(listed.stdout.split())

    described = grpcurl("-plaintext", harness.target, "describe", "licensing.v1.LicenseService")
    assert described.returncode == 0, described.stderr
    rpcs = set(re.findall(r"\brpc (\w+) \(", described.stdout))
    assert rpcs == {
        method.name for method in pb.DESCRIPTOR.services_by_name["LicenseService"].methods
    }

    for service in ("", "licensing.v1.LicenseService"):
        checked = grpcurl(
            "-plaintext",
            "-d",
            json.dumps({"service": service}),
            harness.target,
            "grpc.health.v1.Health/Check",
        )
        assert checked.returncode == 0, checked.stderr
        assert json.loads(checked.stdout) == {"status": "SERVING"}


def test_health_is_not_serving_once_shutdown_begins(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness()
    harness.running.health.enter_graceful_shutdown()
    with grpc.insecure_channel(harness.target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_license_history_records_every_license_and_where_it_came_from(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-A"))
    harness.clock.advance(60)
    harness.admin.upload(vendor.issue(serial_number="LIC-B"))
    history = harness.running.store.license_history()
    assert [(r["serial_number"], r["status"], r["source"]) for r in history] == [
        ("LIC-B", "active", "upload"),
        ("LIC-A", "superseded", "upload"),
    ]


def test_moving_the_clock_back_never_extends_a_license(
    harness: Harness, vendor: Vendor, caplog: pytest.LogCaptureFixture
) -> None:
    harness.admin.upload(vendor.issue(expires_at=START + 2 * DAY))
    harness.advance_to(START + 2 * DAY + 60)
    assert not harness.control_plane.check_write("route", Operation.CREATE).allowed
    harness.clock.set(START + DAY)  # an operator winds the clock back a day
    with caplog.at_level(logging.WARNING, logger="licensing"):
        harness.service.tick()
        harness.control_plane.check_write("route", Operation.CREATE)
    # the step is logged once, not at every call while the clock is behind
    [logged] = [r.getMessage() for r in caplog.records if "moved back" in r.getMessage()]
    assert "86460.0 s" in logged
    decision = harness.control_plane.check_write("route", Operation.CREATE)
    assert (decision.allowed, decision.reason) == (False, pb.DECISION_REASON_LICENSE_EXPIRED)
    status = harness.admin.status()
    assert not status.license_valid
    assert status.clock.moved_back
    assert status.clock.high_water_time.seconds == int(START + 2 * DAY + 60)
    assert any(w.kind == pb.WARNING_KIND_CLOCK_MOVED_BACK for w in status.warnings)


def test_the_last_backward_step_is_unset_until_the_clock_moves_back(
    harness: Harness, vendor: Vendor
) -> None:
    status = harness.admin.status()
    assert not status.clock.moved_back
    assert not status.clock.HasField("last_backward_step")
    assert not status.clock.HasField("last_backward_step_time")
    as_json = MessageToDict(status, preserving_proto_field_name=True)
    assert "last_backward_step" not in as_json["clock"]

    harness.advance_to(START + DAY)
    harness.clock.set(START + DAY - 90)
    harness.service.tick()
    status = harness.admin.status()
    assert status.clock.moved_back
    assert status.clock.last_backward_step.seconds == 90
    assert status.clock.HasField("last_backward_step_time")


def test_the_clock_high_water_mark_survives_a_restart(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    first = make_harness()
    first.admin.upload(vendor.issue(expires_at=START + 2 * DAY))
    first.advance_to(START + 2 * DAY + 60)
    first.running.stop(grace=0)
    first.clock.set(START)  # restarted with the clock two days behind
    second = make_harness()
    decision = second.control_plane.check_write("route", Operation.CREATE)
    assert decision.reason == pb.DECISION_REASON_LICENSE_EXPIRED
    assert second.admin.status().clock.moved_back


def test_an_expiry_within_the_warning_window_is_in_status_and_check_write(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue(expires_at=START + 40 * DAY))
    assert not harness.control_plane.check_write("route", Operation.CREATE).warnings
    harness.advance_to(START + 20 * DAY)
    decision = harness.control_plane.check_write("route", Operation.CREATE)
    assert decision.allowed
    [warning] = decision.warnings
    assert warning.kind == pb.WARNING_KIND_LICENSE_EXPIRING
    assert "in 20 days" in warning.message
    status = harness.admin.status()
    assert status.days_until_expiration == 20
    assert any(w.kind == pb.WARNING_KIND_LICENSE_EXPIRING for w in status.warnings)


def test_the_expiry_warning_window_is_configurable(
    make_harness: Callable[..., Harness], vendor: Vendor
) -> None:
    harness = make_harness("--expiry-warning-days", "60")
    harness.admin.upload(vendor.issue(expires_at=START + 50 * DAY))
    [warning] = harness.control_plane.check_write("route", Operation.READ).warnings
    assert warning.kind == pb.WARNING_KIND_LICENSE_EXPIRING
    assert "in 50 days" in warning.message


def test_a_long_day_in_usage_history_is_invalid_argument_with_a_short_message(
    harness: Harness,
) -> None:
    with pytest.raises(LicensingError) as raised:
        harness.control_plane.usage_history(day="2027-01-01" + "x" * 100_000)
    assert (raised.value.code, raised.value.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert 0 < len(raised.value.message) < SHORT
    assert "100010 characters" in raised.value.message


def test_usage_history_returns_peak_instances_only_when_asked(
    harness: Harness, vendor: Vendor
) -> None:
    harness.admin.upload(vendor.issue())
    harness.gateway.report_usage("gw-a", 4)
    harness.advance_to((START // DAY + 1) * DAY + 60)
    harness.gateway.report_usage("gw-b", 2)
    harness.advance_to((START // DAY + 2) * DAY + 60)
    plain = harness.control_plane.usage_history()
    assert [d.day for d in plain.days] == ["2027-01-02", "2027-01-01"]
    assert all(not d.peak_instances for d in plain.days)
    [one] = harness.control_plane.usage_history(day="2027-01-01", include_peak_instances=True).days
    assert [(i.instance_id, i.cores) for i in one.peak_instances] == [("gw-a", 4)]
    with pytest.raises(LicensingError) as raised:
        harness.control_plane.usage_history(day="yesterday")
    assert (raised.value.code, raised.value.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


def test_every_method_of_the_service_needs_a_token(harness: Harness) -> None:
    # every method the contract has, however the server registers its handlers
    service = pb.DESCRIPTOR.services_by_name["LicenseService"]
    with grpc.insecure_channel(harness.target) as channel:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            call = (
                channel.unary_stream(path) if method.server_streaming else channel.unary_unary(path)
            )
            with pytest.raises(grpc.RpcError) as raised:
                answer = call(b"", timeout=10)
                if method.server_streaming:
                    next(iter(answer))
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, method.name
