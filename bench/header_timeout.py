"""uvicorn's httptools protocol with a request-head deadline, for bench/engines.py's robustness probes.

uvicorn (0.55) has no timeout for a request head: a connection that never finishes its headers (slowloris) is
kept open for ever; --timeout-keep-alive only runs between requests, after a response. uvicorn takes a
protocol class for --http, so a subclass adds the deadline:

    uvicorn --http bench.header_timeout:HeaderTimeoutHttpToolsProtocol ...

The deadline ($BENCH_HEADER_TIMEOUT seconds, default 10) starts when the connection opens, or when the first
byte of a later request on it arrives, and does not restart as more header bytes come; when it passes before the
head is complete, the connection is closed. This is the probe's proof that the engine allows it, not the
project's implementation (pyapp/ is another change's)."""

from __future__ import annotations

import asyncio
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT = float(os.environ.get("BENCH_HEADER_TIMEOUT", "10"))


class HeaderTimeoutHttpToolsProtocol(HttpToolsProtocol):
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(HEADER_TIMEOUT, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
