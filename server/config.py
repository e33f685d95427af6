"""Configuration from flags, environment variables and a TOML file, in that order of precedence.

Every option has all three: the flag `--trusted-key`, the environment variable
`LICENSING_TRUSTED_KEY` and the config-file key `trusted_key`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from licensing_server.domain.license import iso_time

ENV_PREFIX = "LICENSING_"


class ConfigError(Exception):
    pass


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _list(value: Any) -> list[str]:
    """A list from a TOML array, repeated flags, or a comma-separated string."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, Mapping):
        return [f"{k}={v}" for k, v in value.items()]
    return [str(item).strip() for item in value if str(item).strip()]


def _positive(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        converted = kind(value)
        if converted <= 0:
            raise ValueError(f"must be positive, got {value!r}")
        return converted

    return convert


def _share(value: Any) -> float:
    share = float(value)
    if not 0 < share <= 1:
        raise ValueError(f"must be more than 0 and at most 1, got {value!r}")
    return share


def _non_negative(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        converted = kind(value)
        if converted < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        return converted

    return convert


def _timezone(value: Any) -> str:
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return str(value)


def _optional_str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


DATABASE_SCHEMES = ("postgresql", "postgres")


def _database_url(value: Any) -> str | None:
    if value in (None, ""):
        return None
    url = str(value).strip()
    if urllib.parse.urlsplit(url).scheme not in DATABASE_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL (postgresql://...): {redact_database_url(url)!r}")
    return url


def redact_database_url(url: str) -> str:
    """A database URL fit for a log line: any password replaced."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        credentials, _, host = netloc.rpartition("@")
        user, has_password, _ = credentials.partition(":")
        netloc = f"{user}:***@{host}" if has_password else netloc
    query = urllib.parse.urlencode(
        [
            (key, "***" if key == "password" else value)
            for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ]
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _optional_instant(value: Any) -> float | None:
    """An ISO 8601 date or date-time (or a TOML one) in seconds; UTC unless it says otherwise."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError(f"not an ISO 8601 date or date-time: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True)
class Option:
    name: str
    convert: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str | None = None
    repeatable: bool = False
    flag: bool = False
    secret: bool = False
    # how the effective configuration shows a set value, when not as it is
    shown: Callable[[Any], Any] | None = None


OPTIONS: list[Option] = [
    Option("listen", str, "127.0.0.1:7443", "address to serve gRPC on, HOST:PORT", "HOST:PORT"),
    Option(
        "http_listen",
        _optional_str,
        "127.0.0.1:7444",
        "address to serve the Admin API (HTTPS/JSON: PUT and GET /api/license) on, HOST:PORT; "
        "empty turns it off",
        "HOST:PORT",
    ),
    Option(
        "http_body_timeout",
        _positive(float),
        10.0,
        "seconds an HTTP client has to send its request body; then it is answered 408 and its "
        "connection closed",
        "SECONDS",
    ),
    Option("data_dir", str, "data", "directory that holds the SQLite database", "DIR"),
    Option(
        "database_url",
        _database_url,
        None,
        "use this PostgreSQL database, shared by every replica, instead of SQLite in the data "
        "directory: postgresql://USER@HOST:PORT/DATABASE (the password from the environment, "
        "e.g. PGPASSWORD, or the URL in LICENSING_DATABASE_URL; never in a flag)",
        "URL",
        shown=redact_database_url,
    ),
    Option(
        "trusted_key",
        _list,
        [],
        "a trusted Ed25519 public key, KID=PATH to a PEM file (repeatable)",
        "KID=PATH",
        repeatable=True,
    ),
    Option(
        "deployment_id",
        _optional_str,
        None,
        "pin the deployment ID instead of making one (with --deployment-date)",
        "ID",
    ),
    Option(
        "deployment_date",
        _optional_instant,
        None,
        "pin the deployment date with the deployment ID: an ISO 8601 date or date-time, UTC "
        "unless it says otherwise",
        "DATE",
        shown=iso_time,
    ),
    Option("tls_cert", _optional_str, None, "TLS certificate chain (PEM)", "PATH"),
    Option("tls_key", _optional_str, None, "TLS private key (PEM)", "PATH"),
    Option(
        "allow_plaintext",
        _bool,
        False,
        "serve without TLS on a non-loopback address (loopback never needs this)",
        flag=True,
    ),
    Option(
        "dev",
        _bool,
        False,
        "development mode: make and trust a local development signing key (never in production)",
        flag=True,
    ),
    Option("timezone", _timezone, "UTC", "time zone whose midnights end the usage days", "ZONE"),
    Option(
        "instance_ttl",
        _positive(float),
        30.0,
        "seconds an instance keeps counting after its last report",
        "SECONDS",
    ),
    Option(
        "observed_day_share",
        _share,
        0.5,
        "a day within quota counts only if the service ran for this share of it (0 to 1)",
        "SHARE",
    ),
    Option(
        "expiry_warning_days",
        _positive(int),
        30,
        "warn this many days before the license ends",
        "DAYS",
    ),
    Option(
        "report_interval",
        _positive(float),
        10.0,
        "seconds gateways are told to wait between reports (jittered +-10%%)",
        "SECONDS",
    ),
    Option(
        "evaluation_interval",
        _positive(float),
        5.0,
        "seconds between evaluator wake-ups (at most 30)",
        "SECONDS",
    ),
    Option(
        "max_workers",
        _positive(int),
        32,
        "threads for blocking work (database commits and reads, license checks); calls are "
        "served on one event loop",
        "N",
    ),
    Option(
        "max_concurrent_rpcs",
        _positive(int),
        4096,
        "calls in progress at once over all connections; further calls wait until one ends",
        "N",
    ),
    Option(
        "max_concurrent_streams",
        _positive(int),
        100,
        "calls in progress at once on one connection (HTTP/2 streams); further ones are refused",
        "N",
    ),
    Option(
        "max_receive_message_bytes",
        _positive(int),
        4 * 1024 * 1024,
        "largest request message accepted",
        "BYTES",
    ),
    Option(
        "max_send_message_bytes", _positive(int), 4 * 1024 * 1024, "largest answer sent", "BYTES"
    ),
    Option(
        "keepalive_time",
        _positive(float),
        60.0,
        "seconds of silence on a connection before the server pings the client",
        "SECONDS",
    ),
    Option(
        "keepalive_timeout",
        _positive(float),
        20.0,
        "seconds the server waits for its ping's answer before closing the connection",
        "SECONDS",
    ),
    Option(
        "max_connection_idle",
        _positive(float),
        300.0,
        "seconds a connection with no call in progress stays open; then the server asks the "
        "client to reconnect when it next needs to",
        "SECONDS",
    ),
    Option(
        "min_client_ping_interval",
        _positive(float),
        5.0,
        "shortest interval between a client's keepalive pings that the server accepts, with or "
        "without calls in progress",
        "SECONDS",
    ),
    Option(
        "max_ping_strikes",
        _non_negative(int),
        2,
        "pings closer together than --min-client-ping-interval tolerated before the connection "
        "is closed (0: any number)",
        "N",
    ),
    Option("license_file", _optional_str, None, "license file to load and poll (GitOps)", "PATH"),
    Option(
        "license_poll_interval",
        _positive(float),
        5.0,
        "seconds between license file polls",
        "SECONDS",
    ),
    Option(
        "metrics_listen",
        _optional_str,
        None,
        "serve Prometheus metrics over HTTP on HOST:PORT (off when unset)",
        "HOST:PORT",
    ),
    Option("log_format", str, "text", "log format: text or json", "FORMAT"),
    Option("log_level", str, "INFO", "log level: DEBUG, INFO, WARNING, ERROR", "LEVEL"),
    Option("admin_token", _list, [], "admin bearer tokens, comma-separated", "TOKENS", secret=True),
    Option(
        "gateway_token", _list, [], "gateway bearer tokens, comma-separated", "TOKENS", secret=True
    ),
    Option(
        "control_plane_token",
        _list,
        [],
        "control-plane bearer tokens, comma-separated",
        "TOKENS",
        secret=True,
    ),
]


@dataclass(frozen=True)
class Config:
    listen: str
    http_listen: str | None
    http_body_timeout: float
    data_dir: str
    database_url: str | None
    trusted_key: list[str]
    deployment_id: str | None
    deployment_date: float | None
    tls_cert: str | None
    tls_key: str | None
    allow_plaintext: bool
    dev: bool
    timezone: str
    instance_ttl: float
    observed_day_share: float
    expiry_warning_days: int
    report_interval: float
    evaluation_interval: float
    max_workers: int
    max_concurrent_rpcs: int
    max_concurrent_streams: int
    max_receive_message_bytes: int
    max_send_message_bytes: int
    keepalive_time: float
    keepalive_timeout: float
    max_connection_idle: float
    min_client_ping_interval: float
    max_ping_strikes: int
    license_file: str | None
    license_poll_interval: float
    metrics_listen: str | None
    log_format: str
    log_level: str
    admin_token: list[str]
    gateway_token: list[str]
    control_plane_token: list[str]

    def trusted_key_paths(self) -> dict[str, Path]:
        keys: dict[str, Path] = {}
        for item in self.trusted_key:
            kid, sep, path = item.partition("=")
            if not sep or not kid.strip() or not path.strip():
                raise ConfigError(f"trusted key {item!r} is not KID=PATH")
            keys[kid.strip()] = Path(path.strip())
        return keys

    @property
    def listen_host(self) -> str:
        return split_host_port(self.listen)[0]

    def redacted(self) -> dict[str, Any]:
        """The effective configuration, fit for a log line: tokens show only how many there are."""
        shown: dict[str, Any] = {}
        for option in OPTIONS:
            value = getattr(self, option.name)
            if option.secret:
                value = f"<{len(value)} redacted>"
            elif option.shown is not None and value is not None:
                value = option.shown(value)
            shown[option.name] = value
        return shown


def split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def join_host_port(host: str, port: int) -> str:
    """HOST:PORT, with an IPv6 host in brackets: the inverse of `split_host_port`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def env_name(option_name: str) -> str:
    return ENV_PREFIX + option_name.upper()


def flag_name(option_name: str) -> str:
    return "--" + option_name.replace("_", "-")


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="license-server",
        description="LicenseService: verifies signed licenses, meters data-plane cores and "
        "decides whether configuration writes may go ahead.",
        epilog=f"Every option can also be set by the environment variable {ENV_PREFIX}<NAME> "
        "(e.g. LICENSING_DATA_DIR) or by the key <name> in the --config TOML file; flags win "
        "over the environment, which wins over the file.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML configuration file (env LICENSING_CONFIG)"
    )
    for option in OPTIONS:
        if option.secret:
            continue  # tokens come from the environment or the file, never the command line
        kwargs: dict[str, Any] = {"dest": option.name, "default": None, "help": option.help}
        if option.flag:
            kwargs["action"] = "store_const"
            kwargs["const"] = True
        elif option.repeatable:
            kwargs["action"] = "append"
            kwargs["metavar"] = option.metavar
        else:
            kwargs["metavar"] = option.metavar
        parser.add_argument(flag_name(option.name), **kwargs)
    return parser


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    environ = os.environ if environ is None else environ
    args = argument_parser().parse_args(argv)
    config_path = args.config or environ.get(env_name("config"))
    file_values: dict[str, Any] = {}
    if config_path:
        try:
            with open(config_path, "rb") as handle:
                file_values = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"cannot read config file {config_path}: {error}") from None
        known = {o.name for o in OPTIONS}
        unknown = sorted(set(file_values) - known - {"trusted_keys"})
        if unknown:
            raise ConfigError(f"unknown keys in {config_path}: {', '.join(unknown)}")
        if "trusted_keys" in file_values:
            file_values.setdefault("trusted_key", file_values.pop("trusted_keys"))
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw: Any = getattr(args, option.name, None)
        source = flag_name(option.name)
        if raw is None and env_name(option.name) in environ:
            raw, source = environ[env_name(option.name)], env_name(option.name)
        if raw is None and option.name in file_values:
            raw, source = file_values[option.name], f"{config_path}: {option.name}"
        if raw is None:
            values[option.name] = option.default
            continue
        try:
            values[option.name] = option.convert(raw)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{source}: {error}") from None
    config = Config(**values)
    _check(config)
    return config


def _check(config: Config) -> None:
    split_host_port(config.listen)
    if config.http_listen:
        split_host_port(config.http_listen)
    if config.metrics_listen:
        split_host_port(config.metrics_listen)
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if config.log_format not in {"text", "json"}:
        raise ConfigError(f"--log-format must be text or json, not {config.log_format!r}")
    if config.evaluation_interval > 30:
        raise ConfigError("--evaluation-interval must be at most 30 seconds")
    config.trusted_key_paths()


CONFIG_FIELDS = {f.name for f in fields(Config)}
