"""The one shape of bad input a rule refuses: a stable reason code and a sentence for a person."""

from __future__ import annotations

# how a message echoes a refused value; the decision table's messages quote the same way
from licensing.decision import quote as quote


class Refused(Exception):
    """Raised by a rule for input it will not accept; nothing has changed.

    `reason` is an ErrorReason name without its prefix (e.g. "MALFORMED",
    "INVALID_CORES"), the code callers match on.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
