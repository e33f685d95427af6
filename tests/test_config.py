"""Configuration: flags win over the environment, which wins over the file; bad values are named."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from licensing_server.config import OPTIONS, ConfigError, env_name, flag_name, load_config


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_flags_win_over_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "server.toml",
        'listen = "127.0.0.1:1111"\ndata_dir = "from-file"\ntimezone = "Europe/Berlin"\n',
    )
    environ = {"LICENSING_DATA_DIR": "from-env", "LICENSING_TIMEZONE": "Asia/Tokyo"}
    config = load_config(["--config", str(config_file), "--timezone", "America/New_York"], environ)
    assert config.listen == "127.0.0.1:1111"
    assert config.data_dir == "from-env"
    assert config.timezone == "America/New_York"


def test_the_config_file_can_come_from_the_environment(tmp_path: Path) -> None:
    config_file = write(tmp_path / "server.toml", "instance_ttl = 45\n")
    assert load_config([], {"LICENSING_CONFIG": str(config_file)}).instance_ttl == 45.0


def test_defaults_serve_loopback_with_a_local_data_directory() -> None:
    config = load_config([], {})
    assert config.listen == "127.0.0.1:7443"
    assert config.data_dir == "data"
    assert config.instance_ttl == 30.0
    assert config.timezone == "UTC"
    assert config.license_poll_interval == 5.0
    assert config.expiry_warning_days == 30


def test_trusted_keys_from_flags_environment_and_file(tmp_path: Path) -> None:
    assert load_config(
        ["--trusted-key", "a=/k/a.pem", "--trusted-key", "b=/k/b.pem"], {}
    ).trusted_key_paths() == {
        "a": Path("/k/a.pem"),
        "b": Path("/k/b.pem"),
    }
    assert load_config(
        [], {"LICENSING_TRUSTED_KEY": "a=/k/a.pem, b=/k/b.pem"}
    ).trusted_key_paths() == {
        "a": Path("/k/a.pem"),
        "b": Path("/k/b.pem"),
    }
    table = write(tmp_path / "t.toml", '[trusted_keys]\nvendor-2027 = "/k/2027.pem"\n')
    assert load_config(["--config", str(table)], {}).trusted_key_paths() == {
        "vendor-2027": Path("/k/2027.pem")
    }


def test_tokens_come_from_the_environment_comma_separated() -> None:
    config = load_config([], {"LICENSING_ADMIN_TOKEN": "one, two", "LICENSING_GATEWAY_TOKEN": "gw"})
    assert config.admin_token == ["one", "two"]
    assert config.gateway_token == ["gw"]
    assert config.control_plane_token == []


def test_tokens_are_not_command_line_flags() -> None:
    with pytest.raises(SystemExit):
        load_config(["--admin-token", "visible-in-ps"], {})


def test_the_effective_configuration_redacts_tokens() -> None:
    config = load_config([], {"LICENSING_ADMIN_TOKEN": "top-secret"})
    shown = str(config.redacted())
    assert "top-secret" not in shown
    assert "<1 redacted>" in shown


@pytest.mark.parametrize(
    ("argv", "environ", "toml", "pinned"),
    [
        (["--deployment-date", "2027-01-01"], {}, "", "2027-01-01T00:00:00+00:00"),
        (["--deployment-date", "2027-01-01T10:00:00Z"], {}, "", "2027-01-01T10:00:00+00:00"),
        (
            ["--deployment-date", "2027-01-01T10:00:00.5"],
            {},
            "",
            "2027-01-01T10:00:00.500000+00:00",
        ),
        (
            [],
            {"LICENSING_DEPLOYMENT_DATE": "2027-01-01T10:00:00+01:00"},
            "",
            "2027-01-01T09:00:00+00:00",
        ),
        ([], {}, 'deployment_date = "2027-01-01T10:00:00Z"', "2027-01-01T10:00:00+00:00"),
        ([], {}, "deployment_date = 2027-01-01T10:00:00-05:00", "2027-01-01T15:00:00+00:00"),
        ([], {}, "deployment_date = 2027-01-01T10:00:00", "2027-01-01T10:00:00+00:00"),
        ([], {}, "deployment_date = 2027-01-01", "2027-01-01T00:00:00+00:00"),
    ],
    ids=[
        "flag-date",
        "flag-utc",
        "flag-fraction",
        "env-offset",
        "toml-string",
        "toml-offset",
        "toml-local",
        "toml-date",
    ],
)
def test_the_deployment_date_is_an_iso_8601_date_or_date_time_in_utc_unless_it_says(
    tmp_path: Path, argv: list[str], environ: dict[str, str], toml: str, pinned: str
) -> None:
    config_file = write(tmp_path / "server.toml", toml + "\n")
    config = load_config(["--config", str(config_file), *argv], environ)
    assert config.deployment_date == datetime.fromisoformat(pinned).timestamp()


def test_the_effective_configuration_shows_the_deployment_date_as_a_date() -> None:
    config = load_config(["--deployment-date", "2027-01-01T10:00:00+01:00"], {})
    assert config.redacted()["deployment_date"] == "2027-01-01T09:00:00Z"


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--listen", "nonsense"], {}, "HOST:PORT"),
        (["--timezone", "Mars/Olympus"], {}, "unknown time zone"),
        ([], {"LICENSING_INSTANCE_TTL": "-3"}, "LICENSING_INSTANCE_TTL"),
        (["--trusted-key", "no-equals-sign"], {}, "KID=PATH"),
        (["--tls-cert", "cert.pem"], {}, "go together"),
        (["--evaluation-interval", "60"], {}, "at most 30"),
        (["--log-format", "xml"], {}, "text or json"),
        (["--deployment-date", "next tuesday"], {}, "--deployment-date: not an ISO 8601 date"),
        ([], {"LICENSING_DEPLOYMENT_DATE": "2027-13-01"}, "LICENSING_DEPLOYMENT_DATE"),
    ],
)
def test_a_bad_value_is_a_clear_error(
    argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(argv, environ)


def test_an_unknown_config_file_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lisen"):
        load_config(["--config", str(write(tmp_path / "c.toml", 'lisen = "x"\n'))], {})


def test_every_option_has_a_flag_an_environment_variable_and_a_file_key(tmp_path: Path) -> None:
    for option in OPTIONS:
        assert env_name(option.name) == "LICENSING_" + option.name.upper()
        if not option.secret:
            assert flag_name(option.name).startswith("--")
    assert env_name("admin_token") == "LICENSING_ADMIN_TOKEN"
    assert env_name("control_plane_token") == "LICENSING_CONTROL_PLANE_TOKEN"
