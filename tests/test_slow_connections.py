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


# --------------------------------------------------------------------------- head and body timeouts, the cap

import logging  # noqa: E402
import select  # noqa: E402

from pyapp.db import connect  # noqa: E402
from pyapp.log_throttle import RepeatThrottle  # noqa: E402

TIMEOUTS = ("--header-timeout", "1", "--body-timeout", "1")


def event_body(who: str) -> bytes:
    return json.dumps([{"type": "passthrough", "action": "qualify", "identifiers": {"fs_user_id": who},
                        "data": {"audience_id": "crm-vip", "ts": 1_700_000_000}}]).encode()


def open_socket(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed (or reset) the connection, without waiting."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(4096) == b""
    except OSError:
        return True


def trickle_until_closed(sock: socket.socket, data: bytes, every: float, limit: float) -> float | None:
    """Send ``data`` a byte per ``every`` seconds; the seconds until the server closed the connection, None if it
    had not after ``limit`` seconds."""
    began = time.monotonic()
    for n in range(len(data)):
        if time.monotonic() - began > limit:
            return None
        if select.select([sock], [], [], every)[0] and closed_by_server(sock):
            return time.monotonic() - began
        try:
            sock.sendall(data[n:n + 1])
        except OSError:
            return time.monotonic() - began
    return None


@pytest.fixture
def private_key(db_url) -> str:
    with connect(db_url, autocommit=True) as c:
        c.execute("SELECT passthrough.enable()")
        c.execute("SELECT passthrough.create_audience('vip', 'crm-vip')")
        return c.execute("SELECT passthrough.create_api_key('app', 'private')").fetchone()[0]


def test_a_head_trickled_past_the_header_timeout_is_closed(db_url, tmp_path):
    with serving(db_url, tmp_path, "--workers", "1", *TIMEOUTS) as base, open_socket(base) as sock:
        closed_after = trickle_until_closed(sock, SLOW_HEAD, every=0.2, limit=6)
    assert closed_after is not None and 0.8 <= closed_after <= 3.0, closed_after


def test_a_stalled_body_is_closed_and_nothing_is_stored(db_url, tmp_path, private_key):
    body = event_body("stalled")
    head = (f"POST /v3/events HTTP/1.1\r\nHost: x\r\nx-api-key: {private_key}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    with serving(db_url, tmp_path, "--workers", "1", *TIMEOUTS) as base, open_socket(base) as sock:
        sock.sendall(head + body[:10])
        began = time.monotonic()
        while not closed_by_server(sock) and time.monotonic() - began < 6:
            time.sleep(0.05)
        closed_after = time.monotonic() - began
    assert 0.8 <= closed_after <= 3.0, closed_after
    with connect(db_url, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM passthrough.events").fetchone() == (0,)


def test_a_slow_request_that_keeps_coming_is_served(db_url, tmp_path, private_key):
    """Head in 0.6 s, then the body a few bytes per 0.5 s for 4 s: longer than both timeouts together, but the
    head was on time and the body never stalled for a whole second."""
    body = event_body("slow-but-steady")
    head = (f"POST /v3/events HTTP/1.1\r\nHost: x\r\nx-api-key: {private_key}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    with serving(db_url, tmp_path, "--workers", "1", *TIMEOUTS) as base, open_socket(base) as sock:
        for n in range(0, len(head), len(head) // 3 + 1):
            sock.sendall(head[n:n + len(head) // 3 + 1])
            time.sleep(0.2)
        step = len(body) // 8 + 1
        for n in range(0, len(body), step):
            sock.sendall(body[n:n + step])
            time.sleep(0.5)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 202 "), answer
    with connect(db_url, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM passthrough.events").fetchone() == (1,)


def test_at_the_cap_the_connections_waiting_longest_for_their_heads_go_first(db_url, tmp_path):
    with serving(db_url, tmp_path, "--workers", "1", "--max-connections", "20") as base:
        idle = []
        for _ in range(20):
            idle.append(open_socket(base))
            time.sleep(0.02)  # accepted in this order
        time.sleep(0.3)
        assert not any(closed_by_server(s) for s in idle)
        newer = [open_socket(base) for _ in range(5)]
        time.sleep(0.5)
        assert [closed_by_server(s) for s in idle] == [True] * 5 + [False] * 15
        assert not any(closed_by_server(s) for s in newer)
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200  # sheds the next oldest
        for s in idle + newer:
            s.close()


def test_more_connections_than_the_open_file_limit_allows_is_refused(db_url, capsys):
    from pyapp import cli

    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert cli.main(["serve", "--database-url", db_url, "--no-migrate", "--workers", "1",
                     "--max-connections", str(limit)]) == 1
    assert "--max-connections: must be between 1 and" in capsys.readouterr().err


def test_serve_raises_its_soft_open_file_limit_to_the_hard_limit():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    out = subprocess.run(
        [sys.executable, "-c", "import resource; from pyapp.serving import raise_open_file_limit as r; "
         "print(r(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)), capture_output=True, text=True,
        check=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))).stdout.split()
    assert out == [str(hard), str(hard)]


# --------------------------------------------------------------------------- the log that repeats itself at most once


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def throttled_log():
    clock = FakeClock()
    logger = logging.getLogger("test.slow_connections.throttled")
    logger.propagate = False
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    handler.addFilter(RepeatThrottle(interval=10, clock=clock))
    logger.addHandler(handler)
    yield logger, clock, records
    logger.removeHandler(handler)


def test_an_identical_error_is_logged_once_per_interval_then_with_the_count_left_out(throttled_log):
    logger, clock, records = throttled_log
    for fd in range(1000):  # numbers aside, the same message: as EMFILE floods are
        logger.error("accept() failed on fd %d: [Errno 24] Too many open files", fd)
        clock.now += 0.005
    assert records == ["accept() failed on fd 0: [Errno 24] Too many open files"]
    clock.now += 10
    logger.error("accept() failed on fd %d: [Errno 24] Too many open files", 7)
    assert records[1:] == ["accept() failed on fd 7: [Errno 24] Too many open files "
                           "[and 999 more like this in the last 15 s, not logged]"]


def test_different_messages_and_levels_each_get_through(throttled_log):
    logger, clock, records = throttled_log
    logger.error("one thing")
    logger.error("another thing")
    logger.warning("one thing")
    logger.error("one thing")
    assert records == ["one thing", "another thing", "one thing"]
