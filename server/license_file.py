"""The license file watcher (the gateway's `license.file_path`): GitOps and Kubernetes Secrets.

The file is compared by the SHA-256 of its content, never by modification
time: a Kubernetes Secret update swaps a `..data` symlink and keeps old
timestamps, `cp` or an editor rewrites in place, a GitOps tool renames over
it. Every poll opens the path afresh (following symlinks), so each of these is
seen by the next poll. A file that is missing, half written, unreadable or
invalid never replaces the license in force.

Only a regular file is read, and at most MAX_FILE_BYTES of it: a FIFO, a
device or a directory at the path (or a symlink to one) is reported, never
read, so a poll can neither block nor read without end.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from dataclasses import replace
from enum import StrEnum

from licensing_server.domain.license import LicenseRejected, RejectionReason, normalize
from licensing_server.service import (
    LicenseFileReport,
    LicenseSource,
    LicensingService,
    token_sha256,
)
from licensing_server.storage import Storage

log = logging.getLogger("licensing")

# Far more than any license with whitespace around it; a larger file is refused unread.
MAX_FILE_BYTES = 1024 * 1024

_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileProblem(StrEnum):
    """Why the file could not be read; the values are ErrorReason names, like RejectionReason's."""

    MISSING = "LICENSE_FILE_MISSING"
    UNREADABLE = "LICENSE_FILE_UNREADABLE"
    NOT_REGULAR = "LICENSE_FILE_NOT_REGULAR"
    TOO_LARGE = "LICENSE_FILE_TOO_LARGE"


class LicenseFileUnusable(Exception):
    """The path holds nothing that could be a license; what it holds was not (all) read."""

    def __init__(self, problem: FileProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message


def read_license_file(path: str) -> bytes:
    """The bytes of the regular file at `path` (following symlinks), read without blocking.

    Raises LicenseFileUnusable for a missing or unreadable path, anything but a
    regular file, and a file larger than MAX_FILE_BYTES.
    """
    try:
        # O_NONBLOCK: opening a FIFO nobody writes to returns at once instead of waiting
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LicenseFileUnusable(FileProblem.MISSING, "the file does not exist") from None
    except OSError as error:
        raise _unreadable(error) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for is_kind, name in _NOT_REGULAR if is_kind(mode)), "a special file")
            raise LicenseFileUnusable(
                FileProblem.NOT_REGULAR, f"the path is {kind}, not a regular file: it is not read"
            )
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise LicenseFileUnusable(
            FileProblem.TOO_LARGE,
            f"the file is larger than 1 MiB ({MAX_FILE_BYTES} bytes): it is not a license",
        )
    except OSError as error:
        raise _unreadable(error) from None
    finally:
        os.close(fd)


def _unreadable(error: OSError) -> LicenseFileUnusable:
    return LicenseFileUnusable(
        FileProblem.UNREADABLE, f"the file cannot be read: {error.strerror or error}"
    )


class LicenseFileWatcher:
    """Polls the license file every `interval` seconds and applies a changed, valid license.

    The file and Upload can both be used: the latest valid license applied from
    either wins. A license is taken from the file only when the file's license
    differs from the one last taken from it (remembered in the store), so an
    unchanged file never overrides a newer upload, not even after a restart.
    """

    def __init__(
        self, service: LicensingService, store: Storage, path: str, interval: float
    ) -> None:
        self._service = service
        self._store = store
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="license-file", daemon=True)
        # poll_once may be called by tests while the thread runs
        self._poll_lock = threading.Lock()
        # the last poll's content hash or read error: a repeat is neither re-applied nor re-logged
        self._last_seen: str | None = None
        self.report = LicenseFileReport(path=path)
        service.license_file = self.report

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll_once()
            except Exception:
                log.exception("license file %s: poll failed", self._path)

    def poll_once(self) -> LicenseFileReport:
        """Read the file once, apply its license if it changed, and return the report."""
        with self._poll_lock:
            now = self._service.now()
            try:
                content = read_license_file(self._path)
            except LicenseFileUnusable as unusable:
                # whatever the file holds when it is back is looked at afresh
                self._last_seen = None
                return self._failed(now, "", unusable.problem, unusable.message)
            content_sha256 = hashlib.sha256(content).hexdigest()
            if content_sha256 == self._last_seen:
                return self._publish(replace(self.report, last_read_at=now))
            self._last_seen = content_sha256
            return self._take(now, content, content_sha256)

    def _take(self, now: float, content: bytes, content_sha256: str) -> LicenseFileReport:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            return self._failed(
                now, content_sha256, RejectionReason.MALFORMED, "the file is not UTF-8 text"
            )
        token_hash = token_sha256(normalize(text))
        try:
            # read afresh: another replica may have taken this file's license already
            taken_token_sha256 = self._store.license_file_token()
        except Exception as error:
            self._last_seen = None
            message = f"the license could not be applied: {error}"
            return self._failed(now, content_sha256, "", message)
        report = replace(
            self.report,
            last_read_at=now,
            content_sha256=content_sha256,
            last_error="",
            last_error_reason="",
        )
        if token_hash == taken_token_sha256:
            if self.report.last_error:
                log.info("license file %s: readable again, its license is unchanged", self._path)
            return self._publish(report)
        try:
            outcome = self._service.upload(text, LicenseSource.FILE)
            self._store.save_license_file_token(token_hash)
        except LicenseRejected as rejection:
            return self._failed(now, content_sha256, rejection.reason, rejection.message)
        except Exception as error:
            # say a full disk: forget the content so the next poll tries again
            self._last_seen = None
            message = f"the license could not be applied: {error}"
            return self._failed(now, content_sha256, "", message)
        if outcome.unchanged:
            log.info(
                "license file %s: license %s is already %s",
                self._path,
                outcome.license.serial_number,
                "pending" if outcome.pending else "in force",
            )
            return self._publish(report)
        return self._publish(replace(report, last_applied_at=now))

    def _failed(
        self, now: float, content_sha256: str, reason: str, message: str
    ) -> LicenseFileReport:
        """Report a file that changes nothing; log and count it once, not at every poll."""
        report = self.report
        if (report.content_sha256, report.last_error_reason, report.last_error) == (
            content_sha256,
            reason,
            message,
        ):
            return self._publish(replace(report, last_read_at=now))
        log.error(
            "license file %s: not applied (%s): %s; the license in force stays",
            self._path,
            reason or "ERROR",
            message,
        )
        return self._publish(
            replace(
                self.report,
                last_read_at=now,
                content_sha256=content_sha256,
                last_error=message,
                last_error_reason=reason,
                reload_errors=self.report.reload_errors + 1,
            )
        )

    def _publish(self, report: LicenseFileReport) -> LicenseFileReport:
        self.report = report
        self._service.license_file = report
        return report
