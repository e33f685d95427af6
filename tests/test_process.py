"""The server as a real process: restart, SIGTERM, port conflicts, refusing unsafe setups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    ADMIN_TOKEN,
    DAY,
    DEPLOYMENT_ID,
    GATEWAY_TOKEN,
    TOKENS,
    Harness,
    ServerProcess,
    Vendor,
    self_signed_certificate,
    server_config,
)
from licensing.client import LicensingClient, LicensingError, Operation
from licensing.v1 import licensing_pb2 as pb

from licensing_server.app import DEV_KEY_DIR, DEV_KEY_ID, StartupError, start_server
from licensing_server.config import load_config
from licensing_server.domain.clock import ManualClock
from licensing_server.domain.license import load_private_key, private_key_pem


def current_license(vendor: Vendor, **overrides: object) -> str:
    """A license valid on the real clock, for servers running on the wall clock."""
    now = time.time()
    claims: dict[str, object] = {"effective_at": now - DAY, "expires_at": now + 365 * DAY}
    claims.update(overrides)
    return vendor.issue(**claims)


def dev_vendor(data_dir: Path) -> Vendor:
    """The development signing key that --dev made in `data_dir`, as a vendor."""
    key_dir = data_dir / DEV_KEY_DIR
    private_pem = (key_dir / f"{DEV_KEY_ID}.private.pem").read_bytes()
    return Vendor(load_private_key(private_pem), DEV_KEY_ID, key_dir / f"{DEV_KEY_ID}.public.pem")


def test_license_deployment_id_and_date_survive_a_restart(
    tmp_path: Path, vendor: Vendor, server_processes: Callable[..., ServerProcess]
) -> None:
    data_dir = tmp_path / "data"
    first = server_processes(data_dir, vendor).start()
    with first.client() as admin:
        before = admin.status()
        assert before.deployment_id  # made at the first start
        admin.upload(current_license(vendor, deployment_id=before.deployment_id))
        uploaded = admin.status()
    assert first.terminate() == 0

    second = server_processes(data_dir, vendor).start()
    with second.client() as admin:
        after = admin.status()
    assert after.deployment_id == before.deployment_id
    assert after.deployment_time == before.deployment_time
    assert after.license == uploaded.license
    assert after.license_applied_time == uploaded.license_applied_time
    assert after.license_valid


def test_sigterm_drains_and_exits_cleanly(
    tmp_path: Path, vendor: Vendor, server_processes: Callable[..., ServerProcess]
) -> None:
    server = server_processes(tmp_path / "data", vendor).start()
    assert server.terminate() == 0
    assert "draining" in server.log()
    assert "stopped" in server.log()


def test_a_second_server_on_the_same_port_fails_with_a_clear_error_in_its_json_log(
    tmp_path: Path, vendor: Vendor, server_processes: Callable[..., ServerProcess]
) -> None:
    first = server_processes(tmp_path / "a", vendor).start()
    second = ServerProcess(tmp_path / "b", vendor, "--log-format", "json", port=first.port)
    result = subprocess.run(second.args, capture_output=True, text=True, env=first.env, timeout=60)
    assert result.returncode == 1
    # gRPC's own line about the port is in the log too, as JSON
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    errors = [(entry["logger"], entry["message"]) for entry in entries if entry["level"] == "ERROR"]
    assert errors[-1] == (
        "licensing",
        f"cannot start: cannot listen on 127.0.0.1:{first.port}: Address already in use",
    )
    assert "GRPC_VERBOSITY" not in result.stderr
    # the first server is unaffected
    with first.client() as admin:
        admin.status()


def test_an_unauthenticated_server_is_refused_unless_on_loopback(
    tmp_path: Path, vendor: Vendor
) -> None:
    config = server_config(tmp_path / "data", vendor, "--listen", "0.0.0.0:0", environ={})
    with pytest.raises(StartupError, match="without authentication"):
        start_server(config, ManualClock(time.time()))


def test_plaintext_off_loopback_needs_to_be_allowed(tmp_path: Path, vendor: Vendor) -> None:
    config = server_config(tmp_path / "data", vendor, "--listen", "0.0.0.0:0")
    with pytest.raises(StartupError, match="plaintext"):
        start_server(config, ManualClock(time.time()))


def test_a_pinned_deployment_id_that_disagrees_with_the_data_directory_is_refused(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    make_harness(data_dir=tmp_path / "pinned").running.stop(grace=0)
    with pytest.raises(StartupError, match="belongs to deployment"):
        make_harness("--deployment-id", "another", data_dir=tmp_path / "pinned")
    # the refused start let go of the data directory
    assert make_harness(data_dir=tmp_path / "pinned").admin.status().deployment_id == DEPLOYMENT_ID


def test_an_unpinned_deployment_id_is_made_once_and_kept(tmp_path: Path, vendor: Vendor) -> None:
    clock = ManualClock(time.time())
    argv = ["--listen", "127.0.0.1:0", "--http-listen", "", "--data-dir", str(tmp_path / "d")]
    running = start_server(load_config(argv, environ=TOKENS), clock)
    made = running.service.deployment
    running.stop(grace=0)
    clock.advance(3 * DAY)
    running = start_server(load_config(argv, environ=TOKENS), clock)
    try:
        assert running.service.deployment == made
        assert made.deployment_id != DEPLOYMENT_ID
    finally:
        running.stop(grace=0)


def test_dev_mode_makes_and_trusts_a_local_signing_key_and_says_so(
    tmp_path: Path, make_harness: Callable[..., Harness]
) -> None:
    data_dir = tmp_path / "dev-data"
    harness = make_harness("--dev", data_dir=data_dir)
    status = harness.admin.status()
    assert status.development_mode
    assert any(w.kind == pb.WARNING_KIND_DEVELOPMENT_MODE for w in status.warnings)
    harness.admin.upload(dev_vendor(data_dir).issue(serial_number="DEV-1"))
    assert harness.control_plane.check_write("route", Operation.CREATE).allowed


def test_without_dev_mode_the_development_key_is_not_trusted(
    tmp_path: Path, make_harness: Callable[..., Harness]
) -> None:
    data_dir = tmp_path / "data"
    make_harness("--dev", data_dir=data_dir).running.stop(grace=0)
    harness = make_harness(data_dir=data_dir)
    assert not harness.admin.status().development_mode
    with pytest.raises(LicensingError) as raised:
        harness.admin.upload(dev_vendor(data_dir).issue(serial_number="DEV-1"))
    assert raised.value.reason == "UNKNOWN_KEY"


def test_license_vendor_makes_keys_and_issues_a_license_the_server_accepts(
    tmp_path: Path, make_harness: Callable[..., Harness]
) -> None:
    keys = tmp_path / "keys"
    vendor_cli = [sys.executable, "-m", "licensing_server.vendor"]
    subprocess.run(
        [*vendor_cli, "keygen", "--kid", "vendor-2027", "--out", str(keys)], check=True, timeout=60
    )
    description = tmp_path / "license.toml"
    description.write_text(
        'serial = "LIC-TOML"\ncustomer = "Example Corp"\neffective = "2026-12-01"\n'
        f'expires = "2027-12-01T12:00:00Z"\nmax_dp_cores = 24\nfeatures = ["api7-gateway"]\n'
        f'deployment_id = "{DEPLOYMENT_ID}"\n'
    )
    issued = subprocess.run(
        [
            *vendor_cli,
            "issue",
            "--key",
            str(keys / "vendor-2027.private.pem"),
            "--kid",
            "vendor-2027",
            "--from",
            str(description),
            "--max-dp-cores",
            "32",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    harness = make_harness("--trusted-key", f"vendor-2027={keys / 'vendor-2027.public.pem'}")
    response = harness.admin.upload(issued)
    assert response.license.serial_number == "LIC-TOML"
    assert response.license.max_dp_cores == 32  # the flag overrides the description
    assert response.license.expiration_time.seconds == 1827662400  # 2027-12-01T12:00:00Z


def test_license_vendor_refuses_to_issue_a_malformed_license(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    vendor_cli = [sys.executable, "-m", "licensing_server.vendor"]
    subprocess.run(
        [*vendor_cli, "keygen", "--kid", "k", "--out", str(keys)], check=True, timeout=60
    )
    result = subprocess.run(
        [
            *vendor_cli,
            "issue",
            "--key",
            str(keys / "k.private.pem"),
            "--kid",
            "k",
            "--serial",
            "S",
            "--customer",
            "C",
            "--effective",
            "2027-02-01",
            "--expires",
            "2027-01-01",
            "--max-dp-cores",
            "4",
            "--deployment-id",
            "d",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "MALFORMED" in result.stderr
    assert result.stdout == ""


def test_license_vendor_refuses_to_issue_from_arguments_that_are_not_utf8(
    tmp_path: Path, vendor: Vendor
) -> None:
    key_path = tmp_path / "vendor.private.pem"
    key_path.write_bytes(private_key_pem(vendor.key))
    # a Latin-1 terminal: Python reads the bytes as lone surrogates ("Soci\udce9t\udce9")
    args: list[str | bytes] = [
        sys.executable,
        "-m",
        "licensing_server.vendor",
        "issue",
        "--key",
        str(key_path),
        "--kid",
        vendor.kid,
        "--serial",
        "S",
        "--customer",
        "Société".encode("latin-1"),
        "--effective",
        "2027-01-01",
        "--expires",
        "2028-01-01",
        "--max-dp-cores",
        "4",
        "--deployment-id",
        "d",
    ]
    result = subprocess.run(
        args,
        capture_output=True,
        timeout=60,
        env=dict(os.environ, PYTHONUTF8="1"),
    )
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "MALFORMED" in stderr
    assert "customer" in stderr
    assert result.stdout == b""


def test_tls_from_configuration_serves_over_tls_only(
    tmp_path: Path, make_harness: Callable[..., Harness]
) -> None:
    cert_path, key_path = self_signed_certificate(tmp_path)
    harness = make_harness("--tls-cert", str(cert_path), "--tls-key", str(key_path))
    with LicensingClient(
        f"localhost:{harness.running.port}",
        token=ADMIN_TOKEN,
        tls=True,
        root_certificates=cert_path.read_bytes(),
    ) as secure:
        assert secure.status().deployment_id == DEPLOYMENT_ID
    # the admin client of the harness speaks plaintext, which a TLS port refuses
    with pytest.raises(LicensingError) as raised:
        harness.admin.status()
    assert raised.value.code.name == "UNAVAILABLE"


def test_a_second_server_on_the_same_data_directory_is_refused(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    make_harness(data_dir=tmp_path / "shared")
    with pytest.raises(StartupError, match="another server"):
        make_harness(data_dir=tmp_path / "shared")


def test_one_token_for_two_roles_refuses_to_start_naming_the_roles_not_the_token(
    tmp_path: Path, vendor: Vendor
) -> None:
    environ = dict(TOKENS, LICENSING_GATEWAY_TOKEN=f"{GATEWAY_TOKEN},{ADMIN_TOKEN}")
    config = server_config(tmp_path / "data", vendor, environ=environ)
    with pytest.raises(StartupError) as raised:
        start_server(config, ManualClock(time.time()))
    message = str(raised.value)
    assert "admin" in message and "gateway" in message
    assert ADMIN_TOKEN not in message


def test_a_server_process_with_one_token_for_two_roles_exits_naming_the_roles_not_the_token(
    tmp_path: Path, vendor: Vendor
) -> None:
    shared = "one-token-for-two-roles"
    process = ServerProcess(tmp_path / "data", vendor)
    env = dict(process.env, LICENSING_CONTROL_PLANE_TOKEN=shared, LICENSING_GATEWAY_TOKEN=shared)
    result = subprocess.run(process.args, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode != 0
    assert "gateway and control-plane" in result.stderr
    assert shared not in result.stdout + result.stderr
