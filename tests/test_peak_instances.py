"""A day's peak instances, however many, through the real server: a page at a time.

The days are written into a real SQLite file through the store before the
server starts on it, as the evaluator would have stored them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import grpc
import pytest
from conftest import Harness, store_evaluated_days
from licensing.client import LicensingError

MESSAGE_LIMIT = 4 * 1024 * 1024
# well under the limit: room for the rest of an answer and for growth
WELL_UNDER = 1.5 * 1024 * 1024
YESTERDAY = "2026-12-31"


def instance_ids(count: int, length: int = 128) -> list[str]:
    """IDs as long as a gateway may send, so 32,000 of them are more than 4 MiB."""
    return [f"gw-{n:05d}.".ljust(length, "x") for n in range(count)]


@pytest.fixture
def day_of_32000(tmp_path: Path, make_harness: Callable[..., Harness]) -> Harness:
    store_evaluated_days(tmp_path / "data", {YESTERDAY: instance_ids(32_000)})
    return make_harness()


def test_a_day_of_32000_peak_instances_can_be_read_entirely_a_page_at_a_time(
    day_of_32000: Harness,
) -> None:
    client = day_of_32000.control_plane
    pages, token = [], ""
    while True:
        page = client.peak_instances_page(YESTERDAY, page_token=token)
        pages.append(page)
        token = page.next_page_token
        if not token:
            break
    assert all(page.ByteSize() < WELL_UNDER for page in pages)
    # together they are more than one answer could carry
    assert sum(page.ByteSize() for page in pages) > MESSAGE_LIMIT
    assert len(pages) == 32
    assert {page.total_size for page in pages} == {32_000}
    read = [(i.instance_id, i.cores) for page in pages for i in page.instances]
    assert read == [(instance_id, 2) for instance_id in instance_ids(32_000)]


def test_the_client_iterates_every_page_of_a_days_peak_instances(day_of_32000: Harness) -> None:
    instances = list(day_of_32000.admin.peak_instances(YESTERDAY, page_size=7_000))
    assert [i.instance_id for i in instances] == instance_ids(32_000)


def test_a_page_is_at_most_10000_instances_whatever_size_is_asked_for(
    day_of_32000: Harness,
) -> None:
    page = day_of_32000.admin.peak_instances_page(YESTERDAY, page_size=1_000_000)
    assert len(page.instances) == 10_000
    assert page.ByteSize() < WELL_UNDER
    assert page.next_page_token


def test_include_peak_instances_returns_the_first_1000_of_a_day_and_says_it_is_truncated(
    day_of_32000: Harness,
) -> None:
    history = day_of_32000.admin.usage_history(day=YESTERDAY, include_peak_instances=True)
    [day] = history.days
    assert history.ByteSize() < WELL_UNDER
    assert [i.instance_id for i in day.peak_instances] == instance_ids(1_000)
    assert day.peak_instances_truncated
    assert day.peak_cores == 64_000


def test_include_peak_instances_returns_at_most_10000_in_one_answer(
    tmp_path: Path, make_harness: Callable[..., Harness]
) -> None:
    # twelve days of 900 instances: ten days fit whole in 10,000 but eleven do not
    days = [(date(2026, 12, 31) - timedelta(days=n)).isoformat() for n in range(12)]
    store_evaluated_days(tmp_path / "data", {day: instance_ids(900, 20) for day in days})
    harness = make_harness()
    history = harness.admin.usage_history(days=12, include_peak_instances=True)
    assert [d.day for d in history.days] == days
    shown = [len(d.peak_instances) for d in history.days]
    assert shown == [900] * 11 + [100]
    assert [d.peak_instances_truncated for d in history.days] == [False] * 11 + [True]
    # a day within the bound is whole, and says so
    assert not history.days[0].peak_instances_truncated


def test_a_small_day_comes_in_one_page_without_a_next_page_token(
    tmp_path: Path, make_harness: Callable[..., Harness]
) -> None:
    store_evaluated_days(tmp_path / "data", {YESTERDAY: ["gw-b", "gw-a"]})
    page = make_harness().admin.peak_instances_page(YESTERDAY)
    assert [(i.instance_id, i.cores) for i in page.instances] == [("gw-b", 2), ("gw-a", 2)]
    assert (page.next_page_token, page.total_size) == ("", 2)


def test_a_day_not_evaluated_is_not_found(harness: Harness) -> None:
    with pytest.raises(LicensingError) as raised:
        harness.admin.peak_instances_page("2027-01-01")
    assert (raised.value.code, raised.value.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "DAY_NOT_EVALUATED",
    )


@pytest.mark.parametrize(
    ("day", "page_size", "page_token"),
    [
        ("yesterday", 0, ""),
        ("x" * 100_000, 0, ""),
        (YESTERDAY, -1, ""),
        (YESTERDAY, 0, "not-a-token"),
        (YESTERDAY, 0, "e30"),  # {} in base64url: no offset
        (YESTERDAY, 0, "x" * 100_000),
    ],
    ids=["not-a-date", "huge-day", "negative-page-size", "garbage-token", "empty-token", "huge"],
)
def test_a_bad_day_page_size_or_page_token_is_an_invalid_argument(
    day_of_32000: Harness, day: str, page_size: int, page_token: str
) -> None:
    with pytest.raises(LicensingError) as raised:
        day_of_32000.admin.peak_instances_page(day, page_size=page_size, page_token=page_token)
    assert (raised.value.code, raised.value.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert len(raised.value.message) < 200


def test_a_page_token_is_good_only_for_the_day_it_came_from(
    tmp_path: Path, make_harness: Callable[..., Harness]
) -> None:
    store_evaluated_days(
        tmp_path / "data", {YESTERDAY: instance_ids(3, 10), "2026-12-30": instance_ids(3, 10)}
    )
    harness = make_harness()
    first = harness.admin.peak_instances_page(YESTERDAY, page_size=1)
    with pytest.raises(LicensingError) as raised:
        harness.admin.peak_instances_page("2026-12-30", page_token=first.next_page_token)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "same day" in raised.value.message
    second = harness.admin.peak_instances_page(
        YESTERDAY, page_size=1, page_token=first.next_page_token
    )
    assert [i.instance_id for i in second.instances] == instance_ids(3, 10)[1:2]
