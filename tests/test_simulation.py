"""`python scripts/simulate.py` runs the whole story and prints it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "simulate.py"


def timeline_rows(output: str) -> list[tuple[int, str, str]]:
    """(day, state, the rest) of each timeline row that starts with a day number."""
    rows = []
    for line in output.splitlines():
        fields = line.split()
        # day, date, time, cores/quota, "now" or "peak", state, ...
        if len(fields) > 5 and fields[0].isdigit():
            rows.append((int(fields[0]), fields[5], line))
    return rows


def test_the_simulation_shows_restricted_on_day_8_and_normal_after_the_upload() -> None:
    finished = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, check=False
    )
    assert finished.returncode == 0, finished.stderr
    rows = timeline_rows(finished.stdout)
    days = {day for day, _, _ in rows}
    assert days == set(range(12)), finished.stdout

    def states_on(day: int) -> list[str]:
        return [state for d, state, _ in rows if d == day]

    assert states_on(0) == ["NORMAL"] * len(states_on(0))
    assert any("scale-up" in line for _, _, line in rows)
    assert all(state == "DP_CORE_EXCEEDED" for day in range(1, 8) for state in states_on(day))
    [day_8] = [line for day, _, line in rows if day == 8]
    assert "RESTRICTED" in day_8
    assert "DENIED (RESTRICTED)" in day_8
    assert "read route: allowed" in finished.stdout
    assert "delete route: allowed" in finished.stdout
    assert "upload license: allowed" in finished.stdout
    [upload] = [(day, state) for day, state, line in rows if "LIC-SIM-2 uploaded" in line]
    assert upload == (9, "NORMAL")
    assert states_on(10) == ["NORMAL"]
    assert states_on(11) == ["NORMAL"]
