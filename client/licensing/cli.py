"""licensectl: the operator's command line for LicenseService.

    licensectl status                 the license in force, runtime state, usage, warnings
    licensectl validate FILE          the verdict, and what applying the license would do
    licensectl upload FILE            verify and apply it; FILE may be "-" for stdin
    licensectl usage [--days N | --day YYYY-MM-DD] [--instances]
                                      each day's peak against the quota (and the instances
                                      that made it up: all of them with --day, the first
                                      1,000 a day otherwise), and the recent state changes
    licensectl watch [--heartbeats]   each change of the decision table as it happens (a
                                      license applied or taking over, a state change, an
                                      instant passing), until Ctrl-C

Options (before or after the command):
    --server HOST:PORT   default $LICENSING_SERVER, else 127.0.0.1:7443
    --token TOKEN        default $LICENSING_TOKEN (prefer the variable: arguments show in `ps`)
    --tls, --ca-cert PATH, --timeout SECONDS
    --json               the whole response as JSON (protobuf JSON mapping, proto field
                         names, fields with default values included); nothing on stdout
                         when the call fails. `watch` prints one JSON object a line

Output is for a person by default: times in ISO 8601 UTC, runtime states by
their names (NORMAL, DP_CORE_EXCEEDED, RESTRICTED). Errors go to stderr as one
line, `error: <REASON>: <message>`, where REASON is the stable reason code (for
example BAD_SIGNATURE or ROLE_NOT_ALLOWED), or the gRPC status code when the
server sent none (for example UNAVAILABLE). With --json an error is one JSON
object on stderr instead:

    {"error": "BAD_SIGNATURE: ...", "code": "INVALID_ARGUMENT",
     "reason": "BAD_SIGNATURE", "message": "..."}

`error` is the line a person would read, `code` the gRPC status code and
`reason` the stable reason code (both null when nothing was sent, as for a bad
argument), `message` the server's (or the command line's) own words.

A reader that stops early (`licensectl status | head -1`) is not an error: the
exit code still says how the call went.

Exit codes:
    0  success; for `watch`, stopped by Ctrl-C or by its reader closing the pipe
    1  the license was rejected (upload), or the validate verdict is invalid
       (the verdict is still printed)
    2  usage error: bad arguments, a FILE or CA certificate that cannot be read,
       or a request the server refused as invalid
    3  the call failed: cannot connect, timed out, TLS failure, missing or
       invalid token, a role that may not call the command, or a server error;
       for `watch`, also the server ending the stream (it shut down)
"""

from __future__ import annotations

import os

# gRPC's C core writes lines of its own to stderr (a failed TLS handshake, for one), which would
# break the one-line errors: the failure reaches the CLI as a status anyway. Set before grpc is
# imported; an operator's own GRPC_VERBOSITY still wins.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from licensing.client import DEFAULT_TARGET, DEFAULT_TIMEOUT, LicensingClient, LicensingError
from licensing.decision import Operation
from licensing.snapshot import InvalidSnapshot, enforcement_from_proto, instant
from licensing.v1 import licensing_pb2 as pb

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_CALL_FAILED = 3

SERVER_ENV = "LICENSING_SERVER"
TOKEN_ENV = "LICENSING_TOKEN"
# the server's GetUsageHistory bounds; checked here so a typo is a usage error, not a round trip
MAX_HISTORY_DAYS = 3660
DEFAULT_HISTORY_DAYS = 30
BAR_WIDTH = 20
LABEL_WIDTH = 20

LICENSE_REJECTION_REASONS = frozenset(
    name.removeprefix("LICENSE_REJECTION_REASON_")
    for name, value in pb.LicenseRejectionReason.items()
    if value
)


class UsageError(Exception):
    """Something the operator can fix on the command line; exits 2."""


class ArgumentError(UsageError):
    """A bad argument, as argparse words it (after the usage line)."""

    def __init__(self, message: str, prog: str, usage: str) -> None:
        super().__init__(message)
        self.prog = prog
        self.usage = usage


class CommandLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument raises instead of printing, so --json can shape the error."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(message, self.prog, self.format_usage())


# --- formatting helpers ---------------------------------------------------------------


def iso_time(ts: Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _enum_name(name_of: Callable[[Any], str], value: int, prefix: str) -> str:
    try:
        return name_of(value).removeprefix(prefix)
    except ValueError:
        # a newer server may send a value this client does not know yet
        return str(value)


def state_name(state: int) -> str:
    return _enum_name(pb.RuntimeState.Name, state, "RUNTIME_STATE_")


def rejection_name(reason: int) -> str:
    return _enum_name(pb.LicenseRejectionReason.Name, reason, "LICENSE_REJECTION_REASON_")


def source_name(source: int) -> str:
    return _enum_name(pb.LicenseSource.Name, source, "LICENSE_SOURCE_").lower()


def error_reason_name(reason: int) -> str:
    return _enum_name(pb.ErrorReason.Name, reason, "ERROR_REASON_")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def days_phrase(days: int) -> str:
    if days > 0:
        return f"{plural(days, 'day')} left"
    if days == 0:
        return "its last day"
    return f"ended {plural(-days, 'day')} ago"


def field(label: str, value: object, indent: int = 0) -> str:
    return f"{' ' * indent}{label:<{LABEL_WIDTH - indent}}{value}"


def features_text(features: Iterable[str]) -> str:
    return ", ".join(features) or "none"


def usage_bar(peak: int, quota: int) -> str:
    """`█████████░░░ 12/16`; a full bar with a marker when the peak is over the quota."""
    if quota <= 0:
        return f"{'·' * BAR_WIDTH} {peak}/- (no license)"
    filled = round(peak * BAR_WIDTH / quota)
    # a non-zero peak always shows, and only a peak at the quota fills the bar
    if peak > 0:
        filled = max(filled, 1)
    filled = min(filled, BAR_WIDTH - 1 if peak < quota else BAR_WIDTH)
    bar = "█" * filled + "░" * (BAR_WIDTH - filled)
    text = f"{bar} {peak}/{quota}"
    if peak > quota:
        text += f" ▲ OVER QUOTA by {peak - quota}"
    return text


def license_lines(lic: pb.License, indent: int = 2) -> list[str]:
    lines = [
        field("Customer", lic.customer, indent),
        field("Effective", iso_time(lic.effective_time), indent),
        field("Expires", iso_time(lic.expiration_time), indent),
    ]
    ends = iso_time(lic.end_time)
    if ends != iso_time(lic.expiration_time):
        ends += "  (free trial: 90 days after the deployment date)"
    lines += [
        field("Ends", ends, indent),
        field("Max DP cores", lic.max_dp_cores, indent),
        field("Features", features_text(lic.features), indent),
        field("Free trial", "yes" if lic.free_trial else "no", indent),
        field("Deployment ID", lic.deployment_id, indent),
        field("Signing key", lic.key_id, indent),
    ]
    return lines


# --- commands -------------------------------------------------------------------------


def render_status(status: pb.GetStatusResponse) -> list[str]:
    lines = [
        field(
            "Deployment ID", f"{status.deployment_id}    <- send this to the vendor for a license"
        ),
        field("Deployed", iso_time(status.deployment_time)),
        "",
    ]
    if status.HasField("license"):
        lic = status.license
        verdict = "valid" if status.license_valid else "NOT VALID"
        lines.append(
            field(
                "License",
                f"{lic.serial_number}  ({verdict}, {days_phrase(status.days_until_expiration)})",
            )
        )
        lines += license_lines(lic)
        lines.append(field("Source", source_name(status.license_source), 2))
        lines.append(field("Applied", iso_time(status.license_applied_time), 2))
    else:
        lines.append(
            field("License", "none installed: creating and updating configuration is blocked")
        )
    if status.HasField("pending_license"):
        pending = status.pending_license
        lines.append("")
        lines.append(
            field(
                "Pending license",
                f"{pending.serial_number}  (takes over {iso_time(pending.effective_time)})",
            )
        )
        lines += license_lines(pending)
    lines.append("")
    lines.append(field("Runtime state", state_name(status.state)))
    if status.HasField("grace_end_time"):
        lines.append(field("Grace ends", iso_time(status.grace_end_time)))
    quota = f" of {status.license.max_dp_cores} licensed" if status.HasField("license") else ""
    lines.append(
        field(
            "Cores in use",
            f"{status.current_total_cores}{quota}, "
            f"{plural(status.live_instances, 'live instance')}",
        )
    )
    if status.HasField("last_evaluated_day"):
        day = status.last_evaluated_day
        limit = f" of {day.max_dp_cores} licensed" if day.max_dp_cores else " (no license)"
        lines.append(
            field(
                "Last evaluated",
                f"{day.day}: peak {day.peak_cores} cores{limit}, "
                f"{state_name(day.state_before)} -> {state_name(day.state_after)}",
            )
        )
    else:
        lines.append(
            field("Last evaluated", "no day yet (the first evaluation runs after midnight)")
        )
    if status.HasField("last_state_change"):
        change = status.last_state_change
        lines.append(
            field(
                "Last change",
                f"{iso_time(change.change_time)}: {state_name(change.state_before)}"
                f" -> {state_name(change.state_after)} ({change.cause})",
            )
        )
    lines.append("")
    if status.warnings:
        lines.append("Warnings")
        lines += [f"  ! {w.message}" for w in status.warnings]
    else:
        lines.append(field("Warnings", "none"))
    if status.HasField("clock"):
        clock = status.clock
        lines.append("")
        lines.append(
            field(
                "Clock",
                f"system {iso_time(clock.system_time)}, latest seen "
                f"{iso_time(clock.high_water_time)}",
            )
        )
        if clock.moved_back:
            lines.append(
                field(
                    "",
                    f"MOVED BACK {clock.last_backward_step.seconds} s at "
                    f"{iso_time(clock.last_backward_step_time)}; expiry and grace are judged "
                    "against the latest time seen",
                )
            )
    lines.append(
        field(
            "Development mode",
            "ON: this server trusts a local development signing key"
            if status.development_mode
            else "off",
        )
    )
    if status.HasField("license_file"):
        lines += license_file_lines(status.license_file)
    return lines


def license_file_lines(report: pb.LicenseFileStatus) -> list[str]:
    lines = ["", field("License file", report.path)]
    if report.HasField("last_read_time"):
        lines.append(field("Last read", iso_time(report.last_read_time), 2))
    if report.content_sha256:
        lines.append(field("Content SHA-256", report.content_sha256, 2))
    if report.HasField("last_applied_time"):
        lines.append(field("Last applied", iso_time(report.last_applied_time), 2))
    if report.last_error:
        reason = error_reason_name(report.last_error_reason) if report.last_error_reason else ""
        lines.append(
            field(
                "Last error", f"{reason}: {report.last_error}" if reason else report.last_error, 2
            )
        )
    return lines


def render_upload(outcome: pb.UploadResponse) -> list[str]:
    lic = outcome.license
    if outcome.unchanged:
        what = "pending" if outcome.pending else "in force"
        headline = f"License {lic.serial_number} is already {what}: nothing changed."
    elif outcome.pending:
        headline = (
            f"License {lic.serial_number} accepted as pending: it takes over "
            f"{iso_time(lic.effective_time)}; the license in force stays until then."
        )
    else:
        headline = f"License {lic.serial_number} applied."
    lines = [headline, "", field("License", lic.serial_number), *license_lines(lic), ""]
    lines.append(field("Runtime state", state_name(outcome.state)))
    if outcome.HasField("grace_end_time"):
        lines.append(field("Grace ends", iso_time(outcome.grace_end_time)))
    return lines


def render_validate(verdict: pb.ValidateResponse) -> list[str]:
    if not verdict.valid:
        lines = [
            field("Verdict", "INVALID"),
            field("Reason", rejection_name(verdict.reason)),
            field("Message", verdict.message),
        ]
        if verdict.HasField("license"):
            lines += [
                "",
                field("License", verdict.license.serial_number),
                *license_lines(verdict.license),
            ]
        return lines
    lic = verdict.license
    lines = [
        field("Verdict", "VALID"),
        field("Message", verdict.message),
        "",
        field("License", lic.serial_number),
        *license_lines(lic),
        "",
        "If applied",
    ]
    resulting = state_name(verdict.resulting_state)
    if verdict.HasField("resulting_grace_end_time"):
        resulting += f"  (grace ends {iso_time(verdict.resulting_grace_end_time)})"
    lines.append(field("Resulting state", resulting, 2))
    if verdict.last_evaluated_day:
        lines.append(
            field(
                "Judged against",
                f"{verdict.last_evaluated_day}'s peak of {verdict.last_evaluated_peak_cores} cores",
                2,
            )
        )
    else:
        lines.append(field("Judged against", "no evaluated day yet (peak 0)", 2))
    headroom = verdict.core_headroom
    lines.append(
        field(
            "Core headroom",
            f"{headroom} cores"
            if headroom >= 0
            else f"{headroom} cores (OVER QUOTA by {-headroom})",
            2,
        )
    )
    lines.append(field("Features gained", features_text(verdict.features_gained), 2))
    lines.append(field("Features lost", features_text(verdict.features_lost), 2))
    lines.append(field("Until expiry", days_phrase(verdict.days_until_expiration), 2))
    if verdict.pending:
        lines.append(
            field("Pending", f"yes: it would wait and take over {iso_time(lic.effective_time)}", 2)
        )
    else:
        lines.append(field("Pending", "no: it would take effect at once", 2))
    if verdict.already_active:
        lines.append(field("Already active", "yes: uploading it changes nothing", 2))
    return lines


def render_usage(
    history: pb.GetUsageHistoryResponse, with_instances: bool, only_day: str | None
) -> list[str]:
    quota_now = history.max_dp_cores
    lines = [
        f"Usage history, newest first (quota now: "
        f"{f'{quota_now} cores' if quota_now else 'no license'})",
        "",
    ]
    if history.days:
        lines.append(
            f"{'Day':<10}  {'Peak':>5}  {'Quota':>5}  {'State after':<16}  Peak against quota"
        )
        for day in history.days:
            quota = str(day.max_dp_cores) if day.max_dp_cores else "-"
            lines.append(
                f"{day.day:<10}  {day.peak_cores:>5}  {quota:>5}  "
                f"{state_name(day.state_after):<16}  {usage_bar(day.peak_cores, day.max_dp_cores)}"
            )
            if with_instances:
                lines += peak_instance_lines(day)
    elif only_day:
        lines.append(f"{only_day} has not been evaluated.")
    else:
        lines.append("No day has been evaluated yet: the first evaluation runs after midnight.")
    lines += ["", "State changes, newest first"]
    if history.state_changes:
        for change in history.state_changes:
            grace = (
                f"  (grace ends {iso_time(change.grace_end_time)})"
                if change.HasField("grace_end_time")
                else ""
            )
            lines.append(
                f"  {iso_time(change.change_time)}  {state_name(change.state_before)} -> "
                f"{state_name(change.state_after)}{grace}: {change.cause}"
            )
    else:
        lines.append("  none")
    return lines


def watch_event_name(event: int) -> str:
    return _enum_name(pb.WatchEnforcementEvent.Name, event, "WATCH_ENFORCEMENT_EVENT_")


def license_terms_text(terms: pb.LicenseTerms) -> str:
    return (
        f"license {terms.serial_number}, {plural(terms.max_dp_cores, 'core')}, features "
        f"{features_text(terms.features)}, ends {iso_time(terms.end_time)}"
    )


def render_watch(message: pb.WatchEnforcementResponse) -> list[str]:
    """One change of the decision table: what it is, and what creating a resource gets now."""
    snapshot = message.snapshot
    head = (
        f"{iso_time(message.send_time)}  {watch_event_name(message.event):<11}  v{snapshot.version}"
    )
    if message.event == pb.WATCH_ENFORCEMENT_EVENT_HEARTBEAT:
        return [head]
    terms = license_terms_text(snapshot.license) if snapshot.HasField("license") else "no license"
    try:
        rules = enforcement_from_proto(snapshot)
    except InvalidSnapshot as problem:
        return [f"{head}  {terms}; {state_name(snapshot.state)} (cannot decide: {problem})"]
    now = instant(message.send_time)
    decision = rules.decide("resource", Operation.CREATE, "", now)
    verdict = "allowed" if decision.allowed else "DENIED"
    lines = [
        f"{head}  {terms}; {state_name(snapshot.state)}: creates and updates {verdict} "
        f"({decision.reason.value})"
    ]
    lines += [f"    warning: {w.message}" for w in rules.warnings(now)]
    if snapshot.HasField("successor"):
        after = snapshot.successor
        lines.append(
            f"    pending: {license_terms_text(after.license)}; takes over "
            f"{iso_time(snapshot.takeover_time)}, then {state_name(after.state)}"
        )
    return lines


def peak_instance_lines(day: pb.DayUsage) -> list[str]:
    if not day.HasField("peak_time"):
        return ["    no usage reported"]
    instances = sorted(day.peak_instances, key=lambda i: (-i.cores, i.instance_id))
    if day.peak_instances_truncated:
        lines = [
            f"    peak at {iso_time(day.peak_time)}; the first {plural(len(instances), 'instance')}"
            f" of more (every one: licensectl usage --day {day.day} --instances):"
        ]
    else:
        lines = [
            f"    peak at {iso_time(day.peak_time)} from {plural(len(instances), 'instance')}:"
        ]
    lines += [f"      {i.instance_id}  {plural(i.cores, 'core')}" for i in instances]
    return lines


# --- command line ---------------------------------------------------------------------


def read_license(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return seconds


def history_days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {text!r}") from None
    if not 1 <= days <= MAX_HISTORY_DAYS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_HISTORY_DAYS}")
    return days


def calendar_day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def add_connection_options(parser: argparse.ArgumentParser, with_defaults: bool) -> None:
    """The global options; a subcommand's default to nothing, so they never undo the top level's."""

    def default(value: object) -> object:
        return value if with_defaults else argparse.SUPPRESS

    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=default(os.environ.get(SERVER_ENV) or DEFAULT_TARGET),
        help=f"LicenseService address (default ${SERVER_ENV}, else {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--token",
        default=default(os.environ.get(TOKEN_ENV)),
        help=f"bearer token (default ${TOKEN_ENV}; the variable keeps it out of `ps`)",
    )
    group.add_argument(
        "--tls", action="store_true", default=default(False), help="connect with TLS"
    )
    group.add_argument(
        "--ca-cert",
        metavar="PATH",
        default=default(None),
        help="PEM CA certificate to trust for the server (implies --tls; default: system roots)",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=positive_seconds,
        default=default(DEFAULT_TIMEOUT),
        help=f"give up on a call after this long (default {DEFAULT_TIMEOUT:g})",
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print the response as JSON"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(
        prog="licensectl",
        description="Manage and inspect the gateway license held by LicenseService.",
        epilog="Exit codes: 0 success; 1 license rejected or invalid; 2 usage error or "
        "unreadable file; 3 connection, auth or server error.",
    )
    add_connection_options(parser, with_defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_connection_options(sub, with_defaults=False)
        return sub

    upload = command("upload", "verify a license and apply it (admin token)")
    upload.add_argument("file", metavar="FILE", help='the license file, or "-" for stdin')
    validate = command(
        "validate", "check a license without applying it, and show what applying it would do"
    )
    validate.add_argument("file", metavar="FILE", help='the license file, or "-" for stdin')
    command("status", "show the license in force, runtime state, usage and warnings")
    usage = command("usage", "show each day's peak cores against the quota, and state changes")
    usage.add_argument(
        "--days",
        type=history_days,
        default=DEFAULT_HISTORY_DAYS,
        help=f"how many of the latest evaluated days (default {DEFAULT_HISTORY_DAYS})",
    )
    usage.add_argument(
        "--day",
        type=calendar_day,
        help="only this day (YYYY-MM-DD); --days is then ignored",
    )
    usage.add_argument(
        "--instances",
        action="store_true",
        help="also list the instances that made up each day's peak: every one of them with "
        "--day (fetched a page at a time), else at most 1,000 a day",
    )
    watch = command(
        "watch",
        "print each change of the decision table as it happens, until Ctrl-C (admin, "
        "control-plane or gateway token)",
    )
    watch.add_argument(
        "--heartbeats", action="store_true", help="print the stream's heartbeats too"
    )
    return parser


def connect(args: argparse.Namespace) -> LicensingClient:
    # a token from a Secret or file often ends in a newline, which gRPC metadata cannot carry
    token = (args.token or "").strip() or None
    if token is not None and not (token.isascii() and token.isprintable()):
        raise UsageError("the token must be printable ASCII (check --token or LICENSING_TOKEN)")
    root_certificates = None
    if args.ca_cert:
        try:
            root_certificates = Path(args.ca_cert).read_bytes()
        except OSError as error:
            raise UsageError(f"cannot read CA certificate {args.ca_cert}: {error}") from None
        # gRPC would only log a C-core error and then fail to connect
        if b"-----BEGIN CERTIFICATE-----" not in root_certificates:
            raise UsageError(f"{args.ca_cert} holds no PEM certificate")
    return LicensingClient(
        args.server,
        token=token,
        tls=bool(args.tls or args.ca_cert),
        root_certificates=root_certificates,
        timeout=args.timeout,
    )


def run(
    args: argparse.Namespace, client: LicensingClient, license_text: str
) -> tuple[Message, list[str], int]:
    """Call the server; returns the response, its human rendering and the exit code."""
    if args.command == "status":
        status = client.status()
        return status, render_status(status), EXIT_OK
    if args.command == "usage":
        if args.day and args.instances:
            history = usage_of_one_day_with_every_peak_instance(client, args.day)
        else:
            history = client.usage_history(
                args.days, include_peak_instances=args.instances, day=args.day or ""
            )
        return history, render_usage(history, args.instances, args.day), EXIT_OK
    if args.command == "validate":
        verdict = client.validate(license_text)
        return verdict, render_validate(verdict), EXIT_OK if verdict.valid else EXIT_REJECTED
    outcome = client.upload(license_text)
    return outcome, render_upload(outcome), EXIT_OK


def usage_of_one_day_with_every_peak_instance(
    client: LicensingClient, day: str
) -> pb.GetUsageHistoryResponse:
    """One day's usage with all its peak instances, however many: they come a page at a time."""
    history = client.usage_history(day=day)
    for evaluated in history.days:
        evaluated.peak_instances.extend(client.peak_instances(evaluated.day))
    return history


def one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Failure:
    """A command that did not do what was asked."""

    exit_code: int
    message: str
    # the gRPC status code and the stable reason code; None when nothing was sent
    code: str | None = None
    reason: str | None = None
    hint: str = ""

    def summary(self) -> str:
        label = self.reason or self.code
        text = f"{label}: {self.message}" if label else self.message
        return f"{text} ({self.hint})" if self.hint else text

    def as_json(self) -> str:
        return json.dumps(
            {
                "error": self.summary(),
                "code": self.code,
                "reason": self.reason,
                "message": self.message,
            }
        )


def call_failure(error: LicensingError, args: argparse.Namespace) -> Failure:
    """What a failed call means for the operator, and its exit code."""
    code = error.code.name
    reason = error.reason or None
    message = one_line(error.message)
    if error.code == grpc.StatusCode.INVALID_ARGUMENT:
        rejected = error.reason in LICENSE_REJECTION_REASONS
        return Failure(EXIT_REJECTED if rejected else EXIT_USAGE, message, code, reason)
    hint = ""
    if error.reason == "MISSING_TOKEN":
        hint = f"pass --token or set {TOKEN_ENV}"
    elif error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        hint = f"server {args.server}; set --server or {SERVER_ENV}"
    return Failure(EXIT_CALL_FAILED, message, code, reason, hint)


def watch(args: argparse.Namespace, client: LicensingClient) -> int:
    """Print the stream as it comes, a line (or a few) per change, flushed at once."""
    stream = client.watch_enforcement()
    try:
        for message in stream:
            if message.event == pb.WATCH_ENFORCEMENT_EVENT_HEARTBEAT and not args.heartbeats:
                continue
            if args.json:
                print(
                    json_format.MessageToJson(
                        message,
                        preserving_proto_field_name=True,
                        always_print_fields_with_no_presence=True,
                        indent=None,
                    ),
                    flush=True,
                )
            else:
                print("\n".join(render_watch(message)), flush=True)
    except KeyboardInterrupt:
        stream.cancel()
        return EXIT_OK
    except BrokenPipeError:
        stream.cancel()
        # whoever read the output is gone: say nothing more, not even at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    print("licensectl: the server ended the stream (it is shutting down)", file=sys.stderr)
    return EXIT_CALL_FAILED


@dataclass(frozen=True)
class Outcome:
    """What to print where, and the exit code."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""


def execute(arguments: Sequence[str]) -> Outcome:
    as_json = "--json" in arguments
    try:
        args = build_parser().parse_args(arguments)
        # an unreadable file is reported before anything is sent
        license_text = read_license(args.file) if "file" in args else ""
        with connect(args) as client:
            if args.command == "watch":
                # the stream prints as it comes; nothing is left to print at the end
                return Outcome(watch(args, client))
            response, lines, code = run(args, client, license_text)
    except ArgumentError as error:
        if as_json:
            return Outcome(EXIT_USAGE, stderr=Failure(EXIT_USAGE, str(error)).as_json() + "\n")
        return Outcome(EXIT_USAGE, stderr=f"{error.usage}{error.prog}: error: {error}\n")
    except UsageError as error:
        failed = Failure(EXIT_USAGE, str(error))
        line = failed.as_json() if as_json else f"licensectl: {failed.summary()}"
        return Outcome(EXIT_USAGE, stderr=line + "\n")
    except LicensingError as error:
        failed = call_failure(error, args)
        line = failed.as_json() if as_json else f"error: {failed.summary()}"
        return Outcome(failed.exit_code, stderr=line + "\n")
    if args.json:
        text = json_format.MessageToJson(
            response,
            preserving_proto_field_name=True,
            # scripts can read `valid: false` or `pending: false` instead of a missing key
            always_print_fields_with_no_presence=True,
        )
    else:
        text = "\n".join(lines)
    return Outcome(code, stdout=text + "\n")


def reader_went_away() -> None:
    """The signal module's advice for SIGPIPE: Python flushes the standard streams again at
    exit, so point them at /dev/null rather than fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.dup2(devnull, sys.stderr.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        outcome = execute(arguments)
    except BrokenPipeError:  # `licensectl --help | head -1`
        reader_went_away()
        return EXIT_OK
    try:
        for stream, text in ((sys.stdout, outcome.stdout), (sys.stderr, outcome.stderr)):
            if text:
                stream.write(text)
                stream.flush()
    except BrokenPipeError:
        # `licensectl status | head -1`: the call went as the exit code says, whoever stopped
        # reading its output
        reader_went_away()
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
