"""`python scripts/simulate.py` runs the whole story; `--json` gives its timeline as data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "simulate.py"


def simulate(*args: str) -> str:
    finished = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout


def test_the_simulation_shows_restricted_on_day_8_and_normal_after_the_upload() -> None:
    rows: list[dict[str, Any]] = json.loads(simulate("--json"))
    assert {row["day"] for row in rows} == set(range(12))

    def on(day: int) -> list[dict[str, Any]]:
        return [row for row in rows if row["day"] == day]

    def states_on(day: int) -> list[str]:
        return [row["state"] for row in on(day)]

    assert set(states_on(0)) == {"NORMAL"}
    [scale_up] = [row for row in on(0) if row["event"].startswith("scale-up")]
    assert (scale_up["cores"], scale_up["quota"], scale_up["cores_are"]) == (24, 16, "now")
    assert all(set(states_on(day)) == {"DP_CORE_EXCEEDED"} for day in range(1, 8))
    assert all(
        row["create_route"]["reason"] == "GRACE_PERIOD" for day in range(1, 8) for row in on(day)
    )

    evaluation, asked = on(8)
    assert (evaluation["time"], evaluation["state"]) == ("2027-03-09T00:00:00Z", "RESTRICTED")
    assert (evaluation["cores"], evaluation["quota"], evaluation["cores_are"]) == (24, 16, "peak")
    assert evaluation["create_route"]["allowed"] is False
    assert evaluation["create_route"]["reason"] == "RESTRICTED"
    assert {what: (v["allowed"], v["reason"]) for what, v in asked["other_checks"].items()} == {
        "read route": (True, "READ"),
        "delete route": (True, "DELETE"),
        "upload license": (True, "LICENSE_RESOURCE"),
    }

    evaluation_9, upload = on(9)
    assert evaluation_9["state"] == "RESTRICTED"
    assert upload["time"] == "2027-03-10T10:00:00Z"
    assert upload["event"].startswith("license LIC-SIM-2 uploaded")
    assert (upload["state"], upload["quota"]) == ("NORMAL", 32)
    assert upload["create_route"] == {
        "allowed": True,
        "reason": "LICENSED",
        "message": "allowed",
    }
    assert states_on(10) == states_on(11) == ["NORMAL"]


def test_the_simulation_prints_each_row_of_the_timeline_for_a_person() -> None:
    rows = json.loads(simulate("--json"))
    printed = simulate().splitlines()
    for row in rows:
        if row["other_checks"]:
            answers = ", ".join(
                f"{what}: {'allowed' if v['allowed'] else 'DENIED'} ({v['reason']})"
                for what, v in row["other_checks"].items()
            )
            assert any(line.strip() == answers for line in printed), answers
            continue
        cells = [
            str(row["day"]),
            row["time"][:10],
            row["time"][11:16],
            f"{row['cores']}/{row['quota']}",
            row["cores_are"],
            row["state"],
            "allowed" if row["create_route"]["allowed"] else "DENIED",
            f"({row['create_route']['reason']})",
        ]
        starts = [line.split()[:8] for line in printed]
        assert cells in starts, cells
