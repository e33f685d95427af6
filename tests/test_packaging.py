"""Both distributions as their users get them: wheels, installed in fresh virtual environments."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# what only the server needs: a control plane that installs the client must not get it
SERVER_ONLY = {"cryptography", "pyjwt", "sqlite-utils", "prometheus-client"}
INSTALL_TIMEOUT = 600.0


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheels of both distributions, built from a copy of the sources (no earlier build/
    directory can leak into them), by name."""
    source = tmp_path_factory.mktemp("source") / "project"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "node_modules",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            "mutants",
            ".hypothesis",
            "data",
        ),
    )
    out = tmp_path_factory.mktemp("wheels")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out, "./client", ".", cwd=source)
    return {wheel.name.split("-")[0]: wheel for wheel in out.glob("*.whl")}


def top_level_packages(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name.split("/")[0] for name in archive.namelist() if ".dist-info/" not in name}


def fresh_environment(directory: Path, *wheels: Path) -> Path:
    """A new virtual environment with these wheels and what they depend on; its bin/."""
    run(sys.executable, "-m", "venv", directory)
    bin_dir = directory / "bin"
    run(bin_dir / "pip", "install", "--disable-pip-version-check", *wheels)
    return bin_dir


def installed_distributions(bin_dir: Path) -> set[str]:
    listed = run(
        bin_dir / "python",
        "-I",  # isolated: not the working directory's *.egg-info
        "-c",
        "import importlib.metadata as m, json; "
        "print(json.dumps([d.metadata['Name'] for d in m.distributions()]))",
    )
    return {name.lower().replace("_", "-") for name in json.loads(listed.stdout)}


def test_each_wheel_holds_only_its_own_package_named_for_the_product(
    wheels: dict[str, Path],
) -> None:
    assert set(wheels) == {"licensing_client", "licensing_service"}
    assert top_level_packages(wheels["licensing_client"]) == {"licensing"}
    assert top_level_packages(wheels["licensing_service"]) == {"licensing_server"}
    with zipfile.ZipFile(wheels["licensing_client"]) as archive:
        names = set(archive.namelist())
    # a typed package: type checkers read the client and the generated stubs
    assert {"licensing/py.typed", "licensing/v1/licensing_pb2.pyi"} <= names


def test_the_client_wheel_alone_installs_without_the_servers_dependencies(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    bin_dir = fresh_environment(tmp_path / "control-plane", wheels["licensing_client"])
    installed = installed_distributions(bin_dir)
    assert "licensing-client" in installed
    assert "licensing-service" not in installed
    assert not installed & SERVER_ONLY
    helped = run(bin_dir / "licensectl", "--help")
    assert helped.stdout.startswith("usage: licensectl")


def test_the_server_wheel_with_the_client_wheel_gives_a_working_server(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    bin_dir = fresh_environment(tmp_path / "server", *wheels.values())
    assert installed_distributions(bin_dir) >= SERVER_ONLY
    helped = run(bin_dir / "license-server", "--help")
    assert helped.stdout.startswith("usage: license-server")
    assert run(bin_dir / "license-vendor", "--help").stdout.startswith("usage: license-vendor")
    assert run(bin_dir / "licensectl", "--help").stdout.startswith("usage: licensectl")
