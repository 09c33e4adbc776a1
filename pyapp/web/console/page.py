"""The console's page (``GET /console``) and the files it loads (``/console/assets/{version}/{name}``).

The page is static and holds no data nor key, so it is served without one; its script (static/console.js) asks
the API with the key the user types in, or gives in the URL fragment (``#key=...``, which browsers never send),
and keeps it in the tab's sessionStorage only. uPlot draws the chart; it ships inside the package with the
console's own script and stylesheet (static/ASSETS.md: versions, licences), so the page works offline. A
Content-Security-Policy lets the page load only these files and talk only to this server.
"""

from __future__ import annotations

import gzip
import hashlib
from base64 import b64encode
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from pyapp.web.responses import ApiError

CONSOLE_PATH = "/console"
ASSETS_PATH = "/console/assets"
# No inline script or style, nothing from another origin: a script injected into the page could read the key.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    version: str  # in the URL: a new version is a new URL, so a browser may cache each for ever
    media_type: str
    sha384: str  # the page's subresource integrity

    def url(self, name: str) -> str:
        return f"{ASSETS_PATH}/{self.version}/{name}"


def _read(name: str) -> bytes:
    return files("pyapp.web.console").joinpath("static", name).read_bytes()


def _own(name: str, media_type: str) -> Asset:
    """The console's own file, versioned by its content."""
    data = _read(name)
    return Asset("console-" + hashlib.sha256(data).hexdigest()[:12], media_type,
                 b64encode(hashlib.sha384(data).digest()).decode())


ASSETS = {
    # uPlot as npm ships it (uplot@1.6.32, dist/): the sha384 of its files there
    "uPlot.iife.min.js": Asset(
        "uplot-1.6.32", "text/javascript", "Gx3t0zdBAuQOuvvmaLZj7HKEiSgWTAs+VdtNY7wt19QDPTDQjFIwAuXDj0zeN00c"),
    "uPlot.min.css": Asset(
        "uplot-1.6.32", "text/css", "IfV0B7MIOYuO95kO9G5ySKPz/85zqFNOAs8iy4tkK5zd9izhJAB8b7lHrwYqqmYE"),
    "console.js": _own("console.js", "text/javascript"),
    "console.css": _own("console.css", "text/css"),
}


def _tag(name: str) -> str:
    asset = ASSETS[name]
    if asset.media_type == "text/css":
        return f'<link rel="stylesheet" href="{asset.url(name)}" integrity="sha384-{asset.sha384}">'
    return f'<script src="{asset.url(name)}" integrity="sha384-{asset.sha384}" defer></script>'


CONSOLE_HTML = (
    _read("console.html").decode()
    .replace("<!-- ASSETS -->", "\n    ".join(_tag(name) for name in ASSETS))
)


async def console_page(request: Request) -> Response:
    return HTMLResponse(CONSOLE_HTML, headers=PAGE_HEADERS)


@cache
def _asset_bytes(name: str, gzipped: bool) -> bytes:
    data = _read(name)
    return gzip.compress(data, compresslevel=9, mtime=0) if gzipped else data


async def console_asset(request: Request) -> Response:
    """One of the console's files, gzipped for a browser that takes it; 404 for any other path."""
    name, version = request.path_params["name"], request.path_params["version"]
    asset = ASSETS.get(name)
    if asset is None or asset.version != version:
        raise ApiError(404, "not_found", f"the console has no file {version}/{name}")
    gzipped = "gzip" in request.headers.get("accept-encoding", "")
    headers = {"cache-control": "public, max-age=31536000, immutable", "vary": "Accept-Encoding",
               "x-content-type-options": "nosniff"}
    if gzipped:
        headers["content-encoding"] = "gzip"
    return Response(_asset_bytes(name, gzipped), media_type=asset.media_type, headers=headers)


CONSOLE_ROUTES = [
    Route(CONSOLE_PATH, console_page, methods=["GET"], name="console"),
    Route(ASSETS_PATH + "/{version}/{name}", console_asset, methods=["GET"], name="console_asset"),
]
