"""The README's Python snippet and the files its walkthrough writes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ADMIN_TOKEN, Harness

ROOT = Path(__file__).resolve().parent.parent


def test_the_license_the_walkthrough_issues_is_ignored_by_git() -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    inside = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True, text=True
    )
    if inside.stdout.strip() != "true":
        pytest.skip("not a git checkout")
    assert "> license.jws" in (ROOT / "README.md").read_text()
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", "license.jws"], cwd=ROOT)
    assert ignored.returncode == 0


def python_snippet() -> str:
    """The README's Python block of the typed client's example."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```$", readme, flags=re.MULTILINE | re.DOTALL)
    [snippet] = [block for block in blocks if "LicensingClient(" in block]
    return snippet


def test_the_python_snippet_prints_the_state_and_reason_by_name(harness: Harness) -> None:
    snippet = python_snippet()
    # the README's server: its address and admin token, as in the walkthrough
    assert '"127.0.0.1:7443"' in snippet and 'token="s3cret"' in snippet
    runnable = snippet.replace('"127.0.0.1:7443"', repr(harness.target)).replace(
        'token="s3cret"', f"token={ADMIN_TOKEN!r}"
    )
    ran = subprocess.run(
        [sys.executable, "-c", runnable], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    state, decision = ran.stdout.splitlines()
    assert state == "RUNTIME_STATE_NORMAL"
    assert decision.startswith("False DECISION_REASON_NO_LICENSE no license is installed")
