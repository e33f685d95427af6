"""Pages of a long list (Google AIP-158): a page size and an opaque token for the next page.

A token names the list it belongs to and where the next page starts. It is
opaque to callers but not secret: a forged token can only ask for a page of
the same list, which the caller may read anyway. It is checked on the way
back, so a token from another list is refused, not misread.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from licensing_server.domain.refusal import Refused

DEFAULT_PAGE_SIZE = 1_000
MAX_PAGE_SIZE = 10_000
# a token is a few dozen characters; anything far longer is not one of ours
MAX_TOKEN_CHARS = 512


class InvalidPage(Refused):
    def __init__(self, message: str) -> None:
        super().__init__("INVALID_ARGUMENT", message)


@dataclass(frozen=True)
class Page:
    """Which items of a list to answer with: `size` of them from `offset`."""

    listing: str
    offset: int
    size: int

    def next_token(self, total: int) -> str:
        """The token for the page after this one; empty when this one is the last."""
        following = self.offset + self.size
        if following >= total:
            return ""
        text = json.dumps({"list": self.listing, "offset": following}, separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def requested_page(listing: str, page_size: int, page_token: str) -> Page:
    """The page a request asks for; raises InvalidPage for a bad size or a foreign token."""
    if page_size < 0:
        raise InvalidPage(f"page_size must be 0 (meaning {DEFAULT_PAGE_SIZE}) or more")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if not page_token:
        return Page(listing, 0, size)
    if len(page_token) > MAX_TOKEN_CHARS:
        raise InvalidPage("page_token is not a token this service gave out")
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        fields = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        offset = fields["offset"]
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ValueError("bad offset")
        if fields["list"] != listing:
            raise InvalidPage(
                "page_token belongs to another request: pass the same day as the request that "
                "returned it"
            )
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeError):
        raise InvalidPage("page_token is not a token this service gave out") from None
    return Page(listing, offset, size)
