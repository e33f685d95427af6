"""The deployment examples stay true to the server's options."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

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
    for example in ("kubernetes.yaml", "license-server.service", "helm-values-mapping.md"):
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
