"""CORS: which web pages may call which routes from the browser (Starlette's CORSMiddleware does the work).

The routes a public key may use (POST /v3/events, /v3/graphql) answer preflights and carry
Access-Control-Allow-Origin for ``config.cors_origins`` (default: any origin, since ODP's browser SDK runs
on any site). The routes that need a private key answer no browser unless ``config.cors_private_origins``
names its origin: a private key in a web page is readable by anyone who loads it (README, Configuration).
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

PUBLIC_KEY_PATHS = ("/v3/events", "/v3/graphql")
ALLOWED_HEADERS = ["content-type", "content-encoding", "x-api-key"]
MAX_AGE = 600  # seconds a browser may cache a preflight answer


class RouteCors:
    """One CORS policy for the public-key routes, another (none unless configured) for the rest of /v3."""

    def __init__(self, app: ASGIApp, public_origins: tuple[str, ...], private_origins: tuple[str, ...]) -> None:
        self.app = app
        self.public = _cors(app, public_origins, ["GET", "POST"]) if public_origins else app
        self.private = _cors(app, private_origins, ["GET", "POST", "PUT", "DELETE"]) if private_origins else app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"] in PUBLIC_KEY_PATHS:
            await self.public(scope, receive, send)
        elif scope["path"].startswith("/v3/"):
            await self.private(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _cors(app: ASGIApp, origins: tuple[str, ...], methods: list[str]) -> ASGIApp:
    return CORSMiddleware(app, allow_origins=list(origins), allow_methods=methods, allow_headers=ALLOWED_HEADERS,
                          max_age=MAX_AGE)
