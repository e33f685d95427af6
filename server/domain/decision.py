"""The write decision, as the server uses it.

The decision table itself lives in the client package (`licensing.decision`),
so the service and a client deciding locally from a streamed snapshot run
the same code. What is only the server's is here: refusing a write check it
cannot answer, in the one shape a rule refuses input.
"""

from __future__ import annotations

from licensing.decision import (
    LICENSE_RESOURCE,
    MAX_FEATURE_CHARS,
    MAX_RESOURCE_TYPE_CHARS,
    Decision,
    DecisionReason,
    Enforcement,
    LicenseTerms,
    Operation,
    StatusWarning,
    WarningKind,
    days_left,
    request_problem,
)

from licensing_server.domain.refusal import Refused

__all__ = [
    "LICENSE_RESOURCE",
    "MAX_FEATURE_CHARS",
    "MAX_RESOURCE_TYPE_CHARS",
    "Decision",
    "DecisionReason",
    "Enforcement",
    "InvalidWriteCheck",
    "LicenseTerms",
    "Operation",
    "StatusWarning",
    "WarningKind",
    "check_request",
    "days_left",
]


class InvalidWriteCheck(Refused):
    pass


def check_request(resource_type: str, feature: str) -> None:
    """A write check names a resource type and at most a short feature; nothing unbounded."""
    problem = request_problem(resource_type, feature)
    if problem is not None:
        raise InvalidWriteCheck(*problem)
