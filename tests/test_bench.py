"""Keeps scripts/bench from rotting: it runs, it writes the tables (no timing asserts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_report(output: Path, *args: str) -> str:
    """Run `python -m scripts.bench ARGS --quick`; the markdown it wrote."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.bench",
            *args,
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
    return output.read_text()


def test_quick_benchmark_runs_and_writes_the_table(tmp_path: Path) -> None:
    report = quick_report(tmp_path / "benchmarks.md")
    for heading in (
        "## Hot paths against the grpc.aio no-op ceiling",
        "## Open loop: gateways reporting on a fixed schedule",
        "## Nightly evaluation",
        "## Storage at steady usage",
        "## Admin API: `GET /api/license` over HTTP/1.1",
        "## Targets",
    ):
        assert heading in report
    for path in ("CheckWrite", "ReportUsage", "GetStatus"):
        assert f"| {path} | 1 |" in report
    for transport in ("http", "https"):
        assert f"| {transport} | 1 |" in report
        assert f"| GET /api/license ({transport}), c=1 |" in report


def test_quick_watch_benchmark_runs_and_writes_the_table(tmp_path: Path) -> None:
    report = quick_report(
        tmp_path / "benchmarks-watch.md",
        "watch",
        *("--watchers", "20", "--changes", "5", "--local-calls", "1000", "--grpc-calls", "50"),
    )
    for heading in (
        "## Local decision against the round trip",
        "## Propagation: an Upload until a subscriber decides with it",
        "## CheckWrite with idle watchers",
        "## Targets",
    ):
        assert heading in report
    assert "| 1 | 1 |" in report
