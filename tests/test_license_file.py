"""The license file (the gateway's license.file_path): real files and symlink swaps."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DAY, START, Harness, ServerProcess, Vendor, harness_for, server_config
from licensing.client import Operation
from licensing.v1 import licensing_pb2 as pb

from licensing_server.domain.clock import ManualClock
from licensing_server.license_file import LicenseFileWatcher

# storage is part of every rule here: each test runs on SQLite and on PostgreSQL
pytestmark = pytest.mark.both_backends

# a real thread on a real short interval, for the tests that do not drive poll_once
FAST_POLL = ("--license-poll-interval", "0.05")


def watcher_of(harness: Harness) -> LicenseFileWatcher:
    return next(e for e in harness.running.extras if isinstance(e, LicenseFileWatcher))


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"not true within {timeout} s")


def serial_in_force(harness: Harness) -> str:
    return str(harness.admin.status().license.serial_number)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def serve_file(
    tmp_path: Path, make_harness: Callable[..., Harness], text: str, *extra: str
) -> tuple[Path, Harness]:
    """A server watching tmp_path/license.jws, which holds `text`."""
    license_path = tmp_path / "license.jws"
    license_path.write_text(text)
    return license_path, make_harness("--license-file", str(license_path), *extra)


class SecretVolume:
    """A directory laid out the way the kubelet mounts a Secret, updated the way it updates one."""

    def __init__(self, directory: Path, key: str = "license.jws") -> None:
        self.directory = directory
        self.key = key
        self.generation = 0
        directory.mkdir()

    @property
    def path(self) -> Path:
        return self.directory / self.key

    def publish(self, text: str) -> None:
        """Write a new timestamped dir, then swap `..data` to it atomically, as the kubelet does."""
        self.generation += 1
        version = self.directory / f"..2027_01_01_10_00_0{self.generation}.000000001"
        version.mkdir()
        (version / self.key).write_text(text)
        data = self.directory / "..data"
        previous = os.readlink(data) if data.is_symlink() else None
        staged = self.directory / "..data_tmp"
        staged.symlink_to(version.name)
        os.replace(staged, data)
        if not self.path.is_symlink():
            self.path.symlink_to(Path("..data") / self.key)
        if previous is not None:
            old = self.directory / previous
            (old / self.key).unlink()
            old.rmdir()


def test_a_license_in_the_file_is_in_force_when_the_server_reports_serving(
    tmp_path: Path, vendor: Vendor, make_harness: Callable[..., Harness]
) -> None:
    license_path = tmp_path / "license.jws"
    license_path.write_text("\n  " + vendor.issue() + "\n")  # surrounding whitespace is ignored

    harness = make_harness("--license-file", str(license_path))

    status = harness.admin.status()
    assert status.license.serial_number == "LIC-0001"
    assert status.license_source == pb.LICENSE_SOURCE_FILE
    assert status.license_file.path == str(license_path)
    assert status.license_file.content_sha256 == sha256_of(license_path)
    assert status.license_file.last_error == ""
    assert status.license_file.last_read_time.ToSeconds() == int(START)
    assert status.license_file.last_applied_time.ToSeconds() == int(START)
    assert harness.control_plane.check_write("route", Operation.CREATE).allowed


def test_a_kubernetes_secret_update_swapping_the_data_symlink_is_picked_up(
    tmp_path: Path, vendor: Vendor, make_harness: Callable[..., Harness]
) -> None:
    secret = SecretVolume(tmp_path / "license-secret")
    secret.publish(vendor.issue(serial_number="LIC-0001", max_dp_cores=16))
    harness = make_harness("--license-file", str(secret.path), *FAST_POLL)
    assert serial_in_force(harness) == "LIC-0001"
    old_mtime = secret.path.stat().st_mtime

    secret.publish(vendor.issue(serial_number="LIC-0002", max_dp_cores=64))
    # the same modification time: only the content tells the difference
    os.utime(secret.path, (old_mtime, old_mtime))

    wait_until(lambda: serial_in_force(harness) == "LIC-0002")
    status = harness.admin.status()
    assert status.license.max_dp_cores == 64
    assert status.license_source == pb.LICENSE_SOURCE_FILE
    assert status.license_file.content_sha256 == sha256_of(secret.path)
    assert status.license_file.last_error == ""


def test_a_file_written_in_place_or_renamed_over_is_picked_up(
    tmp_path: Path, vendor: Vendor, make_harness: Callable[..., Harness]
) -> None:
    license_path, harness = serve_file(tmp_path, make_harness, vendor.issue())
    watcher = watcher_of(harness)
    mtime = license_path.stat().st_mtime

    with open(license_path, "w") as in_place:  # what cp or an editor does
        in_place.write(vendor.issue(serial_number="LIC-0002"))
    os.utime(license_path, (mtime, mtime))
    watcher.poll_once()
    assert serial_in_force(harness) == "LIC-0002"

    write_atomically(license_path, vendor.issue(serial_number="LIC-0003"))
    watcher.poll_once()
    assert serial_in_force(harness) == "LIC-0003"


def test_a_file_missing_at_start_is_reported_and_applied_once_it_appears(
    tmp_path: Path, vendor: Vendor, make_harness: Callable[..., Harness]
) -> None:
    license_path = tmp_path / "secret" / "license.jws"
    harness = make_harness("--license-file", str(license_path), *FAST_POLL)

    status = harness.admin.status()
    assert not status.HasField("license")
    assert status.license_file.last_error_reason == pb.ERROR_REASON_LICENSE_FILE_MISSING
    assert "does not exist" in status.license_file.last_error
    assert pb.WARNING_KIND_LICENSE_FILE_ERROR in [w.kind for w in status.warnings]

    license_path.parent.mkdir()
    write_atomically(license_path, vendor.issue())

    wait_until(lambda: harness.admin.status().HasField("license"))
    status = harness.admin.status()
    assert status.license.serial_number == "LIC-0001"
    assert status.license_file.last_error == ""
    assert status.license_file.last_error_reason == pb.ERROR_REASON_UNSPECIFIED
    assert pb.WARNING_KIND_LICENSE_FILE_ERROR not in [w.kind for w in status.warnings]


def truncated(vendor: Vendor) -> str:
    token = vendor.issue(serial_number="LIC-0002")
    return token[: token.index(".") + 12]  # cut off mid-write, inside the claims


@pytest.mark.parametrize(
    ("bad_content", "reason"),
    [
        (lambda vendor: "", pb.ERROR_REASON_MALFORMED),
        (truncated, pb.ERROR_REASON_MALFORMED),
        (lambda vendor: "certainly not a license\n", pb.ERROR_REASON_MALFORMED),
        (
            lambda vendor: vendor.issue(serial_number="LIC-0002", deployment_id="someone-else"),
            pb.ERROR_REASON_DEPLOYMENT_MISMATCH,
        ),
        (None, pb.ERROR_REASON_LICENSE_FILE_MISSING),
    ],
    ids=["empty", "truncated", "garbage", "other-deployment", "deleted"],
)
def test_a_bad_or_deleted_file_is_reported_and_changes_nothing(
    tmp_path: Path,
    vendor: Vendor,
    make_harness: Callable[..., Harness],
    bad_content: Callable[[Vendor], str] | None,
    reason: int,
) -> None:
    license_path, harness = serve_file(tmp_path, make_harness, vendor.issue())
    before = harness.admin.status()

    if bad_content is None:
        license_path.unlink()
    else:
        license_path.write_text(bad_content(vendor))
    watcher_of(harness).poll_once()

    status = harness.admin.status()
    assert status.license == before.license
    assert status.license_applied_time == before.license_applied_time
    assert status.state == before.state
    assert status.license_file.last_error
    assert status.license_file.last_error_reason == reason
    assert status.license_file.last_applied_time == before.license_file.last_applied_time
    expected_hash = "" if bad_content is None else sha256_of(license_path)
    assert status.license_file.content_sha256 == expected_hash
    assert pb.WARNING_KIND_LICENSE_FILE_ERROR in [w.kind for w in status.warnings]
    assert harness.control_plane.check_write("route", Operation.CREATE).allowed


def test_a_path_that_cannot_be_read_is_reported_as_unreadable(
    tmp_path: Path, vendor: Vendor, make_harness: Callable[..., Harness]
) -> None:
    license_path = tmp_path / "license.jws"
    license_path.symlink_to(license_path.name)  # a symlink to itself: opening it fails
    harness = make_harness("--license-file", str(license_path))

    status = harness.admin.status()
    assert not status.HasField("license")
    assert status.license_file.last_error_reason == pb.ERROR_REASON_LICENSE_FILE_UNREADABLE
    assert "cannot be read" in status.license_file.last_error
    assert status.license_file.content_sha256 == ""


def test_an_error_is_logged_once_per_distinct_content_not_at_every_poll(
    tmp_path: Path,
    vendor: Vendor,
    make_harness: Callable[..., Harness],
    caplog: pytest.LogCaptureFixture,
) -> None:
    license_path, harness = serve_file(tmp_path, make_harness, "garbage one")
    watcher = watcher_of(harness)
    caplog.clear()  # garbage one was logged by the poll at start-up

    with caplog.at_level(logging.INFO, logger="licensing"):
        for _ in range(3):
            watcher.poll_once()
        license_path.write_text("garbage two")
        for _ in range(3):
            watcher.poll_once()
        license_path.unlink()
        for _ in range(3):
            watcher.poll_once()

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors
    assert "MALFORMED" in errors[0]
    assert "LICENSE_FILE_MISSING" in errors[1]
    assert watcher.report.reload_errors == 3


def test_an_unchanged_file_does_not_override_a_newer_upload_even_across_a_restart(
    tmp_path: Path, vendor: Vendor, clock: ManualClock
) -> None:
    license_path = tmp_path / "license.jws"
    license_path.write_text(vendor.issue(serial_number="LIC-FILE"))
    config = server_config(tmp_path / "data", vendor, "--license-file", str(license_path))

    with harness_for(config, clock) as harness:
        assert serial_in_force(harness) == "LIC-FILE"
        harness.admin.upload(vendor.issue(serial_number="LIC-UPLOAD", max_dp_cores=32))
        # a touch, and the same license with other whitespace around it, are not changes
        license_path.write_text(license_path.read_text() + "\n")
        for _ in range(3):
            watcher_of(harness).poll_once()
        assert serial_in_force(harness) == "LIC-UPLOAD"

    with harness_for(config, clock) as restarted:
        status = restarted.admin.status()
        assert status.license.serial_number == "LIC-UPLOAD"
        assert status.license_source == pb.LICENSE_SOURCE_UPLOAD
        assert status.license_file.last_error == ""

        # a changed file is the latest word again
        write_atomically(license_path, vendor.issue(serial_number="LIC-FILE-2"))
        watcher_of(restarted).poll_once()
        assert serial_in_force(restarted) == "LIC-FILE-2"


def test_a_file_that_catches_up_with_an_upload_does_not_undo_a_later_upload_after_restart(
    tmp_path: Path, vendor: Vendor, clock: ManualClock
) -> None:
    license_path = tmp_path / "license.jws"
    config = server_config(tmp_path / "data", vendor, "--license-file", str(license_path))
    urgent = vendor.issue(serial_number="LIC-URGENT")

    with harness_for(config, clock) as harness:
        harness.admin.upload(urgent)
        write_atomically(license_path, urgent)  # GitOps catches up with the manual upload
        watcher_of(harness).poll_once()
        assert harness.admin.status().license_file.last_error == ""
        harness.admin.upload(vendor.issue(serial_number="LIC-LATER"))

    with harness_for(config, clock) as restarted:
        assert serial_in_force(restarted) == "LIC-LATER"


def test_a_deleted_file_coming_back_unchanged_is_not_re_applied(
    tmp_path: Path, vendor: Vendor, make_harness: Callable[..., Harness]
) -> None:
    license_path = tmp_path / "license.jws"
    text = vendor.issue(serial_number="LIC-FILE")
    license_path.write_text(text)
    harness = make_harness("--license-file", str(license_path))
    watcher = watcher_of(harness)
    harness.admin.upload(vendor.issue(serial_number="LIC-UPLOAD"))

    license_path.unlink()
    watcher.poll_once()
    license_path.write_text(text)
    watcher.poll_once()

    status = harness.admin.status()
    assert status.license.serial_number == "LIC-UPLOAD"
    assert status.license_file.last_error == ""


def test_a_trial_in_the_file_that_ends_before_it_begins_is_rejected_as_expired(
    tmp_path: Path, vendor: Vendor, make_harness: Callable[..., Harness]
) -> None:
    license_path, harness = serve_file(tmp_path, make_harness, vendor.issue())

    write_atomically(
        license_path,
        vendor.issue(
            serial_number="TRIAL-LATE",
            free_trial=True,
            effective_at=START + 90 * DAY,
            expires_at=START + 120 * DAY,
        ),
    )
    watcher_of(harness).poll_once()
    status = harness.admin.status()
    assert status.license.serial_number == "LIC-0001"
    assert not status.HasField("pending_license")
    assert status.license_file.last_error_reason == pb.ERROR_REASON_EXPIRED
    assert "never" in status.license_file.last_error


def test_a_license_in_the_file_that_is_not_yet_effective_waits_as_pending(
    tmp_path: Path, vendor: Vendor, make_harness: Callable[..., Harness]
) -> None:
    license_path, harness = serve_file(tmp_path, make_harness, vendor.issue())

    write_atomically(
        license_path, vendor.issue(serial_number="LIC-RENEWAL", effective_at=START + 3600)
    )
    watcher_of(harness).poll_once()
    status = harness.admin.status()
    assert status.license.serial_number == "LIC-0001"
    assert status.pending_license.serial_number == "LIC-RENEWAL"

    harness.advance(3600)
    assert serial_in_force(harness) == "LIC-RENEWAL"
    watcher_of(harness).poll_once()
    assert serial_in_force(harness) == "LIC-RENEWAL"


def test_a_fifo_at_the_license_path_does_not_keep_the_server_from_serving(
    tmp_path: Path, vendor: Vendor, server_processes: Callable[..., ServerProcess]
) -> None:
    license_path = tmp_path / "license.jws"
    os.mkfifo(license_path)  # nobody ever writes to it: a blocking open would wait forever

    server = server_processes(tmp_path / "data", vendor, "--license-file", str(license_path))
    server.start(timeout=30)

    with server.client() as admin:
        status = admin.status()
    assert not status.HasField("license")
    assert status.license_file.last_error_reason == pb.ERROR_REASON_LICENSE_FILE_NOT_REGULAR
    assert "a FIFO, not a regular file" in status.license_file.last_error
    assert "LICENSE_FILE_NOT_REGULAR" in server.log()


def swap_in_fifo(path: Path) -> None:
    staged = path.with_name("staged")
    os.mkfifo(staged)
    os.replace(staged, path)


def swap_in_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def swap_in_dev_zero(path: Path) -> None:
    staged = path.with_name("staged")
    staged.symlink_to("/dev/zero")
    os.replace(staged, path)


def swap_in_two_mebibytes(path: Path) -> None:
    # a license after all, but padded far beyond any license's size
    text = path.read_text().replace("LIC-0001", "LIC-0002")
    write_atomically(path, text + " " * (2 * 1024 * 1024))


@pytest.mark.parametrize(
    ("swap_in", "reason", "said"),
    [
        (swap_in_fifo, pb.ERROR_REASON_LICENSE_FILE_NOT_REGULAR, "a FIFO, not a regular file"),
        (
            swap_in_directory,
            pb.ERROR_REASON_LICENSE_FILE_NOT_REGULAR,
            "a directory, not a regular file",
        ),
        (
            swap_in_dev_zero,
            pb.ERROR_REASON_LICENSE_FILE_NOT_REGULAR,
            "a character device, not a regular file",
        ),
        (swap_in_two_mebibytes, pb.ERROR_REASON_LICENSE_FILE_TOO_LARGE, "larger than 1 MiB"),
    ],
    ids=["fifo", "directory", "dev-zero", "two-mebibytes"],
)
def test_only_a_regular_file_of_at_most_1_mib_is_read_and_the_license_in_force_stays(
    tmp_path: Path,
    vendor: Vendor,
    make_harness: Callable[..., Harness],
    caplog: pytest.LogCaptureFixture,
    swap_in: Callable[[Path], None],
    reason: int,
    said: str,
) -> None:
    license_path, harness = serve_file(tmp_path, make_harness, vendor.issue(), *FAST_POLL)
    before = harness.admin.status()

    with caplog.at_level(logging.ERROR, logger="licensing"):
        swap_in(license_path)
        # the watcher's own thread reads it: a read that blocks never reports anything
        wait_until(lambda: harness.admin.status().license_file.last_error_reason == reason)

    status = harness.admin.status()
    assert said in status.license_file.last_error
    assert status.license == before.license
    assert status.license_applied_time == before.license_applied_time
    assert pb.WARNING_KIND_LICENSE_FILE_ERROR in [w.kind for w in status.warnings]
    assert harness.control_plane.check_write("route", Operation.CREATE).allowed
    assert any(said in record.getMessage() for record in caplog.records)
