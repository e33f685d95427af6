"""The deployment's ID and date as plain Python: made at the first start, or pinned together."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from licensing_server.domain.deployment import (
    DeploymentRefused,
    check_pins,
    first_deployment,
    unpinned_date_warning,
)
from licensing_server.domain.license import Deployment

# this version's release, and a first start a few weeks later
RELEASED_AT = datetime(2026, 11, 27, tzinfo=UTC).timestamp()
NOW = datetime(2027, 1, 1, 10, 0, tzinfo=UTC).timestamp()
PINNED_AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC).timestamp()
STORED = Deployment("deployment-under-test", PINNED_AT + 0.25)  # a date the clock made


def refusal(start: Callable[..., object], *args: object) -> str:
    with pytest.raises(DeploymentRefused) as raised:
        start(*args)
    return str(raised.value)


# --- the first start -----------------------------------------------------------------------


def test_a_first_start_without_pins_makes_a_new_id_dated_now() -> None:
    made = first_deployment(None, None, NOW, RELEASED_AT)
    assert made.deployment_time == NOW
    assert uuid.UUID(made.deployment_id).version == 4
    assert first_deployment(None, None, NOW, RELEASED_AT).deployment_id != made.deployment_id


def test_a_first_start_from_the_release_instant_on_is_allowed() -> None:
    assert first_deployment(None, None, RELEASED_AT, RELEASED_AT).deployment_time == RELEASED_AT


def test_a_first_start_whose_clock_reads_before_the_release_is_refused() -> None:
    assert refusal(first_deployment, None, None, RELEASED_AT - 1, RELEASED_AT) == (
        "the clock reads 2026-11-26T23:59:59Z, before this version's release on 2026-11-27: a "
        "first start would fix that as the deployment date and reject every free trial; set "
        "the system clock right and start again"
    )


@pytest.fixture
def machine_in_honolulu(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time zone is UTC-10 (a POSIX TZ rule: no zone files needed)."""
    monkeypatch.setenv("TZ", "HST10")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("machine_in_honolulu")
def test_the_release_day_is_named_in_utc_whatever_the_machines_time_zone() -> None:
    # 2026-11-27T00:00Z is still the 26th in Honolulu
    assert refusal(first_deployment, None, None, RELEASED_AT - 1, RELEASED_AT).startswith(
        "the clock reads 2026-11-26T23:59:59Z, before this version's release on 2026-11-27: "
    )


def test_a_pinned_id_and_date_make_the_deployment() -> None:
    assert first_deployment("pinned-id", PINNED_AT, NOW, RELEASED_AT) == Deployment(
        "pinned-id", PINNED_AT
    )
    # pinned at the very instant of the first start
    assert first_deployment("pinned-id", NOW, NOW, RELEASED_AT) == Deployment("pinned-id", NOW)


def test_a_pinned_date_after_the_clock_is_refused() -> None:
    assert refusal(first_deployment, "pinned-id", NOW + 1, NOW, RELEASED_AT) == (
        "the pinned deployment date 2027-01-01T10:00:01Z is later than the clock "
        "(2027-01-01T10:00:00Z): a deployment cannot be made in the future; check the pin and "
        "the system clock"
    )


def test_a_pinned_id_alone_on_an_empty_data_directory_is_refused() -> None:
    assert refusal(first_deployment, "pinned-id", None, NOW, RELEASED_AT) == (
        "the data directory holds no deployment and only the deployment ID 'pinned-id' is "
        "pinned: pin the deployment date too, --deployment-date (LICENSING_DEPLOYMENT_DATE, "
        "deployment_date), the one GetStatus shows for this deployment (or now, for a new one), "
        "so that an emptied data directory cannot start a new free trial"
    )


PINNED_DATE_ALONE = (
    "the deployment date 2026-12-01T09:30:00Z is pinned without the deployment ID: pin both "
    "(--deployment-id and --deployment-date) or neither"
)


def test_a_pinned_date_alone_is_refused_on_a_first_start_and_after() -> None:
    assert refusal(first_deployment, None, PINNED_AT, NOW, RELEASED_AT) == PINNED_DATE_ALONE
    assert refusal(check_pins, STORED, None, PINNED_AT) == PINNED_DATE_ALONE


# --- a later start: the pins must be the data directory's own --------------------------------


def test_pins_that_match_the_stored_deployment_to_the_second_are_accepted() -> None:
    check_pins(STORED, None, None)
    check_pins(STORED, "deployment-under-test", None)
    # an operator pins the date GetStatus shows, in whole seconds
    check_pins(STORED, "deployment-under-test", PINNED_AT)
    check_pins(STORED, "deployment-under-test", PINNED_AT + 0.9)


def test_a_pinned_id_of_another_deployment_is_refused() -> None:
    assert refusal(check_pins, STORED, "another-deployment", None) == (
        "the data directory belongs to deployment 'deployment-under-test', but the "
        "configuration pins deployment 'another-deployment'; use the right data directory or "
        "remove the pin"
    )


@pytest.mark.parametrize(
    ("pinned", "shown"),
    [(PINNED_AT - 1, "2026-12-01T09:29:59Z"), (PINNED_AT + 1, "2026-12-01T09:30:01Z")],
    ids=["a-second-earlier", "a-second-later"],
)
def test_a_pinned_date_in_another_second_is_refused(pinned: float, shown: str) -> None:
    assert refusal(check_pins, STORED, "deployment-under-test", pinned) == (
        "the data directory's deployment was made 2026-12-01T09:30:00.250000Z, but the "
        f"configuration pins the deployment date {shown}; pin the date the data directory "
        "holds, or use the right data directory"
    )


def test_an_id_pinned_without_its_date_is_told_which_date_to_pin() -> None:
    assert unpinned_date_warning(STORED) == (
        "the deployment ID is pinned without its date: pin --deployment-date "
        "2026-12-01T09:30:00.250000Z as well, or a start on an emptied data directory will be "
        "refused"
    )
