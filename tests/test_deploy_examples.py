"""The deployment examples stay true to the server's options."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from licensing_server.config import OPTIONS, env_name, load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_the_sample_toml_loads_and_lists_every_option() -> None:
    path = DEPLOY / "license-server.toml"
    text = path.read_text()
    keys = set(tomllib.loads(text))
    for option in OPTIONS:
        listed = option.name in keys or f"# {option.name} =" in text
        assert listed or (option.name == "trusted_key" and "trusted_keys" in keys), option.name

    config = load_config(["--config", str(path)], environ={})
    assert config.license_file
    assert config.trusted_key_paths()


def test_the_examples_name_only_real_environment_variables() -> None:
    known = {env_name(option.name) for option in OPTIONS} | {env_name("config")}
    for example in (
        "kubernetes.yaml",
        "kubernetes-replicas.yaml",
        "license-server.service",
        "helm-values-mapping.md",
    ):
        used = set(re.findall(r"\bLICENSING_[A-Z_]+\b", (DEPLOY / example).read_text()))
        assert used <= known, (example, used - known)


def test_the_kubernetes_example_mounts_the_license_secret_as_a_directory() -> None:
    manifest = (DEPLOY / "kubernetes.yaml").read_text()
    mounts = [line for line in manifest.splitlines() if line.strip().startswith("subPath:")]
    assert mounts == []
    assert "secretName: license-server-license" in manifest
    assert "mountPath: /etc/license-server/license\n" in manifest
    assert "value: /etc/license-server/license/license.jws" in manifest
    assert manifest.count("grpc:\n              port: 7443") == 3


def test_the_replicas_example_rolls_three_replicas_on_a_database_from_a_secret() -> None:
    manifest = (DEPLOY / "kubernetes-replicas.yaml").read_text()
    assert "replicas: 3" in manifest
    assert "type: RollingUpdate" in manifest and "maxUnavailable: 0" in manifest
    assert (
        "- name: LICENSING_DATABASE_URL\n              valueFrom:\n"
        "                secretKeyRef:\n                  name: license-server-database"
    ) in manifest
    assert "persistentVolumeClaim" not in manifest
    assert "service: licensing.v1.LicenseService" in manifest  # readiness follows the database
    assert [line for line in manifest.splitlines() if "subPath:" in line] == []


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: section -> key -> values, in order (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, line
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def sysusers_users(text: str) -> dict[str, list[str]]:
    """A sysusers.d file's `u` lines: user name -> the fields after it."""
    users: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            kind, name, *rest = shlex.split(line)
            if kind == "u":
                users[name] = rest
    return users


def test_the_systemd_unit_runs_as_a_user_that_its_sysusers_file_creates() -> None:
    service = unit_settings((DEPLOY / "license-server.service").read_text())["Service"]
    users = sysusers_users((DEPLOY / "license-server.sysusers.conf").read_text())
    [user] = service["User"]
    # a `u` line makes the user and a group of the same name
    assert service.get("Group", [user]) == [user]
    assert user in users
    assert "DynamicUser" not in service
    # the state directory the unit creates is the user's home and the sample's data_dir
    [state_directory] = service["StateDirectory"]
    data_dir = tomllib.loads((DEPLOY / "license-server.toml").read_text())["data_dir"]
    assert data_dir == f"/var/lib/{state_directory}" == users[user][2]
    assert "/etc/sysusers.d/license-server.conf" in (DEPLOY / "license-server.service").read_text()


def test_systemd_sysusers_creates_the_units_user_in_an_empty_root(tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed")
    (tmp_path / "etc").mkdir()
    made = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(DEPLOY / "license-server.sysusers.conf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc/passwd").read_text().splitlines()
    }
    user = passwd["license-server"]
    assert (user[5], user[6]) == ("/var/lib/license-server", "/usr/sbin/nologin")
    assert int(user[2]) != 0
    assert "license-server:" in (tmp_path / "etc/group").read_text()


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (DEPLOY / "license-server.service").read_text()
    # verify insists that ExecStart's program exists; the unit names where it is installed
    installed = "ExecStart=/opt/license-server/bin/license-server "
    assert installed in unit
    stand_in = shutil.which("true")
    assert stand_in is not None
    copy = tmp_path / "license-server.service"
    copy.write_text(unit.replace(installed, f"ExecStart={stand_in} "))
    verified = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    # unknown or misspelt settings are only warnings: any output at all fails
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")


def kubernetes_resources(manifest: str = "kubernetes.yaml") -> list[dict[str, Any]]:
    documents = yaml.safe_load_all((DEPLOY / manifest).read_text())
    return [document for document in documents if document]


@pytest.mark.parametrize("manifest", ["kubernetes-replicas.yaml"])
def test_the_replicas_example_validates_against_the_kubernetes_schema(manifest: str) -> None:
    for resource in kubernetes_resources(manifest):
        kubernetes_validate.validate(resource, "1.37", strict=True)


def test_the_kubernetes_example_validates_against_the_kubernetes_schema() -> None:
    resources = kubernetes_resources()
    assert [r["kind"] for r in resources] == [
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "Service",
    ]
    for resource in resources:
        # strict: a misspelt or misplaced field fails instead of being ignored
        kubernetes_validate.validate(resource, "1.37", strict=True)


# the volume types Pod Security "restricted" allows
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


@pytest.mark.parametrize("manifest", ["kubernetes.yaml", "kubernetes-replicas.yaml"])
def test_the_kubernetes_examples_meet_pod_security_restricted(manifest: str) -> None:
    [deployment] = [r for r in kubernetes_resources(manifest) if r["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    pod_security = pod["securityContext"]
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host_namespace)
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, volume
    containers = pod["containers"] + pod.get("initContainers", [])
    for container in containers:
        security = container["securityContext"]
        assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
        assert security.get("runAsUser", pod_security.get("runAsUser")) != 0
        seccomp = security.get("seccompProfile", pod_security.get("seccompProfile"))
        assert seccomp == {"type": "RuntimeDefault"}
        assert security["allowPrivilegeEscalation"] is False
        assert not security.get("privileged")
        assert security["capabilities"]["drop"] == ["ALL"]
        assert set(security["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}
        assert not [port for port in container["ports"] if "hostPort" in port]
