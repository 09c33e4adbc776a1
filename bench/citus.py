"""Citus beside one server (issue 21, item 6): ``citus_section(...)``, called by ``bench.run --citus``.

A local Citus cluster, a coordinator and two workers (the test harness's: tests/citus_cluster.py), is started for
the section; Passthrough is migrated into the coordinator's database and distributed (``passthrough.distribute()``),
and into a second database of the same coordinator server without Citus: the single-node side, on the same
PostgreSQL 15 binaries and settings. Each row runs on both, one after the other, and checks the state against the
model (bench/data.py): `apply_events` in 500-event batches over 2 connections, the SQL bulk path with 2 writers,
then raw SQL point reads (`customer_audiences`, in turns). On one machine the workers add no CPU: the rows give
the cost per event and per read of the distributed path (two-phase commit, coordinator-to-worker round trips).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from bench.data import model_digest, model_state
from bench.run import READ_POOL, READ_SQL, READ_WINDOW, ReadRow, Row, bulk, check_state, info, json_batches, payloads, read_row
from bench.run import sql_apply_events
from pyapp import migrate
from pyapp.db import connect, with_database

# One implementation of a local Citus cluster, the test harness's (it imports tests/pgcluster.py the same way).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from citus_cluster import CitusCluster, bindir, start_citus_cluster  # noqa: E402

SINGLE_DATABASE = "passthrough_single"
KEEP_TABLES = ("settings", "identifier_types", "api_keys")


class _NodeDatabase:
    """What bench.run's bulk() and sql_apply_events() need of a database: its URL, and reset() to the empty state
    (bench.run.Database.reset's tables, without the shards a Citus coordinator keeps of its reference tables)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def reset(self) -> None:
        with connect(self.url, autocommit=True) as c:
            tables = [t for (t,) in c.execute(
                "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'passthrough' AND c.relkind IN ('r', 'p') AND c.relname <> ALL (%s)"
                " AND c.relname !~ '_[0-9]+$' ORDER BY 1", (list(KEEP_TABLES),)).fetchall()]
            c.execute(f"TRUNCATE {', '.join(tables)}")
            c.execute("CHECKPOINT")


def _install(cluster: CitusCluster) -> tuple[_NodeDatabase, _NodeDatabase]:
    """(single node, Citus): Passthrough migrated into both databases, the Citus one distributed."""
    single_url = with_database(cluster.coordinator.url, SINGLE_DATABASE)
    with connect(cluster.coordinator.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {SINGLE_DATABASE}")
    for url in (single_url, cluster.url):
        with connect(url) as c:
            migrate.migrate(c)
            c.execute("SELECT passthrough.enable()")
    with connect(cluster.url, autocommit=True) as c:
        c.execute("SELECT * FROM passthrough.distribute()")
    return _NodeDatabase(single_url), _NodeDatabase(cluster.url)


def _reads_in_turns(dbs, users: list[str], subset: list[str], clients: int, warmup: float, seconds: float):
    from bench.replica import _sql_in_turns  # the primary/replica reads, the same turns

    return _sql_in_turns([db.url for db in dbs], users, subset, clients, warmup, seconds)


def _measure(cluster: CitusCluster, events, json_events, n_audiences: int, clients: int, warmup: float,
             seconds: float) -> tuple[list[Row], list[ReadRow], str]:
    single, citus = _install(cluster)
    sides = (("single node", single), ("Citus, 2 workers", citus))
    expected, json_expected = model_digest(events), model_digest(json_events)
    write_rows: list[Row] = []
    streams = json_batches(json_events, 2, 500)
    for where, db in sides:
        info(f"  SQL apply_events, 500-event batches, 2 connections, {len(json_events):,} events, {where} ...")
        r = Row(f"SQL `apply_events` (JSON), 500-event batches, 2 connections, {where}", len(json_events),
                sql_apply_events(db, streams))
        r.note = check_state(db, json_expected, r.path)
        write_rows.append(r)
    two = payloads(events, 2, 100_000)
    for where, db in sides:
        info(f"  SQL bulk path, 2 writers, {len(events):,} events, {where} ...")
        r = Row(f"SQL bulk path (COPY -> `load_staged`), 2 writers, {where}", len(events), bulk(db, two))
        r.note = check_state(db, expected, r.path)
        write_rows.append(r)

    # Both now hold the whole run's state (= model): the point reads ask about it.
    names = [f"aud_{i:03d}" for i in range(n_audiences)]
    subset = names[:: max(1, len(names) // 10)][:10]
    state = model_state(events)
    identifiers = sorted({identifier for identifier, _, _, _ in events})
    rng = random.Random(7)
    users = [rng.choice(identifiers) for _ in range(READ_POOL)]
    for where, db in sides:  # one audience per external id, as an operator would; a few answers checked
        with connect(db.url, autocommit=True) as c:
            for name in names:
                c.execute("SELECT passthrough.create_audience(%s, %s)", (name, name))
            for user in users[:50]:
                got = sorted(a for (a, *_) in c.execute(READ_SQL, ("fs_user_id", user, subset)).fetchall())
                want = sorted(a for a in subset if state.get((user, a), (0, False))[1])
                if got != want:
                    raise SystemExit(f"FAILED: customer_audiences on {where} for {user}: {got}, the model {want}")
    info(f"  raw SQL point reads, single node and Citus in turns, {clients} connections ...")
    results = _reads_in_turns([single, citus], users, subset, clients, warmup, seconds)
    read_rows = []
    for (where, _), result in zip(sides, results):
        row = read_row(f"raw SQL point reads (`customer_audiences`, prepared, psycopg), {where}", clients, result,
                       f"answers = model (50 checked); in turns ({READ_WINDOW:g} s windows)")
        row.driver, row.kind = f"Python, {clients} threads", "citus-sql"
        read_rows.append(row)
    with connect(citus.url, autocommit=True) as c:
        version = c.execute("SELECT current_setting('server_version'), citus_version()").fetchone()
        shards = c.execute("SHOW citus.shard_count").fetchone()[0]
    described = (f"Citus beside one server: a coordinator and 2 workers (PostgreSQL {version[0]}, "
                 f"{version[1].split(' on ')[0]}, {shards} shards per distributed table), every node on this "
                 "machine's CPUs; the single-node rows use a database of the same coordinator server without "
                 "Citus. Each write row from the empty state, state = model on both; the reads ask the same "
                 f"{len(subset)}-audience subset and users, {warmup:g} s warm-up, then {seconds:g} s measured per "
                 "row. On one machine the workers add no CPU: the ratios give the distributed path's overhead "
                 "per event and per read, not the capacity separate workers add.")
    return write_rows, read_rows, described


def citus_tables(write_rows: list[Row], read_rows: list[ReadRow]) -> str:
    lines = ["| write (Citus) | events | seconds | events/s | µs per event | vs single node | note |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for i, r in enumerate(write_rows):
        if not r.measured:
            lines.append(f"| {r.path} | - | - | - | - | - | {r.note} |")
            continue
        single = write_rows[i - 1] if i % 2 else None
        ratio = f"{r.rate / single.rate:.1%}" if single and single.rate else "-"
        lines.append(f"| {r.path} | {r.events:,} | {r.seconds:.2f} | {r.rate:,.0f} | "
                     f"{1e6 * r.seconds / r.events:,.0f} | {ratio} | {r.note} |")
    lines += ["", "| read (Citus) | load generator | connections | queries | seconds | queries/s | p50 ms | p99 ms | "
              "p99.9 ms | vs single node | note |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for i, r in enumerate(read_rows):
        single = read_rows[i - 1] if i % 2 else None
        ratio = f"{r.rate / single.rate:.1%}" if single and single.rate else "-"
        lines.append(f"| {r.path} | {r.driver} | {r.clients} | {r.queries:,} | {r.seconds:.1f} | {r.rate:,.0f} | "
                     f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.p999_ms:.2f} | {ratio} | {r.note} |")
    return "\n".join(lines)


def citus_section(events, json_events, n_audiences: int, clients: int, warmup: float, seconds: float) -> str:
    """The Citus rows as markdown tables and a line describing them; a cluster that cannot start, or a
    measurement that fails, is reported in the table (the rest of the run stands)."""
    info(f"Citus beside one server ({bindir()}) ...")
    cluster = None
    try:
        cluster = start_citus_cluster()
        write_rows, read_rows, described = _measure(cluster, events, json_events, n_audiences, clients, warmup,
                                                    seconds)
    except Exception as exc:  # noqa: BLE001
        failed = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
        info(f"  {failed}")
        return citus_tables([Row("Citus beside one server", 0, 0, failed, measured=False)], [])
    finally:
        if cluster is not None:
            cluster.stop()
    return f"{citus_tables(write_rows, read_rows)}\n\n{described}"
