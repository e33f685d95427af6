"""The write decision as plain Python: the decision table, row by row."""

from __future__ import annotations

import pytest

from server.domain.decision import (
    DecisionReason,
    Enforcement,
    Operation,
    WarningKind,
)
from server.domain.license import License, iso_time
from server.domain.runtime import NORMAL, RuntimeState, Standing

DAY = 86_400.0
NOW = 1_800_000_000.0
GRACE_END = NOW + 5 * DAY
LICENSE = License(
    serial_number="LIC-0001",
    customer="Example Corp",
    effective_at=NOW - 30 * DAY,
    expires_at=NOW + 300 * DAY,
    max_dp_cores=16,
    features=("api7-gateway",),
    deployment_id="deployment-under-test",
    free_trial=False,
    key_id="vendor-test",
    token="not-a-real-token",
    fingerprint="not-a-real-fingerprint",
)
WRITES = [Operation.CREATE, Operation.UPDATE]


def enforcement(
    standing: Standing = NORMAL, lic: License | None = LICENSE, ends_at: float | None = None
) -> Enforcement:
    if ends_at is None and lic is not None:
        ends_at = lic.expires_at
    return Enforcement(lic, ends_at, standing, expiry_warning_days=30)


def assert_deletes_reads_and_the_license_are_allowed(rules: Enforcement) -> None:
    assert rules.decide("route", Operation.DELETE, "", NOW).reason is DecisionReason.DELETE
    assert rules.decide("route", Operation.DELETE, "", NOW).allowed
    assert rules.decide("route", Operation.READ, "", NOW).reason is DecisionReason.READ
    assert rules.decide("route", Operation.READ, "", NOW).allowed
    for operation in Operation:
        decision = rules.decide("license", operation, "", NOW)
        assert decision.allowed
        assert decision.reason is DecisionReason.LICENSE_RESOURCE


def test_normal_with_an_active_license_allows_everything() -> None:
    rules = enforcement()
    for operation in WRITES:
        decision = rules.decide("route", operation, "", NOW)
        assert decision.allowed
        assert decision.reason is DecisionReason.LICENSED
        assert decision.message
        assert decision.warnings == ()
    assert_deletes_reads_and_the_license_are_allowed(rules)


def test_dp_core_exceeded_allows_writes_with_a_warning_naming_the_grace_end() -> None:
    rules = enforcement(Standing(RuntimeState.DP_CORE_EXCEEDED, GRACE_END))
    for operation in WRITES:
        decision = rules.decide("route", operation, "", NOW)
        assert decision.allowed
        assert decision.reason is DecisionReason.GRACE_PERIOD
        assert iso_time(GRACE_END) in decision.message
        [warning] = decision.warnings
        assert warning.kind is WarningKind.DP_CORE_EXCEEDED
        assert iso_time(GRACE_END) in warning.message
    assert_deletes_reads_and_the_license_are_allowed(rules)


def test_restricted_denies_writes_but_allows_delete_read_and_license() -> None:
    rules = enforcement(Standing(RuntimeState.RESTRICTED))
    for operation in WRITES:
        decision = rules.decide("route", operation, "", NOW)
        assert not decision.allowed
        assert decision.reason is DecisionReason.RESTRICTED
        assert "16 cores" in decision.message
        assert [w.kind for w in decision.warnings] == [WarningKind.RESTRICTED]
    assert_deletes_reads_and_the_license_are_allowed(rules)


def test_an_expired_license_denies_writes_but_allows_delete_read_and_license() -> None:
    rules = enforcement(ends_at=NOW - 1)
    for operation in WRITES:
        decision = rules.decide("route", operation, "", NOW)
        assert not decision.allowed
        assert decision.reason is DecisionReason.LICENSE_EXPIRED
        assert [w.kind for w in decision.warnings] == [WarningKind.LICENSE_EXPIRED]
    assert_deletes_reads_and_the_license_are_allowed(rules)


def test_a_license_expires_at_its_end_instant() -> None:
    rules = enforcement(ends_at=NOW)
    assert rules.decide("route", Operation.CREATE, "", NOW - 0.001).allowed
    assert rules.decide("route", Operation.CREATE, "", NOW).reason is DecisionReason.LICENSE_EXPIRED


def test_no_license_ever_installed_denies_writes_but_allows_delete_read_and_license() -> None:
    rules = enforcement(lic=None)
    for operation in WRITES:
        decision = rules.decide("route", operation, "", NOW)
        assert not decision.allowed
        assert decision.reason is DecisionReason.NO_LICENSE
    assert_deletes_reads_and_the_license_are_allowed(rules)


def test_a_feature_the_license_lacks_denies_writes_but_allows_delete_read_and_license() -> None:
    rules = enforcement()
    for operation in WRITES:
        decision = rules.decide("portal", operation, "api7-portal", NOW)
        assert not decision.allowed
        assert decision.reason is DecisionReason.FEATURE_NOT_LICENSED
        assert "api7-portal" in decision.message
    assert rules.decide("route", Operation.CREATE, "api7-gateway", NOW).allowed
    assert rules.decide("portal", Operation.DELETE, "api7-portal", NOW).allowed
    assert rules.decide("portal", Operation.READ, "api7-portal", NOW).allowed
    assert_deletes_reads_and_the_license_are_allowed(rules)


@pytest.mark.parametrize(("days", "warned"), [(29.5, True), (30.5, False)])
def test_an_expiry_within_30_days_carries_a_warning_with_the_days_left(
    days: float, warned: bool
) -> None:
    rules = enforcement(ends_at=NOW + days * DAY)
    decision = rules.decide("route", Operation.CREATE, "", NOW)
    assert decision.allowed
    kinds = [w.kind for w in decision.warnings]
    assert kinds == ([WarningKind.LICENSE_EXPIRING] if warned else [])
    if warned:
        assert "in 29 days" in decision.warnings[0].message
