"""The write decision as plain Python: the decision table, row by row."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest

from licensing_server.domain.decision import (
    DecisionReason,
    Enforcement,
    InvalidWriteCheck,
    Operation,
    WarningKind,
    check_request,
)
from licensing_server.domain.license import License, iso_time
from licensing_server.domain.runtime import NORMAL, RuntimeState, Standing

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


# --- what every answer carries, in words a person understands ---------------------------

EXCEEDED = Standing(RuntimeState.DP_CORE_EXCEEDED, GRACE_END)
RESTRICTED = Standing(RuntimeState.RESTRICTED)


@pytest.mark.parametrize("standing", [NORMAL, EXCEEDED, RESTRICTED], ids=lambda s: s.state)
@pytest.mark.parametrize("lic", [LICENSE, None], ids=["licensed", "no-license"])
def test_every_answer_carries_allowed_the_runtime_state_and_the_serial_number(
    standing: Standing, lic: License | None
) -> None:
    rules = enforcement(standing, lic)
    for resource, operation, now in itertools.product(
        ["route", "license"], Operation, [NOW, LICENSE.expires_at]
    ):
        decision = rules.decide(resource, operation, "", now)
        assert type(decision.allowed) is bool
        assert decision.state is standing.state
        assert decision.serial_number == ("LIC-0001" if lic else "")


def licensed_with(*features: str) -> License:
    return replace(LICENSE, features=features)


@pytest.mark.parametrize(
    ("given", "resource", "operation", "feature", "message"),
    [
        (dict(), "route", Operation.CREATE, "", "allowed"),
        (dict(), "route", Operation.READ, "", "reads are always allowed"),
        (
            dict(),
            "route",
            Operation.DELETE,
            "",
            "deletes are always allowed, so configuration can always be removed",
        ),
        (
            dict(standing=RESTRICTED),
            "license",
            Operation.UPDATE,
            "",
            "the license itself may always be managed",
        ),
        (
            dict(standing=EXCEEDED),
            "route",
            Operation.CREATE,
            "",
            "allowed during the grace period, which ends 2027-01-20T08:00:00Z",
        ),
        (
            dict(standing=RESTRICTED),
            "route",
            Operation.UPDATE,
            "",
            "restricted: data-plane core usage exceeded the licensed 16 cores past the 7-day "
            "grace period; cannot update route. Scale the gateways down or upload a license "
            "with more cores",
        ),
        (
            dict(lic=None),
            "route",
            Operation.UPDATE,
            "",
            "no license is installed: cannot update route; upload a license first",
        ),
        (
            dict(ends_at=NOW - 1),
            "route",
            Operation.CREATE,
            "",
            "license LIC-0001 ended 2027-01-15T07:59:59Z: cannot create route; upload a new "
            "license",
        ),
        (
            dict(),
            "portal",
            Operation.CREATE,
            "api7-portal",
            "portal needs feature 'api7-portal', which license LIC-0001 does not include "
            "(it has: api7-gateway)",
        ),
        (
            dict(lic=licensed_with("b-feature", "a-feature")),
            "portal",
            Operation.UPDATE,
            "api7-portal",
            "portal needs feature 'api7-portal', which license LIC-0001 does not include "
            "(it has: a-feature, b-feature)",
        ),
        (
            dict(lic=licensed_with()),
            "portal",
            Operation.CREATE,
            "api7-portal",
            "portal needs feature 'api7-portal', which license LIC-0001 does not include "
            "(it has: none)",
        ),
    ],
    ids=[
        "licensed",
        "read",
        "delete",
        "license",
        "grace",
        "restricted",
        "no-license",
        "expired",
        "feature",
        "features-sorted",
        "no-features",
    ],
)
def test_each_answer_says_why_in_words(
    given: dict[str, Any], resource: str, operation: Operation, feature: str, message: str
) -> None:
    rules = enforcement(**given)
    assert rules.decide(resource, operation, feature, NOW).message == message


@pytest.mark.parametrize(
    ("given", "feature"),
    [
        (dict(lic=None), ""),
        (dict(ends_at=NOW - 1), ""),
        (dict(standing=RESTRICTED), ""),
        (dict(), "api7-portal"),
    ],
    ids=["no-license", "expired", "restricted", "feature"],
)
def test_a_denial_quotes_an_odd_resource_type_escaped_and_cut_short(
    given: dict[str, Any], feature: str
) -> None:
    odd = "route\n\x1b[31mDELETED everything " + "x" * 100
    decision = enforcement(**given).decide(odd, Operation.CREATE, feature, NOW)
    assert not decision.allowed
    assert "\n" not in decision.message and "\x1b" not in decision.message
    assert "'route\\n\\x1b[31mDELETED everything xxx" in decision.message
    assert "x" * 50 not in decision.message
    assert f"({len(odd)} characters)" in decision.message


@pytest.mark.parametrize(
    ("given", "now", "warnings"),
    [
        (
            dict(standing=EXCEEDED),
            NOW,
            [
                "data-plane core usage exceeds the licensed 16 cores; the grace period ends "
                "2027-01-20T08:00:00Z, after which creating and updating configuration is blocked"
            ],
        ),
        (
            dict(standing=RESTRICTED),
            NOW,
            [
                "data-plane core usage exceeded the licensed 16 cores past the grace period: "
                "creating and updating configuration is blocked; scale the gateways down or "
                "upload a license with more cores"
            ],
        ),
        (
            dict(ends_at=NOW),
            NOW,
            [
                "license LIC-0001 ended 2027-01-15T08:00:00Z: creating and updating "
                "configuration is blocked until a new license is uploaded"
            ],
        ),
        (
            dict(ends_at=NOW + 1.5 * DAY),
            NOW,
            ["license LIC-0001 ends 2027-01-16T20:00:00Z, in 1 day: plan the renewal"],
        ),
        (
            dict(ends_at=NOW + 2.5 * DAY),
            NOW,
            ["license LIC-0001 ends 2027-01-17T20:00:00Z, in 2 days: plan the renewal"],
        ),
    ],
    ids=["grace", "restricted", "ended", "one-day-left", "two-days-left"],
)
def test_each_warning_says_what_happens_and_what_to_do(
    given: dict[str, Any], now: float, warnings: list[str]
) -> None:
    rules = enforcement(**given)
    assert [w.message for w in rules.warnings(now)] == warnings
    assert [w.message for w in rules.decide("route", Operation.CREATE, "", now).warnings] == (
        warnings
    )


def test_the_expiry_warning_starts_just_after_30_days_before_the_end() -> None:
    rules = enforcement(ends_at=NOW + 30 * DAY)
    assert rules.warnings(NOW) == ()
    assert rules.decide("route", Operation.CREATE, "", NOW).warnings == ()
    just_after = NOW + 0.001
    assert [w.kind for w in rules.warnings(just_after)] == [WarningKind.LICENSE_EXPIRING]
    [warning] = rules.decide("route", Operation.CREATE, "", just_after).warnings
    assert "in 29 days" in warning.message


def test_at_its_end_instant_a_license_warns_that_it_ended() -> None:
    rules = enforcement(ends_at=NOW)
    assert [w.kind for w in rules.warnings(NOW - 0.001)] == [WarningKind.LICENSE_EXPIRING]
    assert [w.kind for w in rules.warnings(NOW)] == [WarningKind.LICENSE_EXPIRED]


def test_without_a_license_nothing_expires() -> None:
    rules = Enforcement(None, NOW, NORMAL, expiry_warning_days=30)
    assert rules.warnings(NOW + DAY) == ()
    assert rules.decide("route", Operation.CREATE, "", NOW + DAY).reason is (
        DecisionReason.NO_LICENSE
    )


@pytest.mark.parametrize("resource_type", ["r", "x" * 128])
def test_a_resource_type_of_1_to_128_characters_may_be_asked_about(resource_type: str) -> None:
    check_request(resource_type, "")


@pytest.mark.parametrize("resource_type", ["", "x" * 129])
def test_any_other_resource_type_is_refused(resource_type: str) -> None:
    with pytest.raises(InvalidWriteCheck) as raised:
        check_request(resource_type, "")
    assert raised.value.reason == "INVALID_RESOURCE_TYPE"
    assert raised.value.message == "resource_type must be 1 to 128 characters, e.g. 'route'"


@pytest.mark.parametrize("feature", ["", "f", "x" * 128])
def test_a_feature_of_up_to_128_characters_may_be_asked_about(feature: str) -> None:
    check_request("route", feature)


def test_a_longer_feature_is_refused_with_its_length_not_its_text() -> None:
    with pytest.raises(InvalidWriteCheck) as raised:
        check_request("route", "x" * 129)
    assert raised.value.reason == "INVALID_FEATURE"
    assert raised.value.message == (
        "feature must be at most 128 characters (or empty for none); got 129"
    )


# --- the answer changes by itself at the instants the snapshot knows ----------------------


def test_the_grace_ended_message_names_the_instant_it_ended() -> None:
    rules = enforcement(EXCEEDED)
    before = rules.decide("route", Operation.CREATE, "", GRACE_END - 0.001)
    assert before.message == "allowed during the grace period, which ends 2027-01-20T08:00:00Z"
    for now in (GRACE_END, GRACE_END + DAY / 2):
        decision = rules.decide("route", Operation.CREATE, "", now)
        # still allowed: only the next midnight's evaluation restricts
        assert (decision.allowed, decision.reason) == (True, DecisionReason.GRACE_PERIOD)
        assert decision.message == (
            "allowed: the grace period ended 2027-01-20T08:00:00Z; creating and updating "
            "configuration is blocked from the next midnight's evaluation if the day's peak is "
            "still over the quota"
        )


def test_the_exceeded_warning_says_the_grace_ended_from_the_instant_it_ended() -> None:
    rules = enforcement(EXCEEDED)
    ends = (
        "data-plane core usage exceeds the licensed 16 cores; the grace period ends "
        "2027-01-20T08:00:00Z, after which creating and updating configuration is blocked"
    )
    ended = (
        "data-plane core usage exceeds the licensed 16 cores and the grace period ended "
        "2027-01-20T08:00:00Z: creating and updating configuration is blocked from the next "
        "midnight's evaluation unless the day's peak is back within the quota"
    )
    assert [w.message for w in rules.warnings(GRACE_END - 0.001)] == [ends]
    for now in (GRACE_END, GRACE_END + DAY / 2):
        assert [w.message for w in rules.warnings(now)] == [ended]
        read = rules.decide("route", Operation.READ, "", now)
        assert [w.message for w in read.warnings] == [ended]


# a renewal with fewer cores than the last peak, taking effect after the episode's grace ended
TAKEOVER = NOW + 10 * DAY
RENEWAL = replace(LICENSE, serial_number="LIC-0002", max_dp_cores=8, effective_at=TAKEOVER)


def with_pending_renewal() -> tuple[Enforcement, Enforcement]:
    successor = Enforcement(
        RENEWAL, RENEWAL.expires_at, Standing(RuntimeState.RESTRICTED, GRACE_END), 30
    )
    return Enforcement(LICENSE, LICENSE.expires_at, NORMAL, 30, (TAKEOVER, successor)), successor


def test_a_pending_license_answers_from_its_effective_instant() -> None:
    rules, successor = with_pending_renewal()
    assert rules.at(TAKEOVER - 0.001) is rules
    assert rules.at(TAKEOVER) is successor
    assert rules.at(TAKEOVER + DAY) is successor
    before = rules.decide("route", Operation.UPDATE, "", TAKEOVER - 0.001)
    assert (before.allowed, before.serial_number, before.warnings) == (True, "LIC-0001", ())
    assert rules.warnings(TAKEOVER - 0.001) == ()


def test_from_a_pending_licenses_effective_instant_every_answer_is_its_own() -> None:
    rules, _ = with_pending_renewal()
    restricted = (
        "data-plane core usage exceeded the licensed 8 cores past the grace period: creating "
        "and updating configuration is blocked; scale the gateways down or upload a license "
        "with more cores"
    )
    assert [w.message for w in rules.warnings(TAKEOVER)] == [restricted]
    update = rules.decide("route", Operation.UPDATE, "", TAKEOVER)
    assert (update.allowed, update.reason, update.state, update.serial_number) == (
        False,
        DecisionReason.RESTRICTED,
        RuntimeState.RESTRICTED,
        "LIC-0002",
    )
    assert update.message == (
        "restricted: data-plane core usage exceeded the licensed 8 cores past the 7-day grace "
        "period; cannot update route. Scale the gateways down or upload a license with more "
        "cores"
    )
    assert [w.message for w in update.warnings] == [restricted]
    portal = rules.decide("portal", Operation.CREATE, "api7-portal", TAKEOVER)
    assert portal.message == (
        "portal needs feature 'api7-portal', which license LIC-0002 does not include "
        "(it has: api7-gateway)"
    )
    assert rules.decide("route", Operation.DELETE, "", TAKEOVER).allowed
