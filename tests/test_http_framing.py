"""Request framing against a real `passthrough serve` (raw bytes over a socket, as an attacker sends them):
Transfer-Encoding with Content-Length is refused with 400 and the connection closed (RFC 9112 6.3,
pyapp/web/framing.py), and a client that leaves mid-body costs one log line, no traceback (pyapp/web/app.py)."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import pytest
from live_server import serving
from sqlhelpers import event

from pyapp.db import connect

BODY = json.dumps([event(identifiers={"fs_user_id": "smuggled"})]).encode()


@pytest.fixture
def server(db_url, tmp_path):
    with connect(db_url, autocommit=True) as c:
        c.execute("SELECT passthrough.enable()")
        key = c.execute("SELECT passthrough.create_api_key('cdp', 'private')").fetchone()[0]
    with serving(db_url, tmp_path) as base:
        yield base, key


def exchange(base: str, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection (or 10 s pass)."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def head(key: str, *extra: str) -> bytes:
    lines = ["POST /v3/events HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", f"x-api-key: {key}",
             "Connection: close", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body: bytes) -> bytes:
    return f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"


def test_transfer_encoding_with_content_length_is_refused(server, db_url):
    base, key = server
    answer = exchange(base, head(key, "Transfer-Encoding: chunked", f"Content-Length: {len(BODY)}") + chunked(BODY))
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"connection: close" in rest.lower()
    # passthrough serve's parser (httptools) refuses it before the app; pyapp/web/framing.py under other servers
    assert b"Invalid HTTP request received." in rest or b'"code":"ambiguous_framing"' in rest, rest
    with connect(db_url) as c:
        assert c.execute("SELECT count(*) FROM passthrough.events").fetchone() == (0,)


def test_either_header_alone_is_served(server, db_url):
    base, key = server
    assert exchange(base, head(key, "Transfer-Encoding: chunked") + chunked(BODY)).startswith(b"HTTP/1.1 202")
    assert exchange(base, head(key, f"Content-Length: {len(BODY)}") + BODY).startswith(b"HTTP/1.1 202")
    with connect(db_url) as c:
        assert c.execute("SELECT count(*) FROM passthrough.events").fetchone() == (2,)


@pytest.mark.parametrize("path, content_type", [("/v3/events", "application/json"),
                                                ("/v3/audiences/aud-1/snapshot", "text/csv")])
def test_a_client_that_disconnects_mid_body_costs_one_quiet_log_line(server, db_url, tmp_path, path, content_type):
    base, key = server
    with connect(db_url, autocommit=True) as c:
        private = c.execute("SELECT passthrough.create_api_key('ops', 'private')").fetchone()[0]
    parts = urlsplit(base)
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
               f"x-api-key: {private}\r\nContent-Length: 100000\r\n\r\n").encode() + b'type,action,audie'
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)  # ... and goes away with most of the body unsent
    deadline = time.monotonic() + 10
    [log] = tmp_path.glob("serve-*.log")
    while "disconnected before its request body" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = log.read_text()
    assert text.count("disconnected before its request body") == 1, text[-2000:]
    assert "Traceback" not in text, text[-3000:]
    with connect(db_url) as c:
        assert c.execute("SELECT count(*) FROM passthrough.batches").fetchone() == (0,)
