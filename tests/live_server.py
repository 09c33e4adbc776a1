"""``passthrough serve`` as a real process on a free 127.0.0.1 port, for tests that need real concurrency
(several clients, several pooled connections) or a server that outlives its database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readyz(base: str) -> int | None:
    """The status /readyz answers, or None when the server does not answer at all."""
    try:
        return httpx.get(f"{base}/readyz", timeout=10).status_code
    except httpx.TransportError:
        return None


@contextmanager
def serving(database_url: str, log_dir: Path, *args: str) -> Iterator[str]:
    """Run ``passthrough serve --no-migrate`` against a migrated database until the block ends; yields its base URL.
    Its output goes to a file (a pipe nobody reads would fill up with access logs and stall the server)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = log_dir / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pyapp.cli", "serve", "--database-url", database_url, "--host", "127.0.0.1",
             "--port", str(port), "--no-migrate", *args],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
        )
    try:
        deadline = time.monotonic() + 30
        while readyz(base) != 200:
            assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "passthrough serve did not become ready"
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
