"""The edges of what a license may claim, and the vendor's dates and keys, as plain Python."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from conftest import DAY, DEPLOYMENT_ID, START, Vendor
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from licensing_server.domain.license import (
    MAX_LICENSE_CHARS,
    Deployment,
    LicenseRejected,
    RejectionReason,
    check_applicable,
    iso_time,
    issue_license,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    verify_signed,
)

DEPLOYMENT = Deployment(DEPLOYMENT_ID, START)
# the first instant a google.protobuf.Timestamp cannot carry: year 10000
YEAR_10000 = 253_402_300_800


def signed(vendor: Vendor, **overrides: Any) -> str:
    claims: dict[str, Any] = {
        "serial_number": "LIC-0001",
        "customer": "Example Corp",
        "nbf": int(START - DAY),
        "exp": int(START + 365 * DAY),
        "max_dp_cores": 16,
        "features": ["api7-gateway"],
        "deployment_id": DEPLOYMENT_ID,
        "free_trial": False,
    }
    claims.update(overrides)
    return jwt.encode(claims, vendor.key, algorithm="EdDSA", headers={"kid": vendor.kid})


def verified(vendor: Vendor, token: str) -> Any:
    return verify_signed(token, {vendor.kid: vendor.key.public_key()})


def refused(vendor: Vendor, token: str) -> LicenseRejected:
    with pytest.raises(LicenseRejected) as raised:
        verified(vendor, token)
    return raised.value


@pytest.mark.parametrize("cores", [1, 2**31 - 1])
def test_max_cores_from_1_to_the_largest_int32_are_accepted(vendor: Vendor, cores: int) -> None:
    assert verified(vendor, signed(vendor, max_dp_cores=cores)).max_dp_cores == cores


def test_max_cores_past_the_largest_int32_are_malformed(vendor: Vendor) -> None:
    found = refused(vendor, signed(vendor, max_dp_cores=2**31))
    assert found.reason is RejectionReason.MALFORMED


def test_times_from_the_epoch_to_the_last_second_of_year_9999_are_accepted(
    vendor: Vendor,
) -> None:
    lic = verified(vendor, signed(vendor, nbf=0, exp=YEAR_10000 - 1))
    assert (lic.effective_at, lic.expires_at) == (0.0, YEAR_10000 - 1.0)


@pytest.mark.parametrize(("nbf", "exp"), [(-1, START), (START, YEAR_10000)])
def test_times_before_1970_or_from_year_10000_are_malformed(
    vendor: Vendor, nbf: float, exp: float
) -> None:
    found = refused(vendor, signed(vendor, nbf=nbf, exp=exp))
    assert found.reason is RejectionReason.MALFORMED
    assert "a time between 1970 and 9999" in found.message


def exactly_long(vendor: Vendor, length: int) -> str:
    """A correctly signed license of exactly `length` characters (padded with JSON spaces)."""
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "EdDSA", "kid": vendor.kid, "typ": "JWT"}).encode()
    ).rstrip(b"=")
    claims = json.dumps(
        {
            "serial_number": "LIC-0001",
            "customer": "Example Corp",
            "nbf": int(START - DAY),
            "exp": int(START + 365 * DAY),
            "max_dp_cores": 16,
            "features": [],
            "deployment_id": DEPLOYMENT_ID,
            "free_trial": False,
        }
    )

    def token(spaces: int) -> bytes:
        payload = base64.urlsafe_b64encode((claims + " " * spaces).encode()).rstrip(b"=")
        signature = vendor.key.sign(header + b"." + payload)
        return header + b"." + payload + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")

    spaces = (length - len(token(0))) * 3 // 4
    while len(token(spaces)) < length:
        spaces += 1
    assert len(token(spaces)) == length, "base64 cannot make this length; pick another"
    return token(spaces).decode()


def test_a_license_of_64_kib_is_read_and_a_longer_one_is_malformed(vendor: Vendor) -> None:
    assert verified(vendor, exactly_long(vendor, MAX_LICENSE_CHARS)).serial_number == "LIC-0001"
    found = refused(vendor, exactly_long(vendor, MAX_LICENSE_CHARS + 2))
    assert found.reason is RejectionReason.MALFORMED
    assert found.message == (
        f"the license is {MAX_LICENSE_CHARS + 2} characters long; a license is at most "
        f"{MAX_LICENSE_CHARS}"
    )


def test_a_rejection_carries_its_reason_code(vendor: Vendor) -> None:
    found = refused(vendor, "")
    assert (found.reason, found.args[0], found.message) == (
        RejectionReason.MALFORMED,
        "the license is empty",
        "the license is empty",
    )


def test_times_show_in_utc_with_a_z() -> None:
    assert iso_time(0) == "1970-01-01T00:00:00Z"
    assert iso_time(START + 0.5) == "2027-01-01T10:00:00.500000Z"


def test_the_vendor_keeps_a_fractional_effective_time_and_whole_seconds_as_integers(
    vendor: Vendor,
) -> None:
    token = vendor.issue(effective_at=START - 0.5, issued_at=START - 2 * DAY)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["nbf"] == START - 0.5
    assert claims["exp"] == int(START + 365 * DAY)
    assert isinstance(claims["exp"], int)
    assert claims["iat"] == int(START - 2 * DAY)
    assert verified(vendor, token).effective_at == START - 0.5


def test_the_vendor_adds_no_issue_time_unless_given_one(vendor: Vendor) -> None:
    claims = jwt.decode(vendor.issue(), options={"verify_signature": False})
    assert "iat" not in claims


def test_a_key_pair_survives_its_pem_files_and_signs_what_the_server_verifies() -> None:
    private = load_private_key(private_key_pem(Ed25519PrivateKey.generate()))
    public = load_public_key(public_key_pem(private.public_key()))
    token = issue_license(
        private,
        "vendor-2027",
        serial_number="LIC-0002",
        customer="Example Corp",
        effective_at=START - DAY,
        expires_at=START + DAY,
        max_dp_cores=4,
        features=[],
        deployment_id=DEPLOYMENT_ID,
        free_trial=False,
    )
    assert verify_signed(token, {"vendor-2027": public}).serial_number == "LIC-0002"


def test_a_key_that_is_not_ed25519_is_refused() -> None:
    other = generate_private_key(SECP256R1())
    with pytest.raises(ValueError) as private:
        load_private_key(other.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    assert str(private.value) == "not an Ed25519 private key"
    with pytest.raises(ValueError) as public:
        load_public_key(
            other.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )
    assert str(public.value) == "not an Ed25519 public key"


def signed_payload(vendor: Vendor, payload: bytes, signature: bytes | None = None) -> str:
    """A compact JWS over any payload bytes, signed (or given a signature) by hand."""
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "EdDSA", "kid": vendor.kid}).encode()
    ).rstrip(b"=")
    body = base64.urlsafe_b64encode(payload).rstrip(b"=")
    if signature is None:
        signature = base64.urlsafe_b64encode(vendor.key.sign(header + b"." + body)).rstrip(b"=")
    return (header + b"." + body + b"." + signature).decode()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"customer": ""}, "claim 'customer' is missing or is not a non-empty string"),
        (
            {"nbf": "2027-01-01"},
            "claim 'nbf' is missing or is not a time in seconds since the epoch",
        ),
        ({"exp": YEAR_10000}, "claim 'exp' is missing or is not a time between 1970 and 9999"),
        ({"max_dp_cores": "16"}, "claim 'max_dp_cores' is missing or is not an integer"),
        ({"features": "api7"}, "claim 'features' is missing or is not a list of non-empty strings"),
        ({"free_trial": "no"}, "claim 'free_trial' is missing or is not true or false"),
        (
            {"nbf": int(START), "exp": int(START)},
            "the expiration date 2027-01-01T10:00:00Z is not after the effective date "
            "2027-01-01T10:00:00Z",
        ),
    ],
    ids=["customer", "nbf", "exp", "max_dp_cores", "features", "free_trial", "exp-before-nbf"],
)
def test_a_malformed_claim_is_named_with_what_it_should_be(
    vendor: Vendor, overrides: dict[str, Any], message: str
) -> None:
    found = refused(vendor, signed(vendor, **overrides))
    assert (found.reason, found.message) == (RejectionReason.MALFORMED, message)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "the license payload is not JSON"),
        (b"[1, 2]", "the license payload is not a JSON object"),
    ],
    ids=["not-json", "not-an-object"],
)
def test_a_payload_that_is_not_a_json_object_is_malformed(
    vendor: Vendor, payload: bytes, message: str
) -> None:
    found = refused(vendor, signed_payload(vendor, payload))
    assert (found.reason, found.message) == (RejectionReason.MALFORMED, message)


def test_text_that_is_not_a_compact_jws_is_malformed(vendor: Vendor) -> None:
    found = refused(vendor, "a.b")
    assert (found.reason, found.message) == (
        RejectionReason.MALFORMED,
        "the license is not a compact JWS (three base64url parts separated by dots)",
    )


def test_a_detached_payload_is_malformed_and_the_decoders_words_are_cut_at_80_characters(
    vendor: Vendor,
) -> None:
    # RFC 7797: the payload travels elsewhere, so there is no license to read
    detached = jwt.api_jws.PyJWS().encode(
        b"{}", vendor.key, algorithm="EdDSA", headers={"kid": vendor.kid, "b64": False}
    )
    found = refused(vendor, detached)
    assert (found.reason, found.message) == (
        RejectionReason.MALFORMED,
        "the license cannot be decoded: 'It is required that you pass in a value for the "
        '"detached_payload" argument to d\'... (131 characters)',
    )


def test_each_signature_rejection_says_what_was_wrong(vendor: Vendor) -> None:
    hs256 = jwt.encode({}, "s" * 32, algorithm="HS256", headers={"kid": vendor.kid})
    assert refused(vendor, hs256).message == (
        "the license is signed with 'HS256'; only EdDSA (Ed25519) is accepted"
    )
    stranger = jwt.encode({}, vendor.key, algorithm="EdDSA", headers={"kid": "someone-else"})
    assert refused(vendor, stranger).message == (
        "the license is signed with key id 'someone-else', which this server does not trust "
        "(trusted: vendor-test)"
    )
    impostor = jwt.encode(
        {}, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": vendor.kid}
    )
    assert refused(vendor, impostor).message == (
        "the license signature does not verify with trusted key 'vendor-test'"
    )


def unsigned_with_header(header: dict[str, Any]) -> str:
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{encoded}.e30.AAAA"


def test_an_unreadable_header_is_quoted_in_at_most_80_characters(vendor: Vendor) -> None:
    not_json = base64.urlsafe_b64encode(b"{x").rstrip(b"=").decode()
    found = refused(vendor, f"{not_json}.e30.AAAA")
    assert (found.reason, found.message) == (
        RejectionReason.MALFORMED,
        "the license cannot be decoded: 'Invalid header string: Expecting property name "
        "enclosed in double quotes: line 1'... (98 characters)",
    )


def test_a_long_algorithm_or_key_id_is_quoted_in_at_most_40_characters(vendor: Vendor) -> None:
    algorithm = refused(vendor, unsigned_with_header({"alg": "A" * 1000, "kid": vendor.kid}))
    assert (algorithm.reason, algorithm.message) == (
        RejectionReason.UNSUPPORTED_ALGORITHM,
        f"the license is signed with '{'A' * 40}'... (1000 characters); only EdDSA (Ed25519) "
        "is accepted",
    )
    key_id = refused(vendor, unsigned_with_header({"alg": "EdDSA", "kid": "k\n" * 500}))
    assert (key_id.reason, key_id.message) == (
        RejectionReason.UNKNOWN_KEY,
        # the newlines escaped, so the refusal stays one line
        "the license is signed with key id '" + "k\\n" * 20 + "'... (1000 characters), which "
        "this server does not trust (trusted: vendor-test)",
    )


@pytest.mark.parametrize(
    ("trusted", "named"),
    [([], "(trusted: none)"), (["b-key", "a-key"], "(trusted: a-key, b-key)")],
    ids=["none", "two"],
)
def test_an_unknown_key_names_the_trusted_ones(
    vendor: Vendor, trusted: list[str], named: str
) -> None:
    keys = {kid: vendor.key.public_key() for kid in trusted}
    with pytest.raises(LicenseRejected) as raised:
        verify_signed(signed(vendor), keys)
    assert raised.value.reason is RejectionReason.UNKNOWN_KEY
    assert raised.value.message.endswith(named)


@pytest.mark.parametrize(
    ("trial", "expires_at", "now", "message"),
    [
        (False, START - DAY, START, "the license expired 2026-12-31T10:00:00Z"),
        (True, START + 10 * DAY, START + 11 * DAY, "the license expired 2027-01-11T10:00:00Z"),
        (
            True,
            START + 365 * DAY,
            START + 91 * DAY,
            "the free trial ended 2027-04-01T10:00:00Z: a trial lasts at most 90 days from the "
            "deployment date",
        ),
    ],
    ids=["license", "trial-at-its-expiration", "trial-after-90-days"],
)
def test_an_expired_license_says_when_and_why_it_ended(
    vendor: Vendor, trial: bool, expires_at: float, now: float, message: str
) -> None:
    token = vendor.issue(free_trial=trial, effective_at=START - 30 * DAY, expires_at=expires_at)
    with pytest.raises(LicenseRejected) as raised:
        check_applicable(verified(vendor, token), DEPLOYMENT, now)
    assert (raised.value.reason, raised.value.message) == (RejectionReason.EXPIRED, message)
