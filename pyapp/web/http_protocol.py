"""uvicorn's httptools protocol under this process's ConnectionGuard (pyapp/web/connections.py): uvicorn takes a
protocol class for ``http=``, and pyapp/serving.py names this one. A module of its own: importing uvicorn's
protocol costs the command line tens of milliseconds it needs only to serve."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pyapp.web.connections import ConnectionGuard, guard_for, reset


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under this process's ConnectionGuard."""

    guard: ConnectionGuard

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.guard = guard_for(self.loop)
        if not self.guard.admit(self):
            reset(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self.guard.head_complete(self)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.guard.body_progress(self)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.guard.body_complete(self)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        queued = bool(self.pipeline)
        super().on_response_complete()
        if not queued and not self.transport.is_closing():
            self.guard.awaiting_next_head(self)
