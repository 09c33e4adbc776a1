"""Slow connections (issue 17, item 2): a real ``passthrough serve`` under 22,000 connections that trickle their
request heads, and the pieces that hold it up (pyapp/web/connections.py, pyapp/log_throttle.py).

Run as a script, this file is one attacking client process (see ``trickle``)."""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
from collections import deque

SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: y\r\n" * 10_000  # never ends: no blank line
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux: pick the port at connect()


def trickle(host: str, port: int, source: str, sockets: int, ramp_seconds: float, period: float,
            seconds: float) -> dict:
    """Slowloris: open ``sockets`` connections from ``source`` within ``ramp_seconds``, then send each one more byte
    of a request head that never ends every ``period`` seconds; a socket the server closed is opened again at its
    next turn, so the attack keeps its size. Returns counts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    selector = selectors.DefaultSelector()
    start = time.monotonic()
    due: deque[list] = deque([start + ramp_seconds * i / sockets, None, 0] for i in range(sockets))  # due, sock, sent
    counts = {"connects": 0, "connect_errors": 0, "bytes_sent": 0, "closed_by_server": 0, "open_at_end": 0}

    def drop(sock: socket.socket) -> None:
        selector.unregister(sock)
        sock.close()

    while (now := time.monotonic()) < start + seconds:
        while due and due[0][0] <= now:
            slot = due.popleft()
            sock = slot[1]
            if sock is not None and sock.fileno() == -1:
                sock = slot[1] = None
            if sock is None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((source, 0))
                sock.setblocking(False)
                if sock.connect_ex((host, port)) not in (0, 115):  # 115: EINPROGRESS
                    counts["connect_errors"] += 1
                    sock.close()
                else:
                    counts["connects"] += 1
                    selector.register(sock, selectors.EVENT_READ)
                    slot[1], slot[2] = sock, 0
            else:
                try:
                    slot[2] += sock.send(SLOW_HEAD[slot[2]:slot[2] + 1])
                    counts["bytes_sent"] += 1
                except BlockingIOError:  # still connecting (its SYN waits in a full backlog)
                    pass
                except OSError:
                    counts["closed_by_server"] += 1
                    drop(sock)
                    slot[1] = None
            slot[0] = max(now, slot[0]) + period
            due.append(slot)
        timeout = min(0.05, max(0.0, due[0][0] - time.monotonic())) if due else 0.05
        for key, _ in selector.select(timeout):
            sock = key.fileobj
            try:
                if sock.recv(4096):
                    continue  # an answer (a 408, a 503): the server closes next
            except BlockingIOError:
                continue
            except OSError:
                pass
            counts["closed_by_server"] += 1
            drop(sock)  # reopened at its next turn
    counts["open_at_end"] = len(selector.get_map())
    counts["nofile_soft_limit"] = [soft, hard]
    return counts


if __name__ == "__main__":
    host, port, source, sockets, ramp, period, seconds = sys.argv[1:]
    print(json.dumps(trickle(host, int(port), source, int(sockets), float(ramp), float(period), float(seconds))),
          flush=True)
    sys.exit(0)


import httpx  # noqa: E402  (the attacking client above needs only the standard library)
import pytest  # noqa: E402
from live_server import serving  # noqa: E402

ATTACKERS = 2
SOCKETS_PER_ATTACKER = 11_000
ATTACK_SECONDS = 37
PROBES_FROM = 10  # seconds after the attack begins
PROBES = 25
LOG_GROWTH_LIMIT = 10 * 1024 * 1024


def start_attackers(port: int) -> list[subprocess.Popen]:
    """Two client processes, each from its own loopback address (its own range of ephemeral ports)."""
    return [subprocess.Popen(
        [sys.executable, __file__, "127.0.0.1", str(port), f"127.0.0.{2 + n}", str(SOCKETS_PER_ATTACKER), "3", "5",
         str(ATTACK_SECONDS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(ATTACKERS)]


def test_healthz_answers_through_22000_slow_connections_and_the_log_stays_small(db_url, tmp_path):
    with serving(db_url, tmp_path, "--workers", "1") as base:
        [log] = tmp_path.glob("serve-*.log")
        port = int(base.rsplit(":", 1)[1])
        log_size_before = log.stat().st_size
        attack_began = time.monotonic()
        attackers = start_attackers(port)
        try:
            probes = []  # (status or error, seconds)
            monitor = httpx.Client(timeout=1.0, limits=httpx.Limits(max_keepalive_connections=0))  # a new connection each
            for n in range(PROBES):
                time.sleep(max(0.0, attack_began + PROBES_FROM + n - time.monotonic()))
                began = time.monotonic()
                try:
                    status: object = monitor.get(f"{base}/healthz").status_code
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                probes.append((status, round(time.monotonic() - began, 3)))
            log_growth = log.stat().st_size - log_size_before
        finally:
            reports = []
            for attacker in attackers:
                out, err = attacker.communicate(timeout=ATTACK_SECONDS + 30)
                reports.append(out.strip() or err[-2000:])
        attack = [json.loads(r) for r in reports]
        assert sum(a["connects"] for a in attack) >= ATTACKERS * SOCKETS_PER_ATTACKER, attack
        print("probes:", probes, "attack:", attack, "log growth:", log_growth)
        answered_in_time = [status == 200 and seconds <= 1.0 for status, seconds in probes]
        assert sum(answered_in_time) >= 0.9 * PROBES, (probes, attack)
        assert log_growth <= LOG_GROWTH_LIMIT, (log_growth, log.read_text(errors="replace")[-3000:])
