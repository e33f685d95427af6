"""The TypeScript example client, generated from protos/ alone, against a real server."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ADMIN_TOKEN, Harness, Vendor, store_evaluated_days
from licensing.v1 import licensing_pb2 as pb

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "typescript"
NPM_TIMEOUT = 300.0


def npm(*args: str) -> None:
    result = subprocess.run(
        ["npm", *args, "--no-audit", "--no-fund"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def typescript_client() -> Path:
    """The example as its README builds it: pinned packages, code generated from protos/, tsc."""
    npm("ci")
    npm("run", "build")
    return EXAMPLE / "dist" / "main.js"


def test_the_typescript_client_calls_every_rpc_and_reads_the_error_info_of_a_rejection(
    typescript_client: Path,
    make_harness: Callable[..., Harness],
    vendor: Vendor,
    tmp_path: Path,
) -> None:
    # a day with 150 instances at its peak: more than one of the client's pages of 100
    store_evaluated_days(tmp_path / "data", {"2026-12-31": [f"gw-{n:03d}" for n in range(150)]})
    harness = make_harness()
    license_path = tmp_path / "license.jws"
    license_path.write_text(vendor.issue(serial_number="LIC-TS") + "\n")

    result = subprocess.run(
        ["node", str(typescript_client), str(license_path)],
        capture_output=True,
        text=True,
        env=dict(os.environ, LICENSING_SERVER=harness.target, LICENSING_TOKEN=ADMIN_TOKEN),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    said = [line.split(maxsplit=1) for line in result.stdout.splitlines()]
    rpcs = [rpc for rpc, _ in said]
    assert set(rpcs) == {m.name for m in pb.DESCRIPTOR.services_by_name["LicenseService"].methods}

    uploads = [text for rpc, text in said if rpc == "Upload"]
    assert uploads[0].startswith("LIC-TS in force until ")
    assert uploads[1].startswith("rejected, InvalidArgument: MALFORMED (domain licensing.v1): ")
    assert ("ListPeakInstances", "2026-12-31: 150 instances at the peak") in [
        (rpc, text) for rpc, text in said
    ]
    # what the client did is what the server holds
    status = harness.admin.status()
    assert status.license.serial_number == "LIC-TS"
    assert status.live_instances == 1
