"""LicenseService: the license-enforcement policy decision service."""

from datetime import UTC, datetime

# The day this version is released: move it forward at each release. A first start whose
# clock reads earlier is refused, since it would fix an impossible deployment date.
RELEASED_AT = datetime(2026, 11, 27, tzinfo=UTC).timestamp()
