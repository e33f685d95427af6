"""The deployment ID and date: made once at the first start, or pinned together, never the ID alone.

A free trial runs 90 days from the deployment date, so that date must survive
anything that empties the data directory, and must never be a date the
running version cannot have been deployed on.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DAY,
    DEPLOYMENT_ID,
    START,
    Harness,
    ServerProcess,
    Vendor,
    deployment_pins,
    harness_for,
    server_config,
)
from licensing.client import LicensingError

from licensing_server import RELEASED_AT
from licensing_server.app import StartupError, start_server
from licensing_server.domain.clock import ManualClock
from licensing_server.domain.license import iso_time
from licensing_server.store import DATABASE_NAME


def config_pinning(data_dir: Path, vendor: Vendor, *pins: str) -> Any:
    return server_config(data_dir, vendor, pins=pins)


def stored_deployments(data_dir: Path) -> list[tuple[str, float]]:
    with closing(sqlite3.connect(data_dir / DATABASE_NAME)) as db:
        return list(db.execute("SELECT deployment_id, deployment_time FROM deployment"))


def test_a_pinned_id_and_date_make_the_deployment_on_an_empty_data_directory(
    tmp_path: Path, vendor: Vendor, clock: ManualClock
) -> None:
    pinned_date = START - 30 * DAY  # made a month before this data directory
    config = config_pinning(tmp_path / "data", vendor, *deployment_pins(pinned_date))
    with harness_for(config, clock) as harness:
        status = harness.admin.status()
    assert status.deployment_id == DEPLOYMENT_ID
    assert status.deployment_time.ToSeconds() == int(pinned_date)


def test_a_wiped_data_directory_started_with_its_pins_cannot_restart_a_free_trial(
    tmp_path: Path,
    vendor: Vendor,
    clock: ManualClock,
    make_harness: Callable[..., Harness],
) -> None:
    data_dir = tmp_path / "data"
    trial = vendor.issue(serial_number="TRIAL-1", free_trial=True, expires_at=START + 365 * DAY)
    first = make_harness(data_dir=data_dir)
    first.admin.upload(trial)
    first.running.stop(grace=0)

    clock.advance(100 * DAY)  # the trial ended on day 90
    shutil.rmtree(data_dir)
    restarted = make_harness(data_dir=data_dir)

    assert restarted.admin.status().deployment_time.ToSeconds() == int(START)
    with pytest.raises(LicensingError) as raised:
        restarted.admin.upload(trial)
    assert raised.value.reason == "EXPIRED"


def test_the_deployment_id_pinned_alone_on_an_empty_data_directory_refuses_to_start(
    tmp_path: Path, vendor: Vendor, server_processes: Callable[..., ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    process = server_processes(data_dir, vendor, "--deployment-id", DEPLOYMENT_ID)
    result = subprocess.run(
        process.args, capture_output=True, text=True, env=process.env, timeout=60
    )
    assert result.returncode == 1
    assert "pin the deployment date too" in result.stderr
    assert "--deployment-date" in result.stderr
    assert stored_deployments(data_dir) == []  # nothing was made that a later start would keep


def test_the_deployment_date_pinned_alone_refuses_to_start(
    tmp_path: Path, vendor: Vendor, clock: ManualClock
) -> None:
    config = config_pinning(tmp_path / "data", vendor, "--deployment-date", iso_time(START))
    with pytest.raises(StartupError, match="pinned without the deployment ID"):
        start_server(config, clock)


def test_the_deployment_id_pinned_alone_on_an_existing_deployment_starts_and_asks_for_the_date(
    tmp_path: Path,
    vendor: Vendor,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data_dir = tmp_path / "data"
    with harness_for(config_pinning(data_dir, vendor, *deployment_pins(START)), clock):
        pass

    alone = config_pinning(data_dir, vendor, "--deployment-id", DEPLOYMENT_ID)
    with caplog.at_level(logging.WARNING, logger="licensing"), harness_for(alone, clock) as harness:
        assert harness.admin.status().deployment_time.ToSeconds() == int(START)
    assert any(
        f"--deployment-date {iso_time(START)}" in record.getMessage() for record in caplog.records
    )


def test_a_pinned_deployment_date_that_disagrees_with_the_data_directory_is_refused(
    tmp_path: Path, vendor: Vendor, clock: ManualClock
) -> None:
    data_dir = tmp_path / "data"
    with harness_for(config_pinning(data_dir, vendor, *deployment_pins(START)), clock):
        pass
    other_date = config_pinning(data_dir, vendor, *deployment_pins(START - DAY))
    with pytest.raises(StartupError, match="pins the deployment date") as raised:
        start_server(other_date, clock)
    assert iso_time(START) in str(raised.value)
    # the refused start let go of the data directory, and the deployment is as it was
    assert stored_deployments(data_dir) == [(DEPLOYMENT_ID, START)]


def test_a_pinned_deployment_date_matches_the_stored_one_to_the_second(
    tmp_path: Path, vendor: Vendor
) -> None:
    """The clock made the date with a fraction; pinned as `licensectl status` shows it."""
    data_dir = tmp_path / "data"
    clock = ManualClock(START + 0.75)
    with harness_for(config_pinning(data_dir, vendor), clock) as harness:
        made = harness.admin.status()
    assert made.deployment_time.nanos == 750_000_000
    shown = made.deployment_time.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    pinned = config_pinning(
        data_dir, vendor, "--deployment-id", made.deployment_id, "--deployment-date", shown
    )
    with harness_for(pinned, clock) as harness:
        assert harness.admin.status().deployment_time == made.deployment_time


def test_a_pinned_deployment_date_after_the_clock_is_refused(
    tmp_path: Path, vendor: Vendor, clock: ManualClock
) -> None:
    config = config_pinning(tmp_path / "data", vendor, *deployment_pins(START + DAY))
    with pytest.raises(StartupError, match="later than the clock"):
        start_server(config, clock)


def test_a_pinned_deployment_date_before_this_release_is_allowed(
    tmp_path: Path, vendor: Vendor, clock: ManualClock
) -> None:
    long_ago = RELEASED_AT - 400 * DAY
    config = config_pinning(tmp_path / "data", vendor, *deployment_pins(long_ago))
    with harness_for(config, clock) as harness:
        assert harness.admin.status().deployment_time.ToSeconds() == int(long_ago)


def test_a_first_start_whose_clock_reads_before_this_release_is_refused(
    tmp_path: Path, vendor: Vendor
) -> None:
    data_dir = tmp_path / "data"
    clock = ManualClock(0.0)  # a host that booted without its real-time clock
    with pytest.raises(StartupError) as raised:
        start_server(config_pinning(data_dir, vendor), clock)
    message = str(raised.value)
    assert "1970-01-01T00:00:00Z" in message
    assert datetime.fromtimestamp(RELEASED_AT, UTC).date().isoformat() in message
    assert stored_deployments(data_dir) == []

    clock.set(START)  # the clock is put right: the first start happens now
    with harness_for(config_pinning(data_dir, vendor), clock) as harness:
        assert harness.admin.status().deployment_time.ToSeconds() == int(START)


def test_a_restart_whose_clock_reads_before_this_release_keeps_its_deployment(
    tmp_path: Path, vendor: Vendor, clock: ManualClock
) -> None:
    data_dir = tmp_path / "data"
    with harness_for(config_pinning(data_dir, vendor), clock) as harness:
        made = harness.admin.status()
    clock.set(0.0)  # not a first start: the clock-moved-back rules apply
    with harness_for(config_pinning(data_dir, vendor), clock) as harness:
        status = harness.admin.status()
    assert status.deployment_id == made.deployment_id
    assert status.deployment_time == made.deployment_time
    assert status.clock.moved_back
