"""The license console: one page and its assets, served by the HTTP edge.

The page talks to the service only through the Admin API's JSON routes, with
the bearer token the operator signs in with (kept in the tab's session
storage). Everything it needs ships in this package (`static/`), so it works
with no internet access. Its own answers carry a strict Content-Security-Policy:
scripts and styles from this origin only, nothing inline, no framing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

# what the page may load and do: its own files and its own API, nothing else
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # revalidated on every load (cheap: an ETag answers 304), so an upgrade shows at once
    "Cache-Control": "no-cache",
}
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
PAGE = "index.html"
# where the assets are served; the page is also served at "/"
PREFIX = "/console/"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of `static/`, read once: they are small and change only with the package."""
    assets = {}
    for entry in resources.files(__name__).joinpath("static").iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if not entry.is_file() or suffix not in CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[entry.name] = Asset(body, CONTENT_TYPES[suffix], etag)
    if PAGE not in assets:
        raise RuntimeError(f"the console's {PAGE} is missing from the package")
    return assets


def _answer(request: web.Request, asset: Asset) -> web.Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    if asset.etag in request.headers.getall("If-None-Match", []):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers
    )


def console_routes() -> list[web.RouteDef]:
    """The page at `/` and `/console/`, its assets under `/console/`."""
    assets = load_assets()

    async def page(request: web.Request) -> web.Response:
        return _answer(request, assets[PAGE])

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        return _answer(request, found)

    async def to_page(request: web.Request) -> web.Response:
        # answered, not raised: the edge turns raised HTTP errors into JSON statuses
        return web.Response(status=301, headers={**SECURITY_HEADERS, "Location": PREFIX})

    return [
        web.get("/", page),
        web.get(PREFIX, page),
        web.get(PREFIX.rstrip("/"), to_page),
        web.get(PREFIX + "{name}", asset),
    ]
