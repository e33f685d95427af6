"""license-vendor: the vendor's tools. Make a signing key pair; issue a signed license.

    license-vendor keygen --kid vendor-2027 --out keys/
    license-vendor issue --key keys/vendor-2027.private.pem --kid vendor-2027 \\
        --serial LIC-0001 --customer "Example Corp" --effective 2027-01-01 \\
        --expires 2028-01-01 --max-dp-cores 64 --feature api7-gateway \\
        --deployment-id 3f0c... > license.jws
    license-vendor issue --key ... --kid ... --from license.toml   # or .json
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from licensing_server.domain.license import (
    LicenseRejected,
    issue_license,
    load_private_key,
    private_key_pem,
    public_key_pem,
)


def parse_time(text: str) -> float:
    """ISO 8601: a date (midnight UTC) or a date-time (UTC unless it says otherwise)."""
    text = str(text).strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC).timestamp()
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date or date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def keygen(kid: str, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    private_path = out / f"{kid}.private.pem"
    public_path = out / f"{kid}.public.pem"
    if private_path.exists():
        raise FileExistsError(f"{private_path} exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    private_path.touch(mode=0o600)
    private_path.write_bytes(private_key_pem(key))
    public_path.write_bytes(public_key_pem(key.public_key()))
    return private_path, public_path


DESCRIPTION_KEYS = {
    "serial": "serial_number",
    "serial_number": "serial_number",
    "customer": "customer",
    "effective": "effective",
    "expires": "expires",
    "max_dp_cores": "max_dp_cores",
    "features": "features",
    "feature": "features",
    "deployment_id": "deployment_id",
    "trial": "free_trial",
    "free_trial": "free_trial",
}


def load_description(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object / table")
    unknown = sorted(set(data) - set(DESCRIPTION_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown keys {', '.join(unknown)}")
    return {DESCRIPTION_KEYS[k]: v for k, v in data.items()}


def _issue(args: argparse.Namespace) -> str:
    claims: dict[str, Any] = load_description(Path(args.from_file)) if args.from_file else {}
    flags = {
        "serial_number": args.serial,
        "customer": args.customer,
        "effective": args.effective,
        "expires": args.expires,
        "max_dp_cores": args.max_dp_cores,
        "features": args.feature,
        "deployment_id": args.deployment_id,
        "free_trial": True if args.trial else None,
    }
    claims.update({k: v for k, v in flags.items() if v is not None})
    missing = [
        k
        for k in (
            "serial_number",
            "customer",
            "effective",
            "expires",
            "max_dp_cores",
            "deployment_id",
        )
        if k not in claims
    ]
    if missing:
        raise ValueError("missing: " + ", ".join(m.replace("_", "-") for m in missing))
    key = load_private_key(Path(args.key).read_bytes())
    return issue_license(
        key,
        args.kid,
        serial_number=str(claims["serial_number"]),
        customer=str(claims["customer"]),
        effective_at=parse_time(claims["effective"]),
        expires_at=parse_time(claims["expires"]),
        max_dp_cores=int(claims["max_dp_cores"]),
        features=[str(f) for f in claims.get("features", [])],
        deployment_id=str(claims["deployment_id"]),
        free_trial=bool(claims.get("free_trial", False)),
        issued_at=datetime.now(UTC).timestamp(),
    )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="license-vendor", description="Make signing keys and issue signed licenses."
    )
    commands = root.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("keygen", help="make an Ed25519 signing key pair")
    gen.add_argument(
        "--kid", required=True, help="key id; the server trusts the public key under it"
    )
    gen.add_argument(
        "--out", required=True, help="directory for KID.private.pem and KID.public.pem"
    )
    issue = commands.add_parser("issue", help="issue a signed license (printed to stdout)")
    issue.add_argument("--key", required=True, help="the private key PEM")
    issue.add_argument("--kid", required=True, help="the key id the server trusts it under")
    issue.add_argument(
        "--from", dest="from_file", help="a JSON or TOML description; flags override it"
    )
    issue.add_argument("--serial", help="serial number")
    issue.add_argument("--customer", help="customer organisation")
    issue.add_argument(
        "--effective", help="effective date, ISO 8601 (2027-01-31 or 2027-01-31T12:00:00Z)"
    )
    issue.add_argument("--expires", help="expiration date, ISO 8601")
    issue.add_argument("--max-dp-cores", type=int, help="maximum total data-plane cores")
    issue.add_argument("--feature", action="append", help="a licensed feature (repeatable)")
    issue.add_argument("--deployment-id", help="the deployment the license is for")
    issue.add_argument("--trial", action="store_true", help="a free-trial license")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "keygen":
            private_path, public_path = keygen(args.kid, Path(args.out))
            print(f"private key: {private_path}  (keep it secret: it mints licenses)")
            print(f"public key:  {public_path}  (trust it: --trusted-key {args.kid}={public_path})")
            return 0
        print(_issue(args))
        return 0
    except LicenseRejected as rejection:
        print(
            f"license-vendor: refusing to issue: {rejection.reason.value}: {rejection.message}",
            file=sys.stderr,
        )
    except (OSError, ValueError, tomllib.TOMLDecodeError) as error:
        print(f"license-vendor: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
