"""``make bench``: every loading path measured in one run against a fresh database.

    python -m bench.run [--events 1000000] [--users 200000] [--audiences 50] [--batch-size 100000]
                        [--naive-sample 20000] [--no-write]

The database is a fresh embedded PostgreSQL 18 in a temp dir (durable defaults: fsync on), or, when
$PASSTHROUGH_DATABASE_URL is set, a new database created on that server (dropped afterwards). The
results table is printed and written between the markers in docs/benchmarks.md (unless --no-write).
Every bulk path must reproduce the final state of bench/data.py's model exactly; a mismatch fails the run.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.data import generate, model_digest, sql_digest, ts_text
from pyapp import migrate
from pyapp.db import connect, with_database
from pyapp.load import StagedRow, format_row, load_rows, route

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
RAW_DDL = """
CREATE TABLE bench_raw_{n} (
  row_no bigint, type text, action text, identifier_type text, identifier text, audience_id text,
  ts numeric, idempotence_id text, identifier_count integer, transport_problems text[])
"""
NAIVE_DDL = """
CREATE TABLE bench_naive (
  identifier_type_id smallint NOT NULL, identifier text COLLATE "C" NOT NULL, audience_key integer NOT NULL,
  qualified boolean NOT NULL, event_ts timestamptz NOT NULL,
  PRIMARY KEY (identifier_type_id, identifier, audience_key))
"""
NAIVE_SQL = """
INSERT INTO bench_naive AS m (identifier_type_id, identifier, audience_key, qualified, event_ts)
VALUES (1, %s, %s, %s, to_timestamp(0) + %s * interval '1 microsecond')
ON CONFLICT (identifier_type_id, identifier, audience_key) DO UPDATE
  SET qualified = EXCLUDED.qualified, event_ts = EXCLUDED.event_ts
  WHERE EXCLUDED.event_ts > m.event_ts OR (EXCLUDED.event_ts = m.event_ts AND m.qualified AND NOT EXCLUDED.qualified)
"""


@dataclass
class Row:
    path: str
    events: int
    seconds: float
    note: str = ""
    measured: bool = True

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- database


class Database:
    def __init__(self) -> None:
        self._cleanup = None
        given = os.environ.get("PASSTHROUGH_DATABASE_URL")
        if given:
            name = f"passthrough_bench_{uuid.uuid4().hex[:12]}"
            admin = with_database(given, "postgres")
            with connect(admin, autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{name}"')
            self.url = with_database(given, name)
            self.where = f"a new database on $PASSTHROUGH_DATABASE_URL's server"

            def drop() -> None:
                with connect(admin, autocommit=True) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

            self._cleanup = drop
        else:
            from pyapp.embedded import PG_MAJOR, EmbeddedPostgres

            base = Path(tempfile.mkdtemp(prefix="pt-bench-"))
            pg = EmbeddedPostgres(base, delete_on_stop=True)
            self.url = pg.start()
            self.where = f"a fresh embedded PostgreSQL {PG_MAJOR} (durable defaults) in {base}"

            def stop() -> None:
                try:
                    pg.stop()
                finally:
                    shutil.rmtree(base, ignore_errors=True)

            self._cleanup = stop
        with connect(self.url) as c:
            migrate.migrate(c)
            c.execute("SELECT passthrough.enable()")
            self.version = c.execute("SHOW server_version").fetchone()[0]
            self.settings = dict(c.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('fsync', 'synchronous_commit', 'shared_buffers', 'max_wal_size', 'wal_level')").fetchall())

    def close(self) -> None:
        if self._cleanup:
            self._cleanup()
            self._cleanup = None

    def reset(self) -> None:
        with connect(self.url, autocommit=True) as c:
            c.execute("TRUNCATE passthrough.memberships, passthrough.events, passthrough.batches,"
                      " passthrough.audience_size_deltas, passthrough.audiences, passthrough.external_audiences"
                      " RESTART IDENTITY")
            c.execute("CHECKPOINT")


# --------------------------------------------------------------------------- measurements


def payloads(events, writers: int, batch_size: int) -> list[list[bytes]]:
    """COPY payloads per writer, rows routed by identifier; each payload is one batch."""
    per: list[list[str]] = [[] for _ in range(writers)]
    for n, (identifier, audience, qualified, ts) in enumerate(events, 1):
        row = StagedRow(type="passthrough", action="qualify" if qualified else "disqualify",
                        identifier_type="fs_user_id", identifier=identifier, audience_id=audience,
                        ts=ts_text(ts))
        per[route(identifier, writers)].append(format_row(n, row))
    return [[("".join(rows[i:i + batch_size])).encode() for i in range(0, len(rows), batch_size)]
            for rows in per]


def parallel(worker, jobs) -> float:
    errors: list[BaseException] = []

    def run(job):
        try:
            worker(job)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def raw_copy(db: Database, streams: list[list[bytes]], n: int) -> float:
    with connect(db.url, autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS bench_raw_{n}")
        c.execute(RAW_DDL.format(n=n))
        c.execute("CHECKPOINT")

    def worker(batches):
        with connect(db.url) as conn:
            cur = conn.cursor()
            for payload in batches:
                with cur.copy(f"COPY bench_raw_{n} FROM STDIN") as cp:
                    cp.write(payload)
                conn.commit()

    return parallel(worker, streams)


def naive(db: Database, events) -> float:
    with connect(db.url, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS bench_naive")
        c.execute(NAIVE_DDL)
        c.execute("CHECKPOINT")
    with connect(db.url, autocommit=True) as c:
        cur = c.cursor()
        params = [(i, int(a[4:]) + 1, q, ts - 0) for i, a, q, ts in events]
        started = time.perf_counter()
        for p in params:
            cur.execute(NAIVE_SQL, p, prepare=True)
        return time.perf_counter() - started


def bulk(db: Database, streams: list[list[bytes]]) -> float:
    db.reset()

    def worker(batches):
        with connect(db.url) as conn:
            for payload in batches:
                load_rows(conn, payload, source="bench")
                conn.commit()

    return parallel(worker, streams)


def check_state(db: Database, expected, label: str) -> str:
    with connect(db.url) as c:
        got = sql_digest(c)
    if got != expected:
        raise SystemExit(f"FAILED: {label} left state {got}, the model says {expected}")
    return "state = model"


def cli_load(db: Database, ndjson: Path, writers: int, batch_size: int) -> float:
    db.reset()
    exe = Path(sys.executable).with_name("passthrough")
    cmd = [str(exe) if exe.exists() else "passthrough", "load", str(ndjson), "--database-url", db.url,
           "--writers", str(writers), "--batch-size", str(batch_size), "--quiet", "--source", "bench-cli"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"FAILED: passthrough load exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    info("  " + proc.stdout.strip())
    return elapsed


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_events(db: Database, events, clients: int, batch: int = 500) -> float | None:
    """POST /v3/events with `batch`-event bodies from `clients` keep-alive connections to a real uvicorn
    server (`passthrough serve`). None when the HTTP API is not there."""
    try:
        import httpx
        import orjson

        import pyapp.web.app  # noqa: F401
    except ImportError as exc:
        info(f"  HTTP API not available ({exc}); slot left empty")
        return None
    db.reset()
    with connect(db.url) as c:
        key = c.execute("SELECT passthrough.create_api_key(%s, 'public')", (f"bench-{uuid.uuid4().hex[:8]}",)
                        ).fetchone()[0]
    bodies = []
    for i in range(0, len(events), batch):
        bodies.append(orjson.dumps([
            {"type": "passthrough", "action": "qualify" if q else "disqualify", "identifiers": {"fs_user_id": ident},
             "data": {"audience_id": aud, "ts": float(ts_text(ts))}}
            for ident, aud, q, ts in events[i:i + batch]]))
    port = _free_port()
    exe = Path(sys.executable).with_name("passthrough")
    server = subprocess.Popen(
        [str(exe), "serve", "--database-url", db.url, "--no-migrate", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                # /healthz, not /readyz: the database was migrated by this run; readyz would also compare it
                # with pyapp/sql as it is now, which a concurrent `make sql` may have changed
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("passthrough serve did not start: "
                                   + (server.stderr.read()[-500:] if server.poll() is not None else "timeout"))
            time.sleep(0.2)
        shares = [bodies[i::clients] for i in range(clients)]

        def worker(mine):
            with httpx.Client(base_url=base, headers={"x-api-key": key, "content-type": "application/json"},
                              timeout=60) as client:
                for body in mine:
                    response = client.post("/v3/events", content=body)
                    if response.status_code != 202:
                        raise RuntimeError(f"POST /v3/events: {response.status_code} {response.text[:300]}")

        return parallel(worker, shares)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def write_ndjson(events, path: Path) -> None:
    import orjson

    with open(path, "wb") as f:
        for identifier, audience, qualified, ts in events:
            f.write(orjson.dumps({
                "type": "passthrough", "action": "qualify" if qualified else "disqualify",
                "identifiers": {"fs_user_id": identifier},
                "data": {"audience_id": audience, "ts": float(ts_text(ts))
                         if len(ts_text(ts)) <= 17 else ts_text(ts)},
            }))
            f.write(b"\n")


# --------------------------------------------------------------------------- report


def table(rows: list[Row], raw2: float, naive_rate: float) -> str:
    lines = ["| path | events | seconds | events/s | vs raw COPY 2 streams | vs naive | note |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if not r.measured:
            lines.append(f"| {r.path} | - | - | - | - | - | {r.note} |")
            continue
        lines.append(
            f"| {r.path} | {r.events:,} | {r.seconds:.2f} | {r.rate:,.0f} | {r.rate / raw2:.1%} | "
            f"{r.rate / naive_rate:,.1f}x | {r.note} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.run")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--audiences", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=100_000)
    ap.add_argument("--naive-sample", type=int, default=20_000)
    ap.add_argument("--http-sample", type=int, default=200_000, help="events sent over HTTP")
    ap.add_argument("--http-clients", type=int, default=4)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    load_before = os.getloadavg()
    info(f"generating {args.events:,} events over {args.users:,} users x {args.audiences} audiences ...")
    events = generate(args.events, args.users, args.audiences)
    expected = model_digest(events)
    info(f"  model: {expected[1]:,} pairs, {expected[2]:,} qualified")
    one = payloads(events, 1, args.batch_size)
    two = payloads(events, 2, args.batch_size)
    tmp = Path(tempfile.mkdtemp(prefix="pt-bench-data-"))
    ndjson = tmp / "events.ndjson"
    write_ndjson(events, ndjson)

    db = Database()
    rows: list[Row] = []
    n = len(events)
    try:
        info(f"database: {db.where}, PostgreSQL {db.version}")
        info("raw COPY, 1 stream ...")
        rows.append(Row("raw `COPY` into an unindexed table, 1 stream", n, raw_copy(db, one, 1)))
        info("raw COPY, 2 streams ...")
        raw2 = Row("raw `COPY` into an unindexed table, 2 streams", n, raw_copy(db, two, 2))
        rows.append(raw2)
        sample = events[: args.naive_sample]
        info(f"naive per-event upsert, autocommit, {len(sample):,}-event sample ...")
        naive_row = Row("naive: one upsert per event, autocommit", len(sample), naive(db, sample),
                        f"first {len(sample):,} events, rate extrapolated")
        rows.append(naive_row)
        info("SQL bulk path, 1 writer ...")
        r = Row("SQL bulk path (COPY -> `load_staged`), 1 writer, with event log", n, bulk(db, one))
        r.note = check_state(db, expected, r.path)
        rows.append(r)
        info("SQL bulk path, 2 writers ...")
        bulk2 = Row("SQL bulk path (COPY -> `load_staged`), 2 writers, with event log", n, bulk(db, two))
        bulk2.note = check_state(db, expected, bulk2.path)
        rows.append(bulk2)
        info("passthrough load (NDJSON file, 2 writers) ...")
        r = Row("`passthrough load` end to end, NDJSON file, 2 writers", n,
                cli_load(db, ndjson, 2, args.batch_size))
        r.note = check_state(db, expected, r.path) + "; includes process start and parsing"
        rows.append(r)
        sample = events[: args.http_sample]
        info(f"HTTP POST /v3/events, {len(sample):,} events in 500-event batches, {args.http_clients} clients ...")
        try:
            seconds = http_events(db, sample, args.http_clients)
            failed = "slot: HTTP API not available"
        except Exception as exc:  # noqa: BLE001  (reported in the table; the other rows stand)
            seconds, failed = None, f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            info(f"  {failed}")
        if seconds is None:
            rows.append(Row("HTTP `POST /v3/events`, 500-event batches", 0, 0, failed, measured=False))
        else:
            r = Row(f"HTTP `POST /v3/events` (uvicorn, `passthrough serve`), 500-event batches, "
                    f"{args.http_clients} client connections", len(sample), seconds)
            r.note = check_state(db, model_digest(sample), r.path) + f"; first {len(sample):,} events"
            rows.append(r)
        # SLOT: GraphQL `customer(fs_user_id) { audiences(subset: [10 names]) }` queries/s with p50/p99, beside
        # raw SQL point reads of the same question (passthrough.customer_audiences). Not measured yet.
        rows.append(Row("GraphQL customer queries (10-audience subset), p50/p99, vs raw SQL point reads", 0, 0,
                        "slot: not measured yet", measured=False))
    finally:
        db.close()
        shutil.rmtree(tmp, ignore_errors=True)

    total = time.perf_counter() - t0
    load_after = os.getloadavg()
    result = table(rows, raw2.rate, naive_row.rate)
    targets = (
        f"Targets: 2 writers >= 15% of raw 2-stream COPY: **{bulk2.rate / raw2.rate:.1%}** "
        f"({'met' if bulk2.rate / raw2.rate >= 0.15 else 'NOT met'}); "
        f">= 60x naive: **{bulk2.rate / naive_row.rate:,.0f}x** "
        f"({'met' if bulk2.rate / naive_row.rate >= 60 else 'NOT met'})."
    )
    header = (
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.events:,} events, {args.users:,} users x "
        f"{args.audiences} audiences, batch size {args.batch_size:,}; {db.where.split(' in ')[0]}, PostgreSQL "
        f"{db.version} (fsync={db.settings.get('fsync')}, synchronous_commit={db.settings.get('synchronous_commit')}); "
        f"{os.cpu_count()} CPUs, {platform.machine()}; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after; whole run {total:.0f} s. All ratios come from this one run."
    )
    report = f"{header}\n\n{result}\n\n{targets}\n"
    print(report)
    if not args.no_write and DOCS.exists():
        text = DOCS.read_text()
        if BEGIN in text and END in text:
            text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), f"{BEGIN}\n{report}{END}", text, flags=re.S)
            DOCS.write_text(text)
            info(f"results written to {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
