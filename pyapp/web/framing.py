"""Refuses a request whose body length is ambiguous: Transfer-Encoding and Content-Length together.

RFC 9112 section 6.3: such a message may be an attempt at request smuggling (a proxy in front and this server
could disagree on where the body ends), and a server ought to treat it as an error and close the connection.
Under ``passthrough serve`` the HTTP parser (httptools) already refuses such a request before the app sees it;
this middleware keeps the rule under any other ASGI server.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from pyapp.errors import ErrorReport
from pyapp.web.responses import error_response

REFUSAL = ErrorReport(400, "ambiguous_framing", "a request may not carry both Transfer-Encoding and Content-Length "
                      "(RFC 9112, section 6.3); send one of them")


class RefuseAmbiguousFraming:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = {name.lower() for name, _ in scope["headers"]}
            if b"transfer-encoding" in names and b"content-length" in names:
                await error_response(REFUSAL, headers={"Connection": "close"})(scope, receive, send)
                return
        await self.app(scope, receive, send)
