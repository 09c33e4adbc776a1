"""Bulk loading of passthrough events: files in, COPY out, SQL decides.

The SQL side (sql/functions/170_bulk_load.sql) owns every rule: ``passthrough.begin_load()`` gives the session a
staging table, rows are COPYed into it, and ``passthrough.load_staged()`` validates them with the rules
every transport shares and applies them through the one writer, event log included. This module only
parses the transport (NDJSON, JSON arrays, CSV; plain or gzip; ``-`` for stdin), turns each record into
a staging row (noting what only the transport can see, e.g. a JSON number where a string belongs), and
runs several writer connections in parallel. Rows are routed to writers by a hash of the identifier, so
two writers never touch the same (identifier, audience) pair and never wait for each other's row locks.

A crashed load can simply be run again from the start: the state is a function of the set of events,
so replayed events change nothing (the event log keeps the duplicates, as it does for any resend).

``load_rows(conn, payload)`` works with psycopg and pg8000 connections alike.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
import json
import queue
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import IO, Any

import orjson

from pyapp.jsontypes import json_type

__all__ = [
    "COPY_COLUMNS",
    "COPY_SQL",
    "InputError",
    "LoadFailed",
    "LoadRefused",
    "LoadResult",
    "LoadSummary",
    "StagedRow",
    "copy_chunks",
    "copy_rows",
    "stage",
    "event_to_row",
    "format_row",
    "load_files",
    "load_rows",
    "read_records",
    "register_staged_audiences",
    "route",
]

COPY_COLUMNS = (
    "row_no", "type", "action", "identifier_type", "identifier", "audience_id", "ts", "idempotence_id",
    "identifier_count", "transport_problems", "identifiers",
)
COPY_SQL = f"COPY pg_temp.passthrough_load ({', '.join(COPY_COLUMNS)}) FROM STDIN"
DEFAULT_BATCH_SIZE = 50_000
DEFAULT_WRITERS = 2

# --------------------------------------------------------------------------- the SQL calls


@dataclass(frozen=True)
class LoadResult:
    load_id: int
    batch_id: int | None
    accepted: int
    ignored: int
    rejected: int
    changed: int


class LoadRefused(Exception):
    """passthrough.load_staged refused the staged rows (SQLSTATE PT020): nothing of them was stored."""

    def __init__(self, message: str, invalid: list[dict], hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.invalid = invalid  # [{"row": row_no, "message": ..., "problems": [...]}], at most 100
        self.hint = hint


def sql_error_fields(exc: BaseException) -> tuple[str | None, str, str | None, str | None]:
    """(sqlstate, message, detail, hint) of a psycopg or pg8000 error."""
    diag = getattr(exc, "diag", None)
    if diag is not None:  # psycopg
        return diag.sqlstate, diag.message_primary or str(exc), diag.message_detail, diag.message_hint
    fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}  # pg8000
    return fields.get("C"), fields.get("M", str(exc)), fields.get("D"), fields.get("H")


def _is_pg8000(conn: Any) -> bool:
    return type(conn).__module__.startswith("pg8000")


def copy_rows(conn: Any, payload: bytes | Iterable[bytes]) -> None:
    """COPY ``payload`` (text-format rows of COPY_COLUMNS) into this session's staging table.

    ``payload`` is the rows, or an iterable of chunks of them (each any number of whole rows) that is
    read as the COPY goes: a stream is never held in memory. An exception raised by the iterable
    propagates (psycopg aborts the COPY first; a pg8000 connection is left unusable: close it)."""
    cur = conn.cursor()
    whole = isinstance(payload, (bytes, bytearray))
    if _is_pg8000(conn):
        cur.execute(COPY_SQL, stream=io.BytesIO(payload) if whole else payload)
    else:
        chunks = [payload] if whole else payload
        with cur.copy(COPY_SQL) as copy:
            for chunk in chunks:
                copy.write(chunk)


def stage(conn: Any, payload: bytes | Iterable[bytes]) -> Any:
    """Fill this session's staging table (passthrough.begin_load) with ``payload`` (see copy_rows); returns a cursor."""
    cur = conn.cursor()
    cur.execute("SELECT passthrough.begin_load()")
    cur.fetchall()
    copy_rows(conn, payload)
    return cur


def register_staged_audiences(conn: Any) -> int:
    """Register the staged rows' new audience ids (passthrough.register_staged_audiences) and commit.

    Parallel writers call it between ``stage`` and load_staged: without it, a writer whose batch names an
    audience id that another writer's open batch named first waits for that whole batch to commit. It
    commits the connection's transaction; the staged rows stay (the staging table is the session's).
    Returns how many ids were new."""
    cur = conn.cursor()
    cur.execute("SELECT passthrough.register_staged_audiences()")
    (registered,) = cur.fetchone()
    conn.commit()
    return int(registered)


def load_rows(
    conn: Any, payload: bytes, *, source: str = "load", rejects: bool = False, skip_other_types: bool = False,
    register_audiences: bool = False,
) -> LoadResult:
    """Stage ``payload`` and apply it with passthrough.load_staged, in the connection's transaction.

    The caller commits. Raises LoadRefused (PT020) when rows are invalid and ``rejects`` is false; other
    database errors propagate as the driver raised them. With ``register_audiences`` (what parallel
    writers do) the new audience ids are registered and committed first (register_staged_audiences), so
    the transaction the caller commits holds the load alone; the load is still all or nothing.
    """
    cur = stage(conn, payload)
    if register_audiences:
        register_staged_audiences(conn)
    try:
        cur.execute(
            "SELECT load_id, batch_id, accepted, ignored, rejected, changed"
            " FROM passthrough.load_staged(%s, %s, %s)",
            (source, rejects, skip_other_types),
        )
    except Exception as exc:
        sqlstate, message, detail, hint = sql_error_fields(exc)
        if sqlstate == "PT020":
            raise LoadRefused(message, json.loads(detail or "[]"), hint) from exc
        raise
    return LoadResult(*(int(v) if v is not None else None for v in cur.fetchone()))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- staging rows


@dataclass
class StagedRow:
    """One record as the staging table takes it. None is SQL NULL (missing)."""

    type: str | None = None
    action: str | None = None
    identifier_type: str | None = None
    identifier: str | None = None
    audience_id: str | None = None
    ts: str | None = None  # decimal text, seconds since the Unix epoch
    idempotence_id: str | None = None
    identifier_count: int | None = 1
    problems: list[str] = field(default_factory=list)  # what only the transport can see
    identifiers: str | None = None  # JSON text of every identifier, when the event named more than one


def _esc(value: str | None) -> str:
    if value is None:
        return "\\N"
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _array_literal(items: list[str]) -> str:
    return "{" + ",".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items) + "}"


_NULL = "\\N"


def format_row(row_no: int, row: StagedRow) -> str:
    """The COPY text line (with its newline) for one staging row."""
    count = _NULL if row.identifier_count is None else row.identifier_count
    problems = _esc(_array_literal(row.problems)) if row.problems else _NULL
    return (
        f"{row_no}\t{_esc(row.type)}\t{_esc(row.action)}\t{_esc(row.identifier_type)}\t{_esc(row.identifier)}\t"
        f"{_esc(row.audience_id)}\t{_esc(row.ts)}\t{_esc(row.idempotence_id)}\t{count}\t{problems}\t"
        f"{_esc(row.identifiers)}\n"
    )


def route(identifier: str | None, writers: int) -> int:
    """The writer for an identifier: the same identifier always goes to the same writer."""
    if writers <= 1 or identifier is None:
        return 0
    return zlib.crc32(identifier.encode("utf-8", "surrogatepass")) % writers


# --------------------------------------------------------------------------- transports


def _json_text(value: Any) -> str | None:
    """What PostgreSQL's ``value #>> '{}'`` gives: a string as is, anything else as JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    return orjson.dumps(value).decode()


def _number_text(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def event_to_row(event: Any) -> StagedRow:
    """An ODP event object (as the SDKs send it) to a staging row."""
    if not isinstance(event, dict):
        return StagedRow(identifier_count=None, problems=[f"event: must be a JSON object, got {json_type(event)}"])
    row = StagedRow(type=_json_text(event.get("type")), action=_json_text(event.get("action")))
    problems = row.problems
    data = event.get("data")
    if data is not None and not isinstance(data, dict):
        problems.append(f"data: must be an object, got {json_type(data)}")
    ids = event.get("identifiers")
    if isinstance(ids, dict):
        row.identifier_count = len(ids)
        if len(ids) == 1:
            ((key, value),) = ids.items()
            row.identifier_type = key
            if value is not None and not isinstance(value, str):
                problems.append(f"identifiers.{key[:64]}: must be a string, got {json_type(value)}")
            row.identifier = _json_text(value)
        elif ids:  # SQL picks the one that keys the event (passthrough._key_identifier)
            row.identifiers = orjson.dumps(ids, default=float).decode()  # a Decimal is a JSON number
    else:
        row.identifier_count = None
    if isinstance(data, dict):
        audience = data.get("audience_id")
        if audience is not None and not isinstance(audience, str):
            problems.append(f"data.audience_id: must be a string, got {json_type(audience)}")
        row.audience_id = _json_text(audience)
        ts = data.get("ts")
        if ts is not None:
            if json_type(ts) == "number":
                row.ts = _number_text(ts)
            else:
                problems.append(f"data.ts: must be a number of seconds since the Unix epoch, got {json_type(ts)}")
        idem = data.get("idempotence_id")
        if idem is not None:
            if isinstance(idem, str):
                row.idempotence_id = idem
            else:
                problems.append(f"data.idempotence_id: must be a string, got {json_type(idem)}")
    return row


CSV_REQUIRED = ("type", "action", "audience_id", "ts")
CSV_OPTIONAL = ("idempotence_id",)


class InputError(ValueError):
    """A file that cannot be read as any supported format (not a row-level problem)."""


def csv_identifier_column(header: list[str], name: str) -> str:
    """The one identifier column of an ODP-convention CSV header, or InputError."""
    columns = [h.strip() for h in header]
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if missing:
        raise InputError(
            f"{name}: the CSV header must name {', '.join(CSV_REQUIRED)} and one identifier column; "
            f"missing {', '.join(missing)} (header: {', '.join(columns)})"
        )
    others = [c for c in columns if c not in CSV_REQUIRED + CSV_OPTIONAL]
    if len(others) != 1:
        raise InputError(
            f"{name}: the CSV header must have exactly one identifier column (e.g. fs_user_id) besides "
            f"{', '.join(CSV_REQUIRED)}; found {len(others)}: {', '.join(others) or 'none'}"
        )
    return others[0]


def csv_ts(text: str | None, row: StagedRow) -> None:
    if text is None or text.strip() == "":
        return
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        row.problems.append(
            f"data.ts: must be a number of seconds since the Unix epoch, got {json.dumps(text[:64])}")
        return
    row.ts = str(value)


def csv_records(lines: Iterable[str], name: str) -> Iterator[tuple[int, StagedRow]]:
    """(line number, row) for each record of an ODP-convention CSV."""
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        return
    columns = [h.strip() for h in header]
    id_column = csv_identifier_column(columns, name)
    index = {c: i for i, c in enumerate(columns)}
    i_type, i_action, i_aud, i_ts, i_id = (index[c] for c in ("type", "action", "audience_id", "ts", id_column))
    i_idem = index.get("idempotence_id")
    width = len(columns)
    for record in reader:
        if not record:
            continue
        line = reader.line_num
        if len(record) != width:
            row = StagedRow(problems=[f"csv: expected {width} fields, got {len(record)}"])
            record = (record + [""] * width)[:width]
        else:
            row = StagedRow()
        value = lambda i: record[i] if record[i] != "" else None  # noqa: E731  (an empty field is missing)
        row.type, row.action, row.audience_id = value(i_type), value(i_action), value(i_aud)
        row.identifier_type, row.identifier = id_column, value(i_id)
        if i_idem is not None:
            row.idempotence_id = value(i_idem)
        csv_ts(record[i_ts], row)
        yield line, row


def _ndjson_row(line: str) -> StagedRow | None:
    """The staging row of one NDJSON line; None for a blank line (skipped)."""
    if not line.strip():
        return None
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return StagedRow(identifier_count=None, problems=[f"event: not valid JSON ({exc})"])
    return event_to_row(event)


def ndjson_records(lines: Iterable[str]) -> Iterator[tuple[int, StagedRow]]:
    for line_no, line in enumerate(lines, 1):
        row = _ndjson_row(line)
        if row is not None:
            yield line_no, row


def json_array_records(text: str, name: str) -> Iterator[tuple[int, StagedRow]]:
    try:
        events = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{name}: not valid JSON: {exc}") from None
    if not isinstance(events, list):
        raise InputError(f"{name}: a JSON file must hold an array of events, got {json_type(events)}")
    for index, event in enumerate(events, 1):
        yield index, event_to_row(event)  # "line" is the element's position in the array, from 1


class _CountingReader(io.RawIOBase):
    """Counts the bytes read from the underlying (possibly compressed) file, for the progress bar."""

    def __init__(self, raw: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._raw, self._on_read = raw, on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if n:
            self._on_read(n)
        return n


def _open_text(name: str, on_read: Callable[[int], None]) -> IO[str]:
    raw: IO[bytes] = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
    counted = io.BufferedReader(_CountingReader(raw, on_read), buffer_size=1 << 20)
    head = counted.peek(2)[:2]
    stream: IO[bytes] = gzip.GzipFile(fileobj=counted) if head == b"\x1f\x8b" else counted  # type: ignore[assignment]
    return io.TextIOWrapper(stream, encoding="utf-8", newline="")


def detect_format(name: str, first: str) -> str:
    base = name[:-3] if name.endswith(".gz") else name
    for ext, kind in ((".ndjson", "ndjson"), (".jsonl", "ndjson"), (".json", "json"), (".csv", "csv")):
        if base.endswith(ext):
            return kind
    stripped = first.lstrip()
    if stripped.startswith("["):
        return "json"
    if stripped.startswith("{"):
        return "ndjson"
    return "csv"


# Records are formatted into COPY lines in chunks of about this many characters of NDJSON input (or this
# many records of the other formats): the loading loop then does its bookkeeping once a chunk, not once a row.
CHUNK_CHARS = 1 << 20
CHUNK_RECORDS = 8192


@dataclass
class CopyChunk:
    """COPY lines (row_no = base + line) routed to writers, from some consecutive records of one input."""

    lines: list[list[str]]  # per writer, in input order
    records: int
    last_line: int  # the line of the chunk's last record (0 when it has none)


def _ndjson_chunks(lines: Iterable[str], base: int, writers: int) -> Iterator[CopyChunk]:
    """NDJSON lines to CopyChunks; exactly what ndjson_records + route + format_row give, only faster.

    The usual event (strings where strings belong, a number ts, one identifier, no backslash anywhere in
    its line, so no string in it needs COPY escaping) is formatted straight from the parsed dict; any
    other line takes the general path (event_to_row, format_row), which also names its problems."""
    loads, decode_error, crc32 = orjson.loads, orjson.JSONDecodeError, zlib.crc32
    null = _NULL
    line_no = 0
    for block in lines:  # each a list of lines
        out: list[list[str]] = [[] for _ in range(writers)]
        records = last = 0
        for line in block:
            line_no += 1
            text = None
            if "\\" not in line:
                try:
                    event = loads(line)
                except decode_error:
                    event = None
                if type(event) is dict:
                    kind, action, ids, data = (
                        event.get("type"), event.get("action"), event.get("identifiers"), event.get("data"))
                    if (type(kind) is str and type(action) is str and type(ids) is dict and len(ids) == 1
                            and type(data) is dict):
                        ((id_type, identifier),) = ids.items()
                        audience, ts, idem = data.get("audience_id"), data.get("ts"), data.get("idempotence_id")
                        if type(ts) is float:
                            ts = repr(ts)
                        elif type(ts) is int:
                            ts = str(ts)
                        elif ts is None:
                            ts = null
                        else:
                            ts = None
                        if idem is None:
                            idem = null
                        if type(identifier) is str and type(audience) is str and ts is not None and type(idem) is str:
                            text = (f"{base + line_no}\t{kind}\t{action}\t{id_type}\t{identifier}\t{audience}\t"
                                    f"{ts}\t{idem}\t1\t\\N\t\\N\n")
                            target = crc32(identifier.encode()) % writers if writers > 1 else 0
            if text is None:
                row = _ndjson_row(line)
                if row is None:
                    continue
                text = format_row(base + line_no, row)
                target = route(row.identifier, writers)
            out[target].append(text)
            records += 1
            last = line_no
        yield CopyChunk(out, records, last)


def _record_chunks(records: Iterable[tuple[int, StagedRow]], base: int, writers: int) -> Iterator[CopyChunk]:
    """(line, row) records to CopyChunks of CHUNK_RECORDS records."""
    out: list[list[str]] = [[] for _ in range(writers)]
    count = last = 0
    for line, row in records:
        out[route(row.identifier, writers)].append(format_row(base + line, row))
        count += 1
        last = line
        if count >= CHUNK_RECORDS:
            yield CopyChunk(out, count, last)
            out = [[] for _ in range(writers)]
            count = 0
    if count:
        yield CopyChunk(out, count, last)


def _line_blocks(first: str, text: IO[str]) -> Iterator[list[str]]:
    block = [first] if first else []
    while True:
        block.extend(text.readlines(CHUNK_CHARS))
        if not block:
            return
        yield block
        block = []


def copy_chunks(name: str, base: int, writers: int, fmt: str = "auto",
                on_read: Callable[[int], None] = lambda n: None) -> Iterator[CopyChunk]:
    """The COPY lines of one input (a path, or ``-`` for stdin) in chunks: each record as ``read_records``
    gives it, formatted by ``format_row`` with row_no = ``base`` + its line and routed to one of ``writers``."""
    display = "<stdin>" if name == "-" else name
    text = _open_text(name, on_read)
    try:
        first = text.readline()
        kind = detect_format(name, first) if fmt == "auto" else fmt
        if kind == "ndjson":
            yield from _ndjson_chunks(_line_blocks(first, text), base, writers)
        elif kind == "json":
            yield from _record_chunks(json_array_records("".join(_chain_first(first, text)), display), base, writers)
        elif kind == "csv":
            yield from _record_chunks(csv_records(_chain_first(first, text), display), base, writers)
        else:
            raise InputError(f"unknown format {kind!r}; expected auto, ndjson, json or csv")
    finally:
        if name != "-":
            text.close()


def read_records(name: str, fmt: str = "auto", on_read: Callable[[int], None] = lambda n: None
                 ) -> Iterator[tuple[int, StagedRow]]:
    """(line number, staging row) for each record of one input (a path, or ``-`` for stdin)."""
    display = "<stdin>" if name == "-" else name
    text = _open_text(name, on_read)
    try:
        first = text.readline()
        kind = detect_format(name, first) if fmt == "auto" else fmt
        rest = _chain_first(first, text)
        if kind == "ndjson":
            yield from ndjson_records(rest)
        elif kind == "json":
            yield from json_array_records("".join(rest), display)
        elif kind == "csv":
            yield from csv_records(rest, display)
        else:
            raise InputError(f"unknown format {kind!r}; expected auto, ndjson, json or csv")
    finally:
        if name != "-":
            text.close()


def _chain_first(first: str, rest: Iterable[str]) -> Iterator[str]:
    if first:
        yield first
    yield from rest


# --------------------------------------------------------------------------- parallel load


@dataclass
class LoadSummary:
    files: int = 0
    rows: int = 0
    accepted: int = 0
    ignored: int = 0
    rejected: int = 0
    changed: int = 0
    batches: int = 0
    seconds: float = 0.0
    reject_load_ids: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class LoadFailed(Exception):
    """A writer failed; ``summary`` says what was committed before (a rerun from the start is safe)."""

    def __init__(self, message: str, summary: LoadSummary, invalid: list[str] | None = None) -> None:
        super().__init__(message)
        self.summary = summary
        self.invalid = invalid or []


class _RowLocator:
    """Maps a global row_no back to (input name, line): row_no = base of the input + line."""

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._names: list[str] = []

    def add(self, base: int, name: str) -> None:
        self._bases.append(base)
        self._names.append(name)

    def describe(self, row_no: int) -> str:
        i = bisect.bisect_left(self._bases, row_no) - 1
        if i < 0:
            return f"row {row_no}"
        name = self._names[i]
        return f"{name}:{row_no - self._bases[i]}"


def load_files(
    url: str,
    files: list[str],
    *,
    writers: int = DEFAULT_WRITERS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    fmt: str = "auto",
    source: str = "load",
    rejects: bool = False,
    skip_other_types: bool = False,
    driver: str = "psycopg",
    on_progress: Callable[[LoadSummary, int], None] | None = None,
) -> LoadSummary:
    """Load ``files`` into the database at ``url`` with ``writers`` parallel connections.

    Each writer applies its batches in its own transactions; a batch is all or nothing. On the first
    refused batch (or any other writer error) everything stops and LoadFailed says what was already
    committed; rerunning the same load is safe. ``on_progress(summary, bytes_read)`` is called from the
    reading thread now and then.
    """
    from pyapp.db import connect

    writers = max(1, writers)
    batch_size = max(1, batch_size)  # (a batch size below 1 always meant batches of one row)
    summary = LoadSummary(files=len(files))
    lock = threading.Lock()
    failure: list[BaseException] = []
    queues: list[queue.Queue[bytes | None]] = [queue.Queue(maxsize=2) for _ in range(writers)]
    locator = _RowLocator()
    bytes_read = [0]

    def writer(index: int) -> None:
        conn = None
        try:
            conn = connect(url, driver=driver)
            while True:
                payload = queues[index].get()
                if payload is None or failure:
                    break
                try:
                    # registering first: this writer never waits for another's batch on a new audience id
                    result = load_rows(conn, payload, source=source, rejects=rejects,
                                       skip_other_types=skip_other_types, register_audiences=True)
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
                with lock:
                    summary.accepted += result.accepted
                    summary.ignored += result.ignored
                    summary.rejected += result.rejected
                    summary.changed += result.changed
                    summary.batches += 1
                    if result.rejected:
                        summary.reject_load_ids.append(result.load_id)
        except BaseException as exc:  # noqa: BLE001  (reported by the reading thread)
            with lock:
                failure.append(exc)
        finally:
            if conn is not None:
                conn.close()
            while True:  # unblock the reader if it is waiting on a full queue
                try:
                    queues[index].get_nowait()
                except queue.Empty:
                    break

    threads = [threading.Thread(target=writer, args=(i,), name=f"load-writer-{i}", daemon=True)
               for i in range(writers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()

    buffers: list[list[str]] = [[] for _ in range(writers)]

    def flush(index: int) -> None:
        buf = buffers[index]
        payload = "".join(buf[:batch_size]).encode("utf-8", "surrogatepass")
        buffers[index] = buf[batch_size:]
        while not failure:
            try:
                queues[index].put(payload, timeout=0.2)
                return
            except queue.Full:
                continue

    def on_read(n: int) -> None:
        bytes_read[0] += n

    row_no = 0
    last_report = 0.0
    try:
        for name in files:
            display = "<stdin>" if name == "-" else name
            base = row_no  # row_no = base + line: the line number itself for the first input
            locator.add(base, display)
            last_line = 0
            for chunk in copy_chunks(name, base, writers, fmt, on_read):
                if failure:
                    break
                if chunk.records:
                    last_line = chunk.last_line
                    summary.rows += chunk.records
                for index, lines in enumerate(chunk.lines):
                    if lines:
                        buffers[index].extend(lines)
                        while len(buffers[index]) >= batch_size and not failure:
                            flush(index)  # batches of exactly batch_size rows, as if flushed row by row
                if on_progress is not None:
                    now = time.monotonic()
                    if now - last_report > 0.1:
                        last_report = now
                        summary.seconds = now - started
                        on_progress(summary, bytes_read[0])
            row_no = base + last_line
            if failure:
                break
        for index in range(writers):
            if buffers[index] and not failure:
                flush(index)
    finally:
        for q in queues:
            while True:
                try:
                    q.put(None, timeout=0.2)
                    break
                except queue.Full:
                    if failure:
                        try:
                            q.get_nowait()
                        except queue.Empty:
                            pass
        for thread in threads:
            thread.join()
        summary.seconds = time.monotonic() - started
        if on_progress is not None:
            on_progress(summary, bytes_read[0])

    if failure:
        exc = failure[0]
        if isinstance(exc, LoadRefused):
            invalid = [f"{locator.describe(int(item['row']))}: {item['message']}" for item in exc.invalid]
            raise LoadFailed(exc.message, summary, invalid) from exc
        sqlstate, message, detail, hint = sql_error_fields(exc)
        text = message if sqlstate else f"{type(exc).__name__}: {exc}"
        if detail and sqlstate:
            text += f"\ndetail: {detail}"
        if hint and sqlstate:
            text += f"\nhint: {hint}"
        raise LoadFailed(text, summary) from exc
    return summary
