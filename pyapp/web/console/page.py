"""The console's page (``GET /console``) and the files it loads (``/console/assets/{version}/{name}``).

The page is static and holds no data nor key, so it is served without one; its script (static/console.js) asks
the API with the key the user types in, or gives in the URL fragment (``#key=...``, which browsers never send),
and keeps it in the tab's sessionStorage only. uPlot draws the chart; it ships inside the package with the
console's own script and stylesheet (static/ASSETS.md: versions, licences), so the page works offline. A
Content-Security-Policy lets the page load only these files and talk only to this server.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from pyapp.web.shipped_files import Asset, ShippedFiles, sha384_integrity

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


def _read(name: str) -> bytes:
    return files("pyapp.web.console").joinpath("static", name).read_bytes()


def _own(name: str, media_type: str) -> Asset:
    """The console's own file, versioned by its content."""
    data = _read(name)
    return Asset("console-" + hashlib.sha256(data).hexdigest()[:12], media_type, sha384_integrity(data))


ASSETS = {
    # uPlot as npm ships it (uplot@1.6.32, dist/): the sha384 of its files there
    "uPlot.iife.min.js": Asset(
        "uplot-1.6.32", "text/javascript", "Gx3t0zdBAuQOuvvmaLZj7HKEiSgWTAs+VdtNY7wt19QDPTDQjFIwAuXDj0zeN00c"),
    "uPlot.min.css": Asset(
        "uplot-1.6.32", "text/css", "IfV0B7MIOYuO95kO9G5ySKPz/85zqFNOAs8iy4tkK5zd9izhJAB8b7lHrwYqqmYE"),
    "console.js": _own("console.js", "text/javascript"),
    "console.css": _own("console.css", "text/css"),
}


SHIPPED = ShippedFiles("pyapp.web.console", "static", ASSETS_PATH, ASSETS, "console")


def _tag(name: str) -> str:
    if ASSETS[name].media_type == "text/css":
        return SHIPPED.stylesheet_tag(name)
    return SHIPPED.script_tag(name, " defer")


CONSOLE_HTML = (
    _read("console.html").decode()
    .replace("<!-- ASSETS -->", "\n    ".join(_tag(name) for name in ASSETS))
)


async def console_page(request: Request) -> Response:
    return HTMLResponse(CONSOLE_HTML, headers=PAGE_HEADERS)


CONSOLE_ROUTES = [
    Route(CONSOLE_PATH, console_page, methods=["GET"], name="console"),
    SHIPPED.route("console_asset"),
]
