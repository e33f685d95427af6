"""The README's walkthrough and snippets work as written."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

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
