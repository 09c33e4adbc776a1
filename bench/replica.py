"""Reads served by a streaming replica (issue 21, item 5): ``replica_section(...)``, called by ``bench.run --replica``.

A primary and its replica (``pg_basebackup -R``, the test harness's pair: tests/replica_fixtures.py) are started
for the section, from the binaries the tests use ($PASSTHROUGH_TEST_PG_BINDIR, else the embedded PostgreSQL's);
the run's events are loaded into the primary by the SQL bulk path and replayed by the replica. Then, measured in
turns (READ_WINDOW-second windows, so both sides share the same minutes of a busy machine): raw SQL point reads on
the primary and on the replica, and GraphQL through two `passthrough serve`: one on the primary alone, one with
``--read-database-url`` (its key checks still go to the primary). On one machine the replica adds no CPU: the rows
show the cost of the replica path per read, not a gain; on separate machines the replica's reads leave the primary.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import orjson

from bench.data import model_state
from bench.run import (READ_CHECKS, READ_POOL, READ_SQL, READ_WINDOW, SDK_QUERY, ReadRow, _free_port,
                       _passthrough_exe, bulk, check_answers, closed_loop, info, payloads, read_row, serve_workers,
                       workers_text)
from bench.wrk import Target, ensure_wrk, interleaved, write_bodies
from bench.wrk import server as wrk_server
from pyapp.db import connect

# One implementation of a real replica, the test harness's (it imports tests/pgcluster.py the same way).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from replica_fixtures import ReplicaPair, replica_bindir, start_pair  # noqa: E402


class _PairDatabase:
    """What bench.run.bulk() needs of a database: its URL."""

    def __init__(self, url: str) -> None:
        self.url = url


def _sql_in_turns(urls: list[str], users: list[str], subset: list[str], clients: int, warmup: float,
                  seconds: float) -> list[tuple[int, float, list[float]]]:
    """closed_loop() point reads against each URL, in READ_WINDOW-second turns until each has had ``seconds``."""
    import psycopg

    def client_for(url: str):
        def open_client():
            conn = psycopg.connect(url, autocommit=True)
            cur = conn.cursor()

            def ask(user: str):
                cur.execute(READ_SQL, ("fs_user_id", user, subset), prepare=True)
                return cur.fetchall()

            return ask, conn.close
        return open_client

    rounds = max(1, round(seconds / READ_WINDOW))
    totals: list[tuple[int, float, list[float]]] = [(0, 0.0, []) for _ in urls]
    for turn in range(rounds):
        for i, url in enumerate(urls):
            count, window, latencies = closed_loop(client_for(url), users, clients, warmup if turn == 0 else 0.0,
                                                   seconds / rounds)
            done, spent, merged = totals[i]
            totals[i] = (done + count, spent + window, merged + latencies)
    return [(count, spent, sorted(merged)) for count, spent, merged in totals]


def _measure(pair: ReplicaPair, events, n_audiences: int, clients: int, warmup: float, seconds: float,
             log_dir: Path) -> tuple[list[ReadRow], str]:
    import random

    names = [f"aud_{i:03d}" for i in range(n_audiences)]
    with connect(pair.primary_url) as c:
        c.execute("SELECT passthrough.enable()")
        for name in names:
            c.execute("SELECT passthrough.create_audience(%s, %s)", (name, name))
        key = c.execute("SELECT passthrough.create_api_key(%s, 'public')", (f"bench-{uuid.uuid4().hex[:8]}",)
                        ).fetchone()[0]
        c.commit()
    info(f"  loading {len(events):,} events into the primary (SQL bulk path, 2 writers) ...")
    bulk(_PairDatabase(pair.primary_url), payloads(events, 2, 100_000), fresh=False)
    pair.caught_up(timeout=600)
    subset = names[:: max(1, len(names) // 10)][:10]
    state = model_state(events)
    identifiers = sorted({identifier for identifier, _, _, _ in events})
    rng = random.Random(7)
    users = [rng.choice(identifiers) for _ in range(READ_POOL)]

    def expected(user: str) -> list[str]:
        return [a for a in subset if state.get((user, a), (0, False))[1]]

    info(f"  raw SQL point reads on the primary and on the replica in turns, {clients} connections ...")
    on_primary, on_replica = _sql_in_turns([pair.primary_url, pair.replica_url], users, subset, clients, warmup,
                                           seconds)
    turns = f"measured in turns, primary and replica ({READ_WINDOW:g} s windows)"
    rows = []
    for where, result in (("the primary", on_primary), ("the replica", on_replica)):
        row = read_row(f"raw SQL point reads on {where} (`customer_audiences`, prepared, psycopg), {clients} "
                       "connections", clients, result, turns)
        row.driver, row.kind = f"Python, {clients} threads", "replica-sql"
        rows.append(row)

    ensure_wrk()
    bodies = [orjson.dumps({"query": SDK_QUERY, "variables": {"userId": u, "audiences": subset}}) for u in users]
    bodies_path = write_bodies(bodies, log_dir / "replica-graphql-bodies.txt")
    workers = serve_workers()
    headers = {"content-type": "application/json", "x-api-key": key}
    ports = _free_port(), _free_port()
    commands = [[_passthrough_exe(), "serve", "--database-url", pair.primary_url, "--no-migrate", "--host",
                 "127.0.0.1", "--port", str(port), "--workers", str(workers)] for port in ports]
    commands[1] += ["--read-database-url", pair.replica_url]
    with wrk_server(commands[0], log_dir, "serve-primary", port=ports[0]) as primary_base, \
            wrk_server(commands[1], log_dir, "serve-replica", port=ports[1]) as replica_base:
        for port, what in zip(ports, ("GraphQL on the primary", "GraphQL on the replica")):
            check_answers(port, what, headers, users[:READ_CHECKS], bodies, expected)
        info(f"  GraphQL customer queries, primary alone and --read-database-url, in turns, wrk, {clients} "
             "connections ...")
        results = interleaved([Target(f"{primary_base}/v3/graphql", clients, key),
                               Target(f"{replica_base}/v3/graphql", clients, key)],
                              bodies_path, warmup, seconds, READ_WINDOW)
    checked = f"answers = model ({READ_CHECKS} checked); {turns}"
    for where, result in (("on the primary", results[0]),
                          ("on the replica (`--read-database-url`; the key checked on the primary beside it)",
                           results[1])):
        rows.append(ReadRow.from_wrk(f"GraphQL `customer` query, `passthrough serve` {where}, "
                                     f"{workers_text(workers)}, {clients} connections", result, checked,
                                     "replica-graphql"))
    described = (f"Replica reads: a primary and a streaming replica of it (PostgreSQL {pair_version(pair)}, "
                 f"fsync=off, both on this machine's CPUs), {len(events):,} events loaded into the primary and "
                 f"replayed; the same {len(subset)}-audience subset and users as the point reads above; "
                 f"{warmup:g} s warm-up, then {seconds:g} s measured per row. A replica on the same machine adds "
                 "no CPU: the rows give the cost of reading on a replica (for GraphQL, the replica's statement "
                 "and the primary's key check at once), not the capacity a separate replica adds.")
    return rows, described


def pair_version(pair: ReplicaPair) -> str:
    with connect(pair.replica_url, autocommit=True) as c:
        return c.execute("SHOW server_version").fetchone()[0]


def replica_table(rows: list[ReadRow]) -> str:
    lines = ["| read (replica) | load generator | connections | queries | seconds | queries/s | p50 ms | p99 ms | "
             "p99.9 ms | vs the same on the primary | note |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for i, r in enumerate(rows):
        if not r.measured:
            lines.append(f"| {r.path} | - | - | - | - | - | - | - | - | - | {r.note} |")
            continue
        primary = rows[i - 1] if i % 2 and rows[i - 1].measured else None
        ratio = f"{r.rate / primary.rate:.1%}" if primary and primary.rate else "-"
        lines.append(f"| {r.path} | {r.driver} | {r.clients} | {r.queries:,} | {r.seconds:.1f} | {r.rate:,.0f} | "
                     f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.p999_ms:.2f} | {ratio} | {r.note} |")
    return "\n".join(lines)


def replica_section(events, n_audiences: int, clients: int, warmup: float, seconds: float, log_dir: Path) -> str:
    """The replica rows as a markdown table and a line describing them; a pair that cannot start, or a
    measurement that fails, is reported in the table (the rest of the run stands)."""
    info(f"reads served by a streaming replica ({replica_bindir()}) ...")
    try:
        pair = start_pair(replica_bindir())
    except Exception as exc:  # noqa: BLE001
        failed = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
        info(f"  {failed}")
        return replica_table([ReadRow("reads on a streaming replica", note=failed, measured=False)])
    try:
        rows, described = _measure(pair, events, n_audiences, clients, warmup, seconds, log_dir)
    except Exception as exc:  # noqa: BLE001
        failed = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
        info(f"  {failed}")
        return replica_table([ReadRow("reads on a streaming replica", note=failed, measured=False)])
    finally:
        pair.replica.stop()
        pair.primary.stop()
    return f"{replica_table(rows)}\n\n{described}"
