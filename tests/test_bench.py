"""Keeps scripts/bench from rotting: it runs, it writes the tables (no timing asserts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_runs_and_writes_the_table(tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.bench",
            "--quick",
            # a busy test machine must not stall the smoke run
            "--wait-idle",
            "0",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = output.read_text()
    for heading in (
        "## Hot paths against the grpc.aio no-op ceiling",
        "## Open loop: gateways reporting on a fixed schedule",
        "## Nightly evaluation",
        "## Storage at steady usage",
        "## Targets",
    ):
        assert heading in report
    for path in ("CheckWrite", "ReportUsage", "GetStatus"):
        assert f"| {path} | 1 |" in report


def test_quick_watch_benchmark_runs_and_writes_the_table(tmp_path: Path) -> None:
    output = tmp_path / "benchmarks-watch.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.bench",
            "watch",
            "--quick",
            "--wait-idle",
            "0",
            "--watchers",
            "20",
            "--changes",
            "5",
            "--local-calls",
            "1000",
            "--grpc-calls",
            "50",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = output.read_text()
    for heading in (
        "## Local decision against the round trip",
        "## Propagation: an Upload until a subscriber decides with it",
        "## CheckWrite with idle watchers",
        "## Targets",
    ):
        assert heading in report
    assert "| 1 | 1 |" in report
