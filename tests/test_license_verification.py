"""The license verifier: each rejection reason code, through real Ed25519 signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
from typing import Any

import jwt
import pytest
from conftest import DAY, DEPLOYMENT_ID, START, Vendor
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from licensing_server.domain.license import (
    Deployment,
    LicenseRejected,
    RejectionReason,
    issue_license,
    public_key_pem,
    verify_license,
)

DEPLOYMENT = Deployment(DEPLOYMENT_ID, START)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "serial_number": "LIC-0001",
        "customer": "Example Corp",
        "nbf": int(START - DAY),
        "exp": int(START + 365 * DAY),
        "max_dp_cores": 16,
        "features": ["api7-gateway"],
        "deployment_id": DEPLOYMENT_ID,
        "free_trial": False,
    }
    values.update(overrides)
    return values


def sign_raw(vendor: Vendor, payload: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """Sign arbitrary claims, bypassing the issuer's own checks, as a careless vendor might."""
    return jwt.encode(payload, vendor.key, algorithm="EdDSA", headers=header or {"kid": vendor.kid})


def rejection(vendor: Vendor, text: str, now: float = START) -> LicenseRejected:
    with pytest.raises(LicenseRejected) as raised:
        verify_license(text, {vendor.kid: vendor.key.public_key()}, DEPLOYMENT, now)
    return raised.value


def test_a_correct_license_verifies_with_all_eight_properties(vendor: Vendor) -> None:
    lic = verify_license(vendor.issue(), {vendor.kid: vendor.key.public_key()}, DEPLOYMENT, START)
    assert lic.serial_number == "LIC-0001"
    assert lic.customer == "Example Corp"
    assert lic.effective_at == START - DAY
    assert lic.expires_at == START + 365 * DAY
    assert lic.max_dp_cores == 16
    assert lic.features == ("api7-gateway",)
    assert lic.deployment_id == DEPLOYMENT_ID
    assert lic.free_trial is False
    assert lic.key_id == vendor.kid


def test_surrounding_whitespace_is_ignored(vendor: Vendor) -> None:
    text = "\n\n  " + vendor.issue() + "  \r\n"
    lic = verify_license(text, {vendor.kid: vendor.key.public_key()}, DEPLOYMENT, START)
    assert lic.token == text.strip()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n",
        "not a license",
        "a.b.c",
        "a.b",
        "....",
        "eyJhbGciOiJFZERTQSJ9.%%%.AAAA",
    ],
)
def test_malformed_text_is_rejected_as_malformed(vendor: Vendor, text: str) -> None:
    assert rejection(vendor, text).reason is RejectionReason.MALFORMED


def test_one_megabyte_of_random_bytes_is_malformed(vendor: Vendor) -> None:
    noise = os.urandom(1024 * 1024).decode("latin-1")
    assert rejection(vendor, noise).reason is RejectionReason.MALFORMED


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("serial_number", None),
        ("serial_number", 7),
        ("customer", ""),
        ("nbf", "2027-01-01"),
        ("exp", True),
        ("max_dp_cores", "16"),
        ("max_dp_cores", 16.5),
        ("max_dp_cores", True),
        ("features", "api7-gateway"),
        ("features", [1, 2]),
        ("deployment_id", None),
        ("free_trial", "no"),
    ],
)
def test_a_missing_or_wrongly_typed_claim_is_malformed(
    vendor: Vendor, name: str, value: Any
) -> None:
    payload = claims()
    if value is None:
        del payload[name]
    else:
        payload[name] = value
    found = rejection(vendor, sign_raw(vendor, payload))
    assert found.reason is RejectionReason.MALFORMED
    assert name in found.message


def test_expiration_not_after_effective_date_is_malformed(vendor: Vendor) -> None:
    payload = claims(nbf=int(START), exp=int(START))
    assert rejection(vendor, sign_raw(vendor, payload)).reason is RejectionReason.MALFORMED


@pytest.mark.parametrize("cores", [0, -4])
def test_max_cores_below_one_is_malformed(vendor: Vendor, cores: int) -> None:
    found = rejection(vendor, sign_raw(vendor, claims(max_dp_cores=cores)))
    assert found.reason is RejectionReason.MALFORMED
    assert "max_dp_cores" in found.message


def test_a_payload_that_is_not_json_is_malformed(vendor: Vendor) -> None:
    header = b64(json.dumps({"alg": "EdDSA", "kid": vendor.kid}).encode())
    payload = b64(b"not json")
    signature = b64(vendor.key.sign(f"{header}.{payload}".encode()))
    assert rejection(vendor, f"{header}.{payload}.{signature}").reason is RejectionReason.MALFORMED


def test_alg_none_is_an_unsupported_algorithm(vendor: Vendor) -> None:
    header = b64(json.dumps({"alg": "none", "kid": vendor.kid}).encode())
    token = f"{header}.{b64(json.dumps(claims()).encode())}."
    assert rejection(vendor, token).reason is RejectionReason.UNSUPPORTED_ALGORITHM


def test_hs256_signed_with_the_public_key_bytes_is_an_unsupported_algorithm(vendor: Vendor) -> None:
    # the classic key-confusion attack: HMAC keyed with the verifier's public key
    secret = public_key_pem(vendor.key.public_key())
    header = b64(json.dumps({"alg": "HS256", "kid": vendor.kid, "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims(max_dp_cores=100000)).encode())
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert (
        rejection(vendor, f"{header}.{payload}.{b64(mac)}").reason
        is RejectionReason.UNSUPPORTED_ALGORITHM
    )


def test_rs256_is_an_unsupported_algorithm(vendor: Vendor) -> None:
    header = b64(json.dumps({"alg": "RS256", "kid": vendor.kid}).encode())
    token = f"{header}.{b64(json.dumps(claims()).encode())}.{b64(b'x' * 256)}"
    assert rejection(vendor, token).reason is RejectionReason.UNSUPPORTED_ALGORITHM


def test_a_key_id_not_trusted_is_an_unknown_key(vendor: Vendor) -> None:
    stranger = Ed25519PrivateKey.generate()
    token = issue_license(
        stranger,
        "someone-else",
        serial_number="LIC-X",
        customer="Mallory",
        effective_at=START - DAY,
        expires_at=START + DAY,
        max_dp_cores=9999,
        features=[],
        deployment_id=DEPLOYMENT_ID,
        free_trial=False,
    )
    assert rejection(vendor, token).reason is RejectionReason.UNKNOWN_KEY


def test_a_missing_key_id_is_an_unknown_key(vendor: Vendor) -> None:
    token = jwt.encode(claims(), vendor.key, algorithm="EdDSA")
    assert rejection(vendor, token).reason is RejectionReason.UNKNOWN_KEY


def test_a_trusted_key_id_with_another_keys_signature_is_a_bad_signature(vendor: Vendor) -> None:
    impostor = Ed25519PrivateKey.generate()
    token = jwt.encode(
        claims(max_dp_cores=9999), impostor, algorithm="EdDSA", headers={"kid": vendor.kid}
    )
    assert rejection(vendor, token).reason is RejectionReason.BAD_SIGNATURE


def test_a_changed_claim_breaks_the_signature(vendor: Vendor) -> None:
    header, _, signature = vendor.issue().split(".")
    forged = b64(json.dumps(claims(max_dp_cores=100000)).encode())
    assert (
        rejection(vendor, f"{header}.{forged}.{signature}").reason is RejectionReason.BAD_SIGNATURE
    )


def test_a_license_for_another_deployment_is_a_deployment_mismatch(vendor: Vendor) -> None:
    found = rejection(vendor, vendor.issue(deployment_id="another-deployment"))
    assert found.reason is RejectionReason.DEPLOYMENT_MISMATCH
    assert "another-deployment" in found.message


def test_a_license_past_its_expiration_is_expired(vendor: Vendor) -> None:
    text = vendor.issue(effective_at=START - 30 * DAY, expires_at=START - DAY)
    assert rejection(vendor, text).reason is RejectionReason.EXPIRED


def test_a_license_expires_at_its_expiration_instant(vendor: Vendor) -> None:
    text = vendor.issue(expires_at=START + DAY)
    assert rejection(vendor, text, now=START + DAY).reason is RejectionReason.EXPIRED
    verify_license(text, {vendor.kid: vendor.key.public_key()}, DEPLOYMENT, START + DAY - 1)


def test_a_free_trial_ends_90_days_after_the_deployment_date(vendor: Vendor) -> None:
    text = vendor.issue(free_trial=True, expires_at=START + 365 * DAY)
    keys = {vendor.kid: vendor.key.public_key()}
    lic = verify_license(text, keys, DEPLOYMENT, START + 89 * DAY)
    assert lic.ends_at(DEPLOYMENT) == START + 90 * DAY
    found = rejection(vendor, text, now=START + 90 * DAY + 1)
    assert found.reason is RejectionReason.EXPIRED
    assert "90 days" in found.message


def test_a_free_trial_ends_at_its_expiration_when_that_is_earlier(vendor: Vendor) -> None:
    text = vendor.issue(free_trial=True, expires_at=START + 10 * DAY)
    lic = verify_license(text, {vendor.kid: vendor.key.public_key()}, DEPLOYMENT, START)
    assert lic.ends_at(DEPLOYMENT) == START + 10 * DAY


def test_a_license_effective_in_the_future_verifies_as_pending(vendor: Vendor) -> None:
    text = vendor.issue(effective_at=START + 10 * DAY, expires_at=START + 400 * DAY)
    lic = verify_license(text, {vendor.kid: vendor.key.public_key()}, DEPLOYMENT, START)
    assert lic.is_pending(START)
    assert not lic.is_pending(START + 10 * DAY)


def test_the_issuer_refuses_to_sign_what_the_server_would_reject(vendor: Vendor) -> None:
    with pytest.raises(LicenseRejected) as raised:
        vendor.issue(max_dp_cores=0)
    assert raised.value.reason is RejectionReason.MALFORMED


def test_several_trusted_keys_verify_side_by_side(vendor: Vendor) -> None:
    rotated = Ed25519PrivateKey.generate()
    keys = {vendor.kid: vendor.key.public_key(), "vendor-2028": rotated.public_key()}
    old = vendor.issue()
    new = issue_license(
        rotated,
        "vendor-2028",
        serial_number="LIC-0002",
        customer="Example Corp",
        effective_at=START - DAY,
        expires_at=START + DAY,
        max_dp_cores=4,
        features=[],
        deployment_id=DEPLOYMENT_ID,
        free_trial=False,
    )
    assert verify_license(old, keys, DEPLOYMENT, START).key_id == vendor.kid
    assert verify_license(new, keys, DEPLOYMENT, START).key_id == "vendor-2028"


@pytest.mark.parametrize("effective_day", [90, 120])
def test_a_trial_that_ends_on_or_before_its_effective_date_is_rejected_as_expired(
    vendor: Vendor, effective_day: int
) -> None:
    # a trial ends at most 90 days after the deployment date, so this one never begins
    text = vendor.issue(
        free_trial=True,
        effective_at=START + effective_day * DAY,
        expires_at=START + 365 * DAY,
    )
    found = rejection(vendor, text)
    assert found.reason is RejectionReason.EXPIRED
    assert "never" in found.message
    assert "90 days" in found.message


def test_a_pending_trial_with_time_left_after_its_effective_date_is_accepted(
    vendor: Vendor,
) -> None:
    text = vendor.issue(
        free_trial=True, effective_at=START + 89 * DAY, expires_at=START + 365 * DAY
    )
    lic = verify_license(text, {vendor.kid: vendor.key.public_key()}, DEPLOYMENT, START)
    assert lic.is_pending(START)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("serial_number", "LIC-\ud800"),
        ("customer", "Soci\udce9t\udce9"),
        ("deployment_id", DEPLOYMENT_ID + "\udfff"),
        ("features", ["api7-gateway", "api7-\udc80"]),
        ("note", {"\ud800": "a claim the server does not use"}),
    ],
    ids=["serial_number", "customer", "deployment_id", "features", "unused-claim"],
)
def test_a_lone_surrogate_in_a_signed_claim_is_malformed(
    vendor: Vendor, name: str, value: Any
) -> None:
    # JSON can escape half a UTF-16 pair ("\ud800"): text no UTF-8 answer can carry
    found = rejection(vendor, sign_raw(vendor, claims(**{name: value})))
    assert found.reason is RejectionReason.MALFORMED
    assert name in found.message
    found.message.encode()  # the message itself is sendable


def test_a_lone_surrogate_in_the_header_is_malformed(vendor: Vendor) -> None:
    token = sign_raw(vendor, claims(), {"kid": vendor.kid, "typ": "JWT\ud800"})
    found = rejection(vendor, token)
    assert (found.reason, found.message) == (
        RejectionReason.MALFORMED,
        "the license header is not valid Unicode text: it holds half of a UTF-16 pair",
    )
    found.message.encode()


def test_a_lone_surrogate_in_a_claims_name_is_malformed_and_quoted_escaped(vendor: Vendor) -> None:
    found = rejection(vendor, sign_raw(vendor, {**claims(), "note\ud800": "unused"}))
    assert (found.reason, found.message) == (
        RejectionReason.MALFORMED,
        "claim 'note\\ud800' is not valid Unicode text: it holds half of a UTF-16 pair (text "
        "read from a terminal or file that is not UTF-8?)",
    )


def test_the_issuer_refuses_to_sign_text_that_is_not_unicode(vendor: Vendor) -> None:
    with pytest.raises(LicenseRejected) as raised:
        vendor.issue(customer="Soci\udce9t\udce9")
    assert raised.value.reason is RejectionReason.MALFORMED
    assert "customer" in raised.value.message


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ("payload", "the license payload is nested too deeply to be a license"),
        ("header", "the license header is nested too deeply to be a license header"),
    ],
    ids=["payload", "header"],
)
def test_a_license_nested_deeper_than_the_recursion_limit_is_malformed(
    vendor: Vendor, part: str, message: str
) -> None:
    deep = nested(max(20_000, 2 * sys.getrecursionlimit()))
    header = {"alg": "EdDSA", "kid": vendor.kid}
    body = json.dumps(claims())
    if part == "header":
        header_json = json.dumps(header)[:-1] + f', "x": {deep}}}'
    else:
        header_json = json.dumps(header)
        body = body[:-1] + f', "x": {deep}}}'
    signing_input = f"{b64(header_json.encode())}.{b64(body.encode())}"
    token = f"{signing_input}.{b64(vendor.key.sign(signing_input.encode()))}"
    found = rejection(vendor, token)
    assert (found.reason, found.message) == (RejectionReason.MALFORMED, message)


def test_padding_on_the_signature_makes_the_same_license(vendor: Vendor) -> None:
    keys = {vendor.kid: vendor.key.public_key()}
    text = vendor.issue()
    padded = text + "=="  # a 64-byte signature is 86 base64url characters, 88 padded
    lic = verify_license(text, keys, DEPLOYMENT, START)
    again = verify_license(padded, keys, DEPLOYMENT, START)
    assert again.fingerprint == lic.fingerprint
    other = verify_license(vendor.issue(serial_number="LIC-0002"), keys, DEPLOYMENT, START)
    assert other.fingerprint != lic.fingerprint
