"""Slow clients cannot hold ``passthrough serve``'s connections (issue 17, item 2): a cap on open connections
per worker process, a request-head deadline and a request-body stall timeout, kept by one ``ConnectionGuard`` per
process for pyapp/web/http_protocol.py's uvicorn protocol. uvicorn (0.55) has none of these: a connection that
never finishes its head is kept for ever, and its ``limit_concurrency`` answers 503 only once a head is complete.

- A request's head must be complete within ``header_timeout`` seconds of the connection's opening, or of the end
  of the previous response on it (an idle keep-alive connection counts as waiting for a head).
- A request body that receives nothing for ``body_timeout`` seconds is dropped (not while uvicorn itself has
  paused reading because the app has not consumed what came).
- At ``max_connections`` open connections, a new one makes room by dropping the connection that has waited longest
  for its head; when every connection has a request in progress, the new one is dropped.

Dropped connections are reset (RST): the slowloris client learns nothing, and the server keeps no TIME_WAIT
state for them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import struct
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("uvicorn.error")

DEFAULT_MAX_CONNECTIONS = 10_000
FILE_LIMIT_SHARE = 0.75  # of the process's open-file limit: the rest for the pool, spooled files, the log
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 20.0
LOG_INTERVAL = 10.0
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # per worker process
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT


def default_max_connections(open_file_limit: int) -> int:
    """DEFAULT_MAX_CONNECTIONS, or fewer when the process may not open that many files with some to spare."""
    return max(1, min(DEFAULT_MAX_CONNECTIONS, int(open_file_limit * FILE_LIMIT_SHARE)))


def reset(protocol: HttpToolsProtocol) -> None:
    """Close the connection at once with an RST."""
    transport = protocol.transport
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        except OSError:
            pass
    transport.abort()


class ConnectionGuard:
    """The open connections of this process, those waiting for a request head (oldest first) and those receiving
    a body (least recently active first): kept in age order, so shedding and timeouts cost O(1) per connection. A
    sweep every fraction of a second closes the expired ones and, at most every LOG_INTERVAL seconds, logs one
    summary line."""

    def __init__(self, limits: ConnectionLimits, loop: asyncio.AbstractEventLoop) -> None:
        self.limits = limits
        self.loop = loop
        self.open: set[HttpToolsProtocol] = set()
        self.awaiting_head: OrderedDict[HttpToolsProtocol, float] = OrderedDict()
        self.receiving_body: OrderedDict[HttpToolsProtocol, float] = OrderedDict()
        self.counts = {"shed": 0, "refused": 0, "head_timeouts": 0, "body_timeouts": 0}
        self._logged_counts = dict(self.counts)
        self._logged_at = loop.time()
        self._sweep_every = max(0.05, min(0.5, limits.header_timeout / 4, limits.body_timeout / 4))
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    def admit(self, protocol: HttpToolsProtocol) -> bool:
        """Count a new connection in, shedding the oldest waiting for its head to make room; False when there is
        no room (the caller drops it)."""
        while len(self.open) >= self.limits.max_connections and self.awaiting_head:
            oldest, _ = self.awaiting_head.popitem(last=False)
            self.forget(oldest)
            reset(oldest)
            self.counts["shed"] += 1
        if len(self.open) >= self.limits.max_connections:
            self.counts["refused"] += 1
            return False
        self.open.add(protocol)
        self.awaiting_head[protocol] = self.loop.time()
        return True

    def forget(self, protocol: HttpToolsProtocol) -> None:
        self.open.discard(protocol)
        self.awaiting_head.pop(protocol, None)
        self.receiving_body.pop(protocol, None)

    def head_complete(self, protocol: HttpToolsProtocol) -> None:
        if self.awaiting_head.pop(protocol, None) is not None or protocol in self.open:
            self.receiving_body[protocol] = self.loop.time()

    def body_progress(self, protocol: HttpToolsProtocol) -> None:
        if protocol in self.receiving_body:
            self.receiving_body[protocol] = self.loop.time()
            self.receiving_body.move_to_end(protocol)

    def body_complete(self, protocol: HttpToolsProtocol) -> None:
        self.receiving_body.pop(protocol, None)

    def awaiting_next_head(self, protocol: HttpToolsProtocol) -> None:
        """A response ended and no request is queued behind it: the next head's deadline starts now."""
        self.receiving_body.pop(protocol, None)
        if protocol in self.open:
            self.awaiting_head[protocol] = self.loop.time()
            self.awaiting_head.move_to_end(protocol)

    def _sweep(self) -> None:
        now = self.loop.time()
        self._close_expired(self.awaiting_head, now - self.limits.header_timeout, "head_timeouts")
        self._close_expired(self.receiving_body, now - self.limits.body_timeout, "body_timeouts")
        if now - self._logged_at >= LOG_INTERVAL:
            self._log_summary(now)
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    def _close_expired(self, connections: OrderedDict[HttpToolsProtocol, float], cutoff: float, count: str) -> None:
        paused = []
        while connections:
            protocol, since = next(iter(connections.items()))
            if since > cutoff:
                break
            connections.popitem(last=False)
            if count == "body_timeouts" and protocol.flow is not None and protocol.flow.read_paused:
                paused.append(protocol)  # uvicorn stopped reading (the app is behind): not the client's stall
                continue
            self.forget(protocol)
            reset(protocol)
            self.counts[count] += 1
        for protocol in paused:
            connections[protocol] = cutoff + self.limits.body_timeout

    def _log_summary(self, now: float) -> None:
        moved = {k: v - self._logged_counts[k] for k, v in self.counts.items() if v != self._logged_counts[k]}
        if moved:
            log.warning("connections dropped in the last %.0f s: %s (%d open, at most %d; head timeout %g s, "
                        "body timeout %g s)", now - self._logged_at,
                        ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in moved.items()), len(self.open),
                        self.limits.max_connections, self.limits.header_timeout, self.limits.body_timeout)
        self._logged_counts = dict(self.counts)
        self._logged_at = now

    def close(self) -> None:
        self._sweeper.cancel()


_limits = ConnectionLimits()
_guards: dict[asyncio.AbstractEventLoop, ConnectionGuard] = {}


def configure(limits: ConnectionLimits) -> None:
    """This process's limits; set before the server accepts connections."""
    global _limits
    _limits = limits
    for guard in _guards.values():
        guard.close()
    _guards.clear()


def guard_for(loop: asyncio.AbstractEventLoop) -> ConnectionGuard:
    guard = _guards.get(loop)
    if guard is None:
        guard = _guards[loop] = ConnectionGuard(_limits, loop)
    return guard
