"""The one shape of bad input a rule refuses: a stable reason code and a sentence for a person."""

from __future__ import annotations


class Refused(Exception):
    """Raised by a rule for input it will not accept; nothing has changed.

    `reason` is an ErrorReason name without its prefix (e.g. "MALFORMED",
    "INVALID_CORES"), the code callers match on.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def quote(value: object, limit: int = 40) -> str:
    """`value` as a message or log line may echo it: escaped, and cut to `limit` characters.

    A cut value says how long it was, so a person still learns what was sent.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value)} characters)"
    try:
        text = repr(value)
    except RecursionError:  # a JSON value nested nearly as deep as the parser allows
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
