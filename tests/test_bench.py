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
        "## Admin API: `GET /api/license` over HTTP/1.1",
        "## Targets",
    ):
        assert heading in report
    for path in ("CheckWrite", "ReportUsage", "GetStatus"):
        assert f"| {path} | 1 |" in report
    for transport in ("http", "https"):
        assert f"| {transport} | 1 |" in report
        assert f"| GET /api/license ({transport}), c=1 |" in report
