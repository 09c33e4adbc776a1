"""Files that ship inside the package and that the server serves itself (GraphiQL's, the console's), so that
their pages work offline: each under ``{url_path}/{version}/{name}``, a new version being a new URL that a
browser may cache for ever; gzipped for a browser that takes it; 404 for any other path."""

from __future__ import annotations

import gzip
import hashlib
from base64 import b64encode
from dataclasses import dataclass, field
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pyapp.web.responses import ApiError


@dataclass(frozen=True)
class Asset:
    version: str  # in the URL
    media_type: str
    sha384: str  # the page's subresource integrity


def sha384_integrity(data: bytes) -> str:
    return b64encode(hashlib.sha384(data).digest()).decode()


@dataclass
class ShippedFiles:
    package: str  # the files are in this package's folder `folder`
    folder: str
    url_path: str
    assets: dict[str, Asset]
    what: str  # names the page in the 404's message
    _gzipped: dict[str, bytes] = field(default_factory=dict, repr=False)

    def read(self, name: str) -> bytes:
        return files(self.package).joinpath(*self.folder.split("/"), name).read_bytes()

    def url(self, name: str) -> str:
        return f"{self.url_path}/{self.assets[name].version}/{name}"

    def script_tag(self, name: str, extra: str = "") -> str:
        return f'<script src="{self.url(name)}" integrity="sha384-{self.assets[name].sha384}"{extra}></script>'

    def stylesheet_tag(self, name: str) -> str:
        return f'<link rel="stylesheet" href="{self.url(name)}" integrity="sha384-{self.assets[name].sha384}" />'

    async def serve(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params["version"]
        asset = self.assets.get(name)
        if asset is None or asset.version != version:
            raise ApiError(404, "not_found", f"the {self.what} has no file {version}/{name}")
        headers = {"cache-control": "public, max-age=31536000, immutable", "vary": "Accept-Encoding",
                   "x-content-type-options": "nosniff"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["content-encoding"] = "gzip"
            if name not in self._gzipped:
                self._gzipped[name] = gzip.compress(self.read(name), compresslevel=9, mtime=0)
            body = self._gzipped[name]
        else:
            body = self.read(name)
        return Response(body, media_type=asset.media_type, headers=headers)

    def route(self, name: str) -> Route:
        return Route(self.url_path + "/{version}/{name}", self.serve, methods=["GET"], name=name)
