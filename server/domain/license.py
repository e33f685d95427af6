"""Signed licenses: what one says, how it is verified, how the vendor issues one.

A license is a compact JWS (RFC 7515) signed with Ed25519 (``alg`` EdDSA) and
carrying a ``kid`` header. Its claims:

==================  =========================================================
``serial_number``   non-empty string
``customer``        non-empty string
``nbf``             effective time, seconds since the epoch (JWT NumericDate)
``exp``             expiration time, seconds since the epoch, after ``nbf``
``max_dp_cores``    integer >= 1
``features``        list of strings
``deployment_id``   non-empty string
``free_trial``      boolean
==================  =========================================================

Two tokens are the same license when they decode to the same bytes: base64url
padding, which some tools add, makes another text of the same license.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.utils import base64url_decode

# how every message writes an instant; the server's modules name it here
from licensing.decision import iso_time as iso_time

from licensing_server.domain.clock import SECONDS_PER_DAY
from licensing_server.domain.refusal import Refused, quote

ALGORITHM = "EdDSA"
TRIAL_DAYS = 90
MAX_INT32 = 2**31 - 1
# A real license is well under 2 KiB; anything far larger is not one.
MAX_LICENSE_CHARS = 64 * 1024
# Half of a UTF-16 pair: JSON may escape one ("\ud800"), but it is not text UTF-8 can carry.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class RejectionReason(StrEnum):
    """Why a license was not accepted. The values are the stable reason codes."""

    MALFORMED = "MALFORMED"
    UNSUPPORTED_ALGORITHM = "UNSUPPORTED_ALGORITHM"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    DEPLOYMENT_MISMATCH = "DEPLOYMENT_MISMATCH"
    EXPIRED = "EXPIRED"


class LicenseRejected(Refused):
    def __init__(self, reason: RejectionReason, message: str) -> None:
        super().__init__(reason, message)
        self.reason: RejectionReason = reason


@dataclass(frozen=True)
class Deployment:
    """This installation: licenses are tied to its ID, trials run from its start."""

    deployment_id: str
    deployment_time: float


@dataclass(frozen=True)
class License:
    serial_number: str
    customer: str
    effective_at: float
    expires_at: float
    max_dp_cores: int
    features: tuple[str, ...]
    deployment_id: str
    free_trial: bool
    key_id: str
    # The compact JWS the claims came from, exactly as verified.
    token: str
    # SHA-256 of the decoded header, payload and signature: equal for every text of this license.
    fingerprint: str

    def ends_at(self, deployment: Deployment) -> float:
        """When the license stops being valid here (a trial: at most 90 days from deployment)."""
        if self.free_trial:
            return min(self.expires_at, deployment.deployment_time + TRIAL_DAYS * SECONDS_PER_DAY)
        return self.expires_at

    def is_pending(self, now: float) -> bool:
        return now < self.effective_at


def normalize(text: str) -> str:
    """Surrounding whitespace in a file or request is ignored."""
    return text.strip()


def verify_signed(text: str, trusted_keys: Mapping[str, Ed25519PublicKey]) -> License:
    """Parse a license and verify its signature: everything that does not depend on here and now."""
    token = normalize(text)
    if not token:
        raise LicenseRejected(RejectionReason.MALFORMED, "the license is empty")
    if len(token) > MAX_LICENSE_CHARS:
        raise LicenseRejected(
            RejectionReason.MALFORMED,
            f"the license is {len(token)} characters long; a license is at most "
            f"{MAX_LICENSE_CHARS}",
        )
    if token.count(".") != 2:
        raise LicenseRejected(
            RejectionReason.MALFORMED,
            "the license is not a compact JWS (three base64url parts separated by dots)",
        )
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.PyJWTError, RecursionError) as error:
        if isinstance(error, RecursionError) or isinstance(error.__cause__, RecursionError):
            message = "the license header is nested too deeply to be a license header"
        else:
            # PyJWT decodes all three parts here: the fault may be in any of them
            message = f"the license cannot be decoded: {quote(str(error), limit=80)}"
        raise LicenseRejected(RejectionReason.MALFORMED, message) from None
    if _holds_lone_surrogate(header):
        raise LicenseRejected(
            RejectionReason.MALFORMED,
            "the license header is not valid Unicode text: it holds half of a UTF-16 pair",
        )
    algorithm = header.get("alg")
    if algorithm != ALGORITHM:
        raise LicenseRejected(
            RejectionReason.UNSUPPORTED_ALGORITHM,
            f"the license is signed with {quote(algorithm)}; only {ALGORITHM} (Ed25519) is "
            "accepted",
        )
    key_id = header.get("kid")
    if not isinstance(key_id, str) or key_id not in trusted_keys:
        known = ", ".join(sorted(trusted_keys)) or "none"
        raise LicenseRejected(
            RejectionReason.UNKNOWN_KEY,
            f"the license is signed with key id {quote(key_id)}, which this server does not "
            f"trust (trusted: {known})",
        )
    try:
        decoded = jwt.api_jws.PyJWS().decode_complete(
            token, trusted_keys[key_id], algorithms=[ALGORITHM]
        )
    except jwt.InvalidSignatureError:
        raise LicenseRejected(
            RejectionReason.BAD_SIGNATURE,
            f"the license signature does not verify with trusted key {quote(key_id)}",
        ) from None
    except jwt.PyJWTError as error:
        raise LicenseRejected(
            RejectionReason.MALFORMED,
            f"the license cannot be decoded: {quote(str(error), limit=80)}",
        ) from None
    try:
        claims = json.loads(decoded["payload"])
    except (ValueError, UnicodeDecodeError):
        raise LicenseRejected(
            RejectionReason.MALFORMED, "the license payload is not JSON"
        ) from None
    except RecursionError:
        raise LicenseRejected(
            RejectionReason.MALFORMED, "the license payload is nested too deeply to be a license"
        ) from None
    return _license_from_claims(claims, key_id, token, _fingerprint(token))


def check_applicable(lic: License, deployment: Deployment, now: float) -> None:
    """The checks that depend on this deployment and the time (the high-water mark)."""
    if lic.deployment_id != deployment.deployment_id:
        raise LicenseRejected(
            RejectionReason.DEPLOYMENT_MISMATCH,
            f"the license is for deployment {quote(lic.deployment_id)}, this is deployment "
            f"{deployment.deployment_id!r}",
        )
    ends_at = lic.ends_at(deployment)
    if lic.free_trial and ends_at <= lic.effective_at:
        # pending or not: it would wait, then take over already ended
        raise LicenseRejected(
            RejectionReason.EXPIRED,
            f"the free trial can never be in force: it takes effect {iso_time(lic.effective_at)}, "
            f"but a trial lasts at most {TRIAL_DAYS} days from the deployment date, until "
            f"{iso_time(ends_at)}",
        )
    if now >= ends_at:
        if lic.free_trial and ends_at < lic.expires_at:
            message = (
                f"the free trial ended {iso_time(ends_at)}: a trial lasts at most "
                f"{TRIAL_DAYS} days from the deployment date"
            )
        else:
            message = f"the license expired {iso_time(ends_at)}"
        raise LicenseRejected(RejectionReason.EXPIRED, message)


def verify_license(
    text: str,
    trusted_keys: Mapping[str, Ed25519PublicKey],
    deployment: Deployment,
    now: float,
) -> License:
    """Every check a license goes through, in one place, for every path that accepts one."""
    lic = verify_signed(text, trusted_keys)
    check_applicable(lic, deployment, now)
    return lic


def _license_from_claims(claims: Any, key_id: str, token: str, fingerprint: str) -> License:
    if not isinstance(claims, dict):
        raise LicenseRejected(RejectionReason.MALFORMED, "the license payload is not a JSON object")
    for name, value in claims.items():
        if _holds_lone_surrogate(name) or _holds_lone_surrogate(value):
            raise LicenseRejected(
                RejectionReason.MALFORMED,
                f"claim {quote(name)} is not valid Unicode text: it holds half of a UTF-16 "
                "pair (text read from a terminal or file that is not UTF-8?)",
            )
    serial_number = _text_claim(claims, "serial_number")
    customer = _text_claim(claims, "customer")
    deployment_id = _text_claim(claims, "deployment_id")
    effective_at = _time_claim(claims, "nbf")
    expires_at = _time_claim(claims, "exp")
    max_dp_cores = claims.get("max_dp_cores")
    if not isinstance(max_dp_cores, int) or isinstance(max_dp_cores, bool):
        raise _claim_error("max_dp_cores", "an integer")
    if not 1 <= max_dp_cores <= MAX_INT32:
        raise LicenseRejected(
            RejectionReason.MALFORMED,
            f"claim 'max_dp_cores' is {max_dp_cores}; it must be at least 1",
        )
    features = claims.get("features")
    if not isinstance(features, list) or not all(isinstance(f, str) and f for f in features):
        raise _claim_error("features", "a list of non-empty strings")
    free_trial = claims.get("free_trial")
    if not isinstance(free_trial, bool):
        raise _claim_error("free_trial", "true or false")
    if expires_at <= effective_at:
        raise LicenseRejected(
            RejectionReason.MALFORMED,
            f"the expiration date {iso_time(expires_at)} is not after the effective date "
            f"{iso_time(effective_at)}",
        )
    return License(
        serial_number=serial_number,
        customer=customer,
        effective_at=effective_at,
        expires_at=expires_at,
        max_dp_cores=max_dp_cores,
        features=tuple(dict.fromkeys(features)),
        deployment_id=deployment_id,
        free_trial=free_trial,
        key_id=key_id,
        token=token,
        fingerprint=fingerprint,
    )


def _holds_lone_surrogate(value: Any) -> bool:
    """Whether any string or object key in a parsed JSON value holds half a UTF-16 pair."""
    # a loop, not recursion: the value may be nested nearly as deep as the parser allows
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if LONE_SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _fingerprint(token: str) -> str:
    """SHA-256 over the decoded parts of a verified compact JWS, each prefixed by its length."""
    digest = hashlib.sha256()
    for segment in token.split("."):
        part = base64url_decode(segment.rstrip("="))
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _claim_error(name: str, expected: str) -> LicenseRejected:
    return LicenseRejected(
        RejectionReason.MALFORMED, f"claim {name!r} is missing or is not {expected}"
    )


def _text_claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _claim_error(name, "a non-empty string")
    return value


def _time_claim(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _claim_error(name, "a time in seconds since the epoch")
    if not 0 <= value < 253402300800:  # years 1970 to 9999: what a Timestamp can carry
        raise _claim_error(name, "a time between 1970 and 9999")
    return float(value)


# --- the vendor's side -------------------------------------------------------


def issue_license(
    private_key: Ed25519PrivateKey,
    key_id: str,
    *,
    serial_number: str,
    customer: str,
    effective_at: float,
    expires_at: float,
    max_dp_cores: int,
    features: list[str],
    deployment_id: str,
    free_trial: bool,
    issued_at: float | None = None,
) -> str:
    """Sign a license. The claims are checked the way the server will check them."""
    claims: dict[str, Any] = {
        "serial_number": serial_number,
        "customer": customer,
        "nbf": _numeric_date(effective_at),
        "exp": _numeric_date(expires_at),
        "max_dp_cores": max_dp_cores,
        "features": features,
        "deployment_id": deployment_id,
        "free_trial": free_trial,
    }
    if issued_at is not None:
        claims["iat"] = _numeric_date(issued_at)
    token = jwt.encode(claims, private_key, algorithm=ALGORITHM, headers={"kid": key_id})
    # refuse to issue what the server would reject as malformed
    verify_signed(token, {key_id: private_key.public_key()})
    return token


def _numeric_date(when: float) -> int | float:
    return int(when) if float(when).is_integer() else when


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
