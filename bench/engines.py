"""Serving engine comparison (issue 16, part 1): the same apps under three ASGI engines, driven by wrk.

    python -m bench.engines [--events 200000] [--users 40000] [--workers 1,2] [--connections 4] [--many 64]
                            [--warmup 2] [--seconds 6] [--events-sample 50000] [--probe-seconds 15]
                            [--granian PATH]

Engines: uvicorn with the default asyncio loop and h11; uvicorn with uvloop + httptools; granian (its Rust
HTTP/1 server, hyper, with uvloop). Granian is not a dependency of the project: install it into a scratch venv
that also has the app's dependencies, e.g.

    python3 -m venv /tmp/granian-venv && /tmp/granian-venv/bin/pip install granian uvloop \\
        'psycopg[binary,pool]' pg8000 starlette strawberry-graphql orjson rich sqlglot httpx

and pass --granian /tmp/granian-venv/bin/granian (found there, or on $PATH, by default); it runs with
PYTHONPATH set to this checkout, so it serves this checkout's pyapp and bench.

Apps: the floor (bench/floor.py: the SDK's GraphQL body -> the facade's one SQL call -> the same JSON) and the
real HTTP API (bench/asgi.py: pyapp.web.create_app as `passthrough serve` builds it). For each engine and worker
count: the floor and the GraphQL `customer` query (the SDK's query and variables, a public key) at --connections
and --many wrk connections, --warmup s then --seconds s each, every server's answers checked against the model
first; then `POST /v3/events`, the first --events-sample events in 500-event bodies each sent once (wrk,
--connections connections) into an empty state, which must then equal the model of those events.

Then, per engine (on the floor app, one worker; and the real app for the ambiguous request; plus uvicorn with
bench/header_timeout.py's head deadline, for the probes only), the two
robustness checks: (i) a request with both Transfer-Encoding and Content-Length, sent over a raw socket: does
the engine refuse it, or pass it to the app (whose RefuseAmbiguousFraming middleware answers 400)? (ii)
connections that never finish their headers: an idle connection that sends nothing, a partial header then
silence, and a header trickled one line a second, each watched for --probe-seconds: when, if ever, does the
server close it?

The data: a fresh database (bench.run.Database), --events generated events over --users users loaded through
the SQL bulk path (2 writers). Prints markdown tables; docs/benchmarks.md, "Serving engine", records a run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench import asgi, floor
from bench.data import generate, model_digest, model_state
from bench.run import (READ_CHECKS, READ_POOL, SDK_QUERY, Database, bulk, check_answers, check_state, odp_events,
                       payloads)
from bench.wrk import WrkResult, ensure_wrk, free_port, measure, send_once, server, write_bodies
from pyapp.db import connect

ROOT = Path(__file__).resolve().parent.parent
GRANIAN_HEADER_TIMEOUT_MS = 10_000  # --http1-header-read-timeout given to granian (its default: 30,000)
HEAD_DEADLINE_S = GRANIAN_HEADER_TIMEOUT_MS / 1000  # bench/header_timeout.py's, for the probes


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Engine:
    name: str
    kind: str  # "uvicorn" or "granian"
    loop: str = ""
    http: str = ""
    exe: str | None = None  # granian's executable
    probe_only: bool = False  # not in the throughput table

    def command(self, app: str, port: int, workers: int) -> list[str]:
        """The command serving `app` ("floor" or "api") on 127.0.0.1:port with `workers` processes."""
        target = ["bench.floor:app"] if app == "floor" else ["--factory", "bench.asgi:create"]
        if self.kind == "uvicorn":
            return [sys.executable, "-m", "uvicorn", *target, "--host", "127.0.0.1", "--port", str(port),
                    "--workers", str(workers), "--loop", self.loop, "--http", self.http, "--lifespan", "on",
                    "--log-level", "warning", "--no-access-log"]
        return [self.exe, "--interface", "asgi", *target, "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--loop", "uvloop", "--http", "1",
                "--http1-header-read-timeout", str(GRANIAN_HEADER_TIMEOUT_MS), "--log-level", "warning"]


@dataclass
class Result:
    engine: str
    workers: int
    floor: dict[int, WrkResult] = field(default_factory=dict)  # by connections
    graphql: dict[int, WrkResult] = field(default_factory=dict)
    events_rate: float = 0.0
    failed: list[str] = field(default_factory=list)


def find_granian(given: str | None) -> str | None:
    for candidate in (given, shutil.which("granian"), "/tmp/granian-venv/bin/granian"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


# --------------------------------------------------------------------------- robustness probes

AMBIGUOUS = (b"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")


def _read_answer(sock: socket.socket, limit: float) -> tuple[bytes, bool]:
    """What the server sent within `limit` s, and whether it then closed the connection."""
    sock.settimeout(limit)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
            sock.settimeout(1.0)  # the rest of an answer comes at once; then see whether it closes
    except (socket.timeout, TimeoutError):
        return data, False
    except ConnectionResetError:
        return data, True


def probe_ambiguous(port: int, path: str) -> str:
    """Sends a request with both Transfer-Encoding: chunked and Content-Length: what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(AMBIGUOUS.replace(b"{path}", path.encode()))
        data, closed = _read_answer(sock, 5)
    status = data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "no answer"
    code = status.split(" ")[1] if status.startswith("HTTP/") and len(status.split(" ")) > 1 else status
    detail = ""
    if b"ambiguous_framing" in data:
        detail = " ambiguous_framing (the app's middleware)"
    return f"{code}{detail}{', closed' if closed else ', kept open'}"


def probe_slow(port: int, mode: str, limit: float) -> str:
    """A connection that never completes its request head ("idle": sends nothing; "partial": a request line and
    one header, then nothing; "trickle": then one more header line a second): when the server closed it (and
    whether it answered first), or that it was still open after `limit` s."""
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        if mode != "idle":
            sock.sendall(b"POST /v3/graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        n = 0
        while True:
            left = limit - (time.monotonic() - started)
            if left <= 0:
                return f"open after {limit:g} s"
            wait = min(left, 1.0) if mode == "trickle" else left
            sock.settimeout(wait)
            try:
                data = sock.recv(65536)
            except (socket.timeout, TimeoutError):
                if mode == "trickle":
                    n += 1
                    try:
                        sock.sendall(f"X-Trickle-{n}: {n}\r\n".encode())
                    except OSError:
                        return f"closed after {time.monotonic() - started:.1f} s"
                continue
            except ConnectionResetError:
                return f"reset after {time.monotonic() - started:.1f} s"
            elapsed = time.monotonic() - started
            if not data:
                return f"closed after {elapsed:.1f} s"
            status = data.split(b"\r\n", 1)[0].decode(errors="replace")
            return f"answered `{status}` after {elapsed:.1f} s"
    finally:
        sock.close()


def probes(engine: Engine, db_url: str, log_dir: Path, limit: float) -> dict[str, str]:
    out: dict[str, str] = {}
    env = {floor.URL_ENV: db_url, asgi.URL_ENV: db_url, "PYTHONPATH": str(ROOT),
           "BENCH_HEADER_TIMEOUT": str(HEAD_DEADLINE_S)}
    port = free_port()
    with server(engine.command("floor", port, 1), log_dir, f"probe-floor-{engine.kind}", port=port, env=env):
        out["te_cl_engine"] = probe_ambiguous(port, "/nowhere")  # the floor answers 404 there, if asked
        threads, found = [], {}

        def run(mode: str) -> None:
            try:
                found[mode] = probe_slow(port, mode, limit)
            except Exception as exc:  # noqa: BLE001
                found[mode] = f"probe failed: {exc}"

        for mode in ("idle", "partial", "trickle"):
            threads.append(threading.Thread(target=run, args=(mode,)))
            threads[-1].start()
        for t in threads:
            t.join()
        out.update(found)
    port = free_port()
    with server(engine.command("api", port, 1), log_dir, f"probe-api-{engine.kind}", port=port, env=env):
        out["te_cl_app"] = probe_ambiguous(port, "/v3/events")
    return out


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.engines", description=__doc__.split("\n\n")[1])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=40_000)
    ap.add_argument("--audiences", type=int, default=50)
    ap.add_argument("--workers", default="1,2", help="worker counts, comma-separated (default: %(default)s)")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--many", type=int, default=64, help="the second connection count (default: %(default)s)")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--events-sample", type=int, default=50_000)
    ap.add_argument("--probe-seconds", type=float, default=15.0)
    ap.add_argument("--granian", help="granian's executable (default: on $PATH, else /tmp/granian-venv/bin/granian)")
    args = ap.parse_args(argv)
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    conns = list(dict.fromkeys((args.connections, args.many)))

    ensure_wrk()
    engines = [Engine("uvicorn, asyncio + h11", "uvicorn", "asyncio", "h11"),
               Engine("uvicorn, uvloop + httptools", "uvicorn", "uvloop", "httptools")]
    granian = find_granian(args.granian)
    if granian:
        engines.append(Engine("granian (hyper), uvloop", "granian", exe=granian))
    else:
        info("granian not found: its rows are left out (see python -m bench.engines --help)")
    deadline = Engine(f"uvicorn, uvloop + httptools + a {HEAD_DEADLINE_S:g} s head deadline "
                      "(bench/header_timeout.py)", "uvicorn", "uvloop",
                      "bench.header_timeout:HeaderTimeoutHttpToolsProtocol", probe_only=True)

    t0 = time.perf_counter()
    info(f"generating {args.events:,} events over {args.users:,} users ...")
    events = generate(args.events, args.users, args.audiences)
    expected_all = model_digest(events)
    tmp = Path(tempfile.mkdtemp(prefix="pt-engines-"))
    db = Database()
    results: list[Result] = []
    probe_results: dict[str, dict[str, str]] = {}
    try:
        info(f"database: {db.where}; loading through the SQL bulk path ...")
        bulk(db, payloads(events, 2, 100_000))
        check_state(db, expected_all, "the engines' data")
        names = [f"aud_{i:03d}" for i in range(args.audiences)]
        with connect(db.url) as c:
            for name in names:
                c.execute("SELECT passthrough.create_audience(%s, %s)", (name, name))
            public = c.execute("SELECT passthrough.create_api_key(%s, 'public')",
                               (f"engines-{uuid.uuid4().hex[:8]}",)).fetchone()[0]
            private = c.execute("SELECT passthrough.create_api_key(%s, 'private')",
                                (f"engines-{uuid.uuid4().hex[:8]}",)).fetchone()[0]
            c.commit()
        with connect(db.url, autocommit=True) as c:
            c.execute("VACUUM (ANALYZE)")
        subset = names[:: max(1, len(names) // 10)][:10]
        state = model_state(events)
        import random

        import orjson

        identifiers = sorted({e[0] for e in events})
        rng = random.Random(7)
        users = [rng.choice(identifiers) for _ in range(READ_POOL)]

        def expected(user: str) -> list[str]:
            return [a for a in subset if state.get((user, a), (0, False))[1]]

        bodies = [orjson.dumps({"query": SDK_QUERY, "variables": {"userId": u, "audiences": subset}}) for u in users]
        bodies_path = write_bodies(bodies, tmp / "graphql-bodies.txt")
        sample = events[: args.events_sample]
        events_path = write_bodies([orjson.dumps(odp_events(sample[i:i + 500])) for i in range(0, len(sample), 500)],
                                   tmp / "events-bodies.txt")
        env = {floor.URL_ENV: db.url, asgi.URL_ENV: db.url, "PYTHONPATH": str(ROOT)}

        # reads, on the loaded state
        for workers in worker_counts:
            for engine in engines:
                r = Result(engine.name, workers)
                results.append(r)
                for app, key, into in (("floor", None, r.floor), ("api", public, r.graphql)):
                    port = free_port()
                    what = f"{app}-{engine.kind}-{engine.loop or 'uvloop'}-{workers}"
                    headers = {"content-type": "application/json", **({"x-api-key": key} if key else {})}
                    try:
                        with server(engine.command(app, port, workers), tmp, what, port=port, env=env) as base:
                            check_answers(port, f"{app} on {engine.name}", headers, users[:READ_CHECKS], bodies,
                                          expected)
                            for c in conns:
                                info(f"{engine.name}, {workers} worker(s), {app}: wrk {c} connections ...")
                                into[c] = measure(f"{base}/v3/graphql", bodies_path, c, args.warmup, args.seconds,
                                                  key=key)
                    except Exception as exc:  # noqa: BLE001  (reported; the other engines go on)
                        r.failed.append(f"{app}: {type(exc).__name__}: {str(exc)[:200]}")
                        info(f"  failed: {r.failed[-1]}")
        # events, each run from the empty state
        for r in results:
            engine = next(e for e in engines if e.name == r.engine)
            db.reset()
            port = free_port()
            info(f"{engine.name}, {r.workers} worker(s): POST /v3/events, {len(sample):,} events once ...")
            try:
                with server(engine.command("api", port, r.workers), tmp, f"events-{engine.kind}-{port}", port=port,
                            env=env) as base:
                    got = send_once(f"{base}/v3/events", events_path, args.connections, status=202, key=private)
                check_state(db, model_digest(sample), f"POST /v3/events on {engine.name}")
                r.events_rate = len(sample) / got.seconds
            except Exception as exc:  # noqa: BLE001
                r.failed.append(f"events: {type(exc).__name__}: {str(exc)[:200]}")
                info(f"  failed: {r.failed[-1]}")
        for engine in [*engines, deadline]:
            info(f"{engine.name}: robustness probes ({args.probe_seconds:g} s) ...")
            try:
                probe_results[engine.name] = probes(engine, db.url, tmp, args.probe_seconds)
            except Exception as exc:  # noqa: BLE001
                probe_results[engine.name] = {"failed": f"{type(exc).__name__}: {exc}"}
    finally:
        db.close()
        shutil.rmtree(tmp, ignore_errors=True)

    few, many = args.connections, args.many

    def cell(res: dict[int, WrkResult], c: int, what: str = "rate") -> str:
        if c not in res:
            return "-"
        x = res[c]
        return f"{x.rate:,.0f}" if what == "rate" else f"{getattr(x, what):.2f}"

    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.events:,} events, {args.users:,} users; "
        f"{db.where.split(' in ')[0]}, PostgreSQL {db.version}; {os.cpu_count()} CPUs, {platform.machine()}; wrk 1 "
        f"thread, {args.warmup:g} s warm-up + {args.seconds:g} s per read cell, answers checked against the model "
        f"first; events: the first {len(sample):,} in 500-event bodies, each once, from {few} connections into an "
        f"empty state (state = model checked); whole run {time.perf_counter() - t0:.0f} s.",
        "",
        f"| engine | workers | floor q/s ({few}) | floor p99 ms | floor q/s ({many}) | GraphQL q/s ({few}) | p50 ms | "
        f"p99 ms | p99.9 ms | GraphQL / floor | GraphQL q/s ({many}) | p99 ms ({many}) | events/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = (f"{r.graphql[few].rate / r.floor[few].rate:.0%}" if few in r.graphql and few in r.floor else "-")
        lines.append(
            f"| {r.engine} | {r.workers} | {cell(r.floor, few)} | {cell(r.floor, few, 'p99_ms')} | {cell(r.floor, many)} | "
            f"{cell(r.graphql, few)} | {cell(r.graphql, few, 'p50_ms')} | {cell(r.graphql, few, 'p99_ms')} | "
            f"{cell(r.graphql, few, 'p999_ms')} | {ratio} | {cell(r.graphql, many)} | "
            f"{cell(r.graphql, many, 'p99_ms')} | {f'{r.events_rate:,.0f}' if r.events_rate else '-'} |")
    failures = [f"{r.engine}, {r.workers} worker(s): {f}" for r in results for f in r.failed]
    if failures:
        lines += ["", "Failed: " + "; ".join(failures)]
    lines += [
        "",
        f"| engine | TE + CL, engine (floor app) | TE + CL, real app | idle connection | partial header, then "
        f"silence | header trickled, 1 line/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in probe_results.items():
        if "failed" in p:
            lines.append(f"| {name} | probe failed: {p['failed'][:200]} | | | | |")
            continue
        lines.append(f"| {name} | {p['te_cl_engine']} | {p['te_cl_app']} | {p['idle']} | {p['partial']} | "
                     f"{p['trickle']} |")
    lines += ["", f"granian ran with --http1-header-read-timeout {GRANIAN_HEADER_TIMEOUT_MS} (ms; its default is "
              f"30000); uvicorn with its defaults (--timeout-keep-alive 5). The probes: the floor app (404 on the "
              f"probed path: a 404 means the engine passed the request on) and the real app (`POST /v3/events` "
              f"without a key: 400 ambiguous_framing is its middleware's refusal, 401 means it never saw both "
              f"headers), one worker."]
    print("\n".join(lines))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
