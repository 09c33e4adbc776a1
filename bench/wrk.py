"""wrk, the load generator of the HTTP rows (bench/run.py, bench/engines.py): a C client on an epoll loop, one
thread, so the client takes little of the CPUs the server and PostgreSQL share with it. bench/wrk.lua sends
prepared JSON bodies from a file and prints the counts and latency percentiles; this module installs wrk when
missing (Debian's package), runs it and starts the servers it is pointed at."""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().with_name("wrk.lua")


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_wrk() -> str:
    """The path of wrk; installs Debian's package when it is missing (as root: `apt-get install wrk`)."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = ["apt-get", "install", "-y", "--no-install-recommends", "wrk"]
    info("  wrk is missing: " + " ".join(apt))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(apt, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        subprocess.run(apt, env=env, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and `apt-get install wrk` failed")
    return found


@dataclass
class WrkResult:
    connections: int
    requests: int  # answered with the expected status during the measured run
    seconds: float
    bad: int  # answered with another status, or GraphQL errors
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    all_requests: int  # every request wrk completed, fillers included

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def write_bodies(bodies: Sequence[bytes], path: Path) -> Path:
    """One body a line: what bench/wrk.lua reads (compact JSON has no newline)."""
    with open(path, "wb") as f:
        for body in bodies:
            if b"\n" in body:
                raise ValueError("a body for bench/wrk.lua may not hold a newline")
            f.write(body + b"\n")
    return path


def run_wrk(url: str, bodies: Path, connections: int, seconds: float, *, mode: str = "cycle", status: int = 200,
            key: str | None = None, timeout: float = 30.0) -> WrkResult:
    """One wrk run (1 thread, `connections` keep-alive connections) for `seconds` (whole seconds, at least 1):
    POSTs of the bodies in `bodies` to `url` (bench/wrk.lua's modes). Raises when wrk fails or prints no
    result."""
    exe = ensure_wrk()
    duration = max(1, math.ceil(seconds))
    cmd = [exe, "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={max(1, math.ceil(timeout))}s", "--latency",
           "-s", str(SCRIPT), url, "--", str(bodies), mode, str(status), key or "-", str(connections)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout + 60)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRK-RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk exited {proc.returncode}: {(proc.stdout + proc.stderr)[-600:]}")
    r = json.loads(line.split(" ", 1)[1])
    return WrkResult(
        connections=connections, requests=r["answered"],
        seconds=(r["once_us"] or r["duration_us"]) / 1e6, bad=r["bad"],
        socket_errors=r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"],
        p50_ms=r["p50_us"] / 1000, p99_ms=r["p99_us"] / 1000, p999_ms=r["p999_us"] / 1000,
        max_ms=r["max_us"] / 1000, all_requests=r["requests"])


def measure(url: str, bodies: Path, connections: int, warmup: float, seconds: float, *, key: str | None = None
            ) -> WrkResult:
    """A warm-up run (not counted), then the measured run, both cycling through the bodies; fails on any
    bad answer or socket error in the measured run."""
    if warmup > 0:
        run_wrk(url, bodies, connections, warmup, key=key)
    result = run_wrk(url, bodies, connections, seconds, key=key)
    if result.bad or result.socket_errors or not result.requests:
        raise RuntimeError(f"wrk against {url}: {result.requests} good answers, {result.bad} bad, "
                           f"{result.socket_errors} socket errors/timeouts")
    return result


@dataclass
class Target:
    url: str
    connections: int
    key: str | None = None


def interleaved(targets: Sequence[Target], bodies: Path, warmup: float, seconds: float, window: float = 2.0
                ) -> list[WrkResult]:
    """The same measurement as measure() for several servers at once, taken in turns: a warm-up of each, then
    windows of `window` seconds, one per target in turn, until each has had `seconds`. A ratio between two
    targets then compares the same minutes of a shared, noisy machine, not a quiet minute with a busy one.
    Each target's result sums its windows' answers and seconds; p50 is the median of its windows' p50, p99,
    p99.9 and max the worst window's (never better than one window measured alone). Fails on any bad answer."""
    for target in targets:
        if warmup > 0:
            run_wrk(target.url, bodies, target.connections, warmup, key=target.key)
    rounds = max(1, round(seconds / window))
    windows: list[list[WrkResult]] = [[] for _ in targets]
    for _ in range(rounds):
        for target, done in zip(targets, windows):
            result = run_wrk(target.url, bodies, target.connections, seconds / rounds, key=target.key)
            if result.bad or result.socket_errors or not result.requests:
                raise RuntimeError(f"wrk against {target.url}: {result.requests} good answers, {result.bad} bad, "
                                   f"{result.socket_errors} socket errors/timeouts")
            done.append(result)
    return [_combined(done) for done in windows]


def _combined(results: Sequence[WrkResult]) -> WrkResult:
    p50s = sorted(r.p50_ms for r in results)
    return WrkResult(
        connections=results[0].connections, requests=sum(r.requests for r in results),
        seconds=sum(r.seconds for r in results), bad=sum(r.bad for r in results),
        socket_errors=sum(r.socket_errors for r in results), p50_ms=p50s[len(p50s) // 2],
        p99_ms=max(r.p99_ms for r in results), p999_ms=max(r.p999_ms for r in results),
        max_ms=max(r.max_ms for r in results), all_requests=sum(r.all_requests for r in results))


def send_once(url: str, bodies: Path, connections: int, *, status: int, key: str | None = None,
              cap_seconds: float | None = None, timeout: float = 60.0) -> WrkResult:
    """Every body in `bodies` POSTed exactly once over `connections` connections (bench/wrk.lua's "once" mode);
    the result's seconds run from the first request to the last body's answer. Fails unless every body got
    `status` (wrk runs until every body is answered, or `cap_seconds`: by default 30 s + 0.5 s a body)."""
    expected = sum(1 for line in bodies.read_bytes().split(b"\n") if line)
    cap_seconds = cap_seconds or 30 + expected / 2
    result = run_wrk(url, bodies, connections, cap_seconds, mode="once", status=status, key=key, timeout=timeout)
    if result.requests != expected or result.bad or result.socket_errors:
        raise RuntimeError(f"wrk against {url}: {result.requests} of {expected} bodies answered {status}, "
                           f"{result.bad} bad answers, {result.socket_errors} socket errors/timeouts")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(port: int, server: subprocess.Popen, log_path: Path, what: str, deadline_s: float = 60,
                 path: str = "/healthz") -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline or server.poll() is not None:
            tail = log_path.read_text(errors="replace")[-800:] if log_path.exists() else ""
            raise RuntimeError(f"{what} did not start ({'exited' if server.poll() is not None else 'timeout'}): "
                               f"{tail}")
        time.sleep(0.2)


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@contextmanager
def server(cmd: list[str], log_dir: Path, what: str, *, port: int, env: dict | None = None) -> Iterator[str]:
    """Runs `cmd` (a server listening on 127.0.0.1:`port`) until /healthz answers 200; yields its base URL and
    stops it afterwards. Its output goes to a file in `log_dir`."""
    log_path = log_dir / f"{what.split()[0].replace('/', '_')}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        wait_healthy(port, proc, log_path, what)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
