"""Unexpected failures are answered with a proper status and a reason, never the exception text."""

from __future__ import annotations

import logging

import grpc
import pytest
from conftest import Harness, Vendor, read_only
from licensing.client import LicensingError, Operation

from licensing_server.errors import failure_status

# storage is part of every rule here: each test runs on SQLite and on PostgreSQL
pytestmark = pytest.mark.both_backends


def test_a_database_that_cannot_be_written_is_unavailable_with_a_reason_and_no_detail(
    harness: Harness, vendor: Vendor, caplog: pytest.LogCaptureFixture
) -> None:
    harness.admin.upload(vendor.issue(serial_number="LIC-IN-FORCE"))
    with read_only(harness.running.store), caplog.at_level(logging.ERROR, logger="licensing"):
        with pytest.raises(LicensingError) as report:
            harness.gateway.report_usage("gw-1", 4)
        with pytest.raises(LicensingError) as upload:
            harness.admin.upload(vendor.issue(serial_number="LIC-REFUSED"))
        # what is answered from memory still is, and the license in force stays
        assert harness.control_plane.check_write("route", Operation.CREATE).allowed
        assert harness.control_plane.status().license.serial_number == "LIC-IN-FORCE"

    for raised in (report, upload):
        assert (raised.value.code, raised.value.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "STORAGE_UNAVAILABLE",
        )
        assert "readonly" not in raised.value.message
        assert "try again later" in raised.value.message
    # the operator finds what went wrong in the log
    assert "readonly database" in caplog.text

    assert harness.gateway.report_usage("gw-1", 4).receive_time.seconds > 0
    assert harness.admin.upload(vendor.issue(serial_number="LIC-LATER")).license.serial_number


def test_any_other_unexpected_failure_is_internal_with_a_generic_message() -> None:
    status = failure_status(KeyError("a secret detail"), "CheckWrite")
    assert status.code == grpc.StatusCode.INTERNAL
    assert "secret" not in status.details
    assert "log" in status.details
