"""One input file as COPY text in chunks, each row routed to its writer (the parallel loader's reading side)."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import msgspec

from pyapp.ingest.formats import (
    InputError, chain_first, csv_records, detect_format, json_array_records, ndjson_row, open_text,
)
from pyapp.ingest.staging import StagedRow, format_row, route
from pyapp.jsontypes import DECODE_ERRORS, JsonNumber

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


class _UsualData(msgspec.Struct):
    audience_id: str
    ts: Any = None  # Any: msgspec's float hook then keeps a fraction as written (JsonNumber)
    idempotence_id: str | None = None


class _UsualEvent(msgspec.Struct):
    """The shape of the usual event; other fields are ignored, as the general path ignores them."""

    type: str
    action: str
    identifiers: dict[str, str]
    data: _UsualData


# Decoding straight into this shape costs about a quarter less CPU than dicts (0.5 s a million lines); a
# line of another shape fails to decode and takes the general path, which then names its problems.
_usual_event = msgspec.json.Decoder(_UsualEvent, float_hook=JsonNumber)


def _ndjson_chunks(lines: Iterable[str], base: int, writers: int) -> Iterator[CopyChunk]:
    """NDJSON lines to CopyChunks; exactly what ndjson_records + route + format_row give, only faster.

    The usual event (strings where strings belong, a number ts of at most 32 characters and no exponent, so
    that numeric holds it, one identifier, no backslash anywhere in its line, so no string in it needs COPY
    escaping or holds a NUL) is formatted straight from its decoded shape; any other line takes the general
    path (event_to_row, format_row), which also names its problems."""
    decode, decode_error, crc32 = _usual_event.decode, DECODE_ERRORS, zlib.crc32
    null = "\\N"  # COPY's NULL
    line_no = 0
    for block in lines:  # each a list of lines
        out: list[list[str]] = [[] for _ in range(writers)]
        records = last = 0
        for line in block:
            line_no += 1
            text = None
            if "\\" not in line:
                try:
                    event = decode(line)
                except decode_error:
                    event = None
                except UnicodeEncodeError:  # bytes that were not UTF-8: the general path names them
                    event = None
                if event is not None and len(event.identifiers) == 1:
                    ((id_type, identifier),) = event.identifiers.items()
                    data = event.data
                    ts = data.ts
                    if type(ts) is JsonNumber:
                        if len(ts) > 32 or "e" in ts or "E" in ts:
                            ts = None  # the general path checks that numeric holds it (pyapp/pgvalues.py)
                        # else as written: SQL rounds it (pyapp/jsontypes.py)
                    elif type(ts) is int:
                        ts = str(ts)
                    elif ts is None:
                        ts = null
                    else:
                        ts = None
                    if ts is not None:
                        idem = null if data.idempotence_id is None else data.idempotence_id
                        text = (f"{base + line_no}\t{event.type}\t{event.action}\t{id_type}\t{identifier}\t"
                                f"{data.audience_id}\t{ts}\t{idem}\t1\t\\N\t\\N\n")
                        target = crc32(identifier.encode()) % writers if writers > 1 else 0
            if text is None:
                row = ndjson_row(line)
                if row is None:
                    continue
                target = route(row.identifier, writers)  # (before format_row, which may set a value aside)
                text = format_row(base + line_no, row)
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


def routed_copy_chunks(name: str, base: int, writers: int, fmt: str = "auto",
                on_read: Callable[[int], None] = lambda n: None) -> Iterator[CopyChunk]:
    """The COPY lines of one input (a path, or ``-`` for stdin) in chunks: each record as ``read_records``
    gives it, formatted by ``format_row`` with row_no = ``base`` + its line and routed to one of ``writers``."""
    display = "<stdin>" if name == "-" else name
    text = open_text(name, on_read)
    try:
        first = text.readline()
        kind = detect_format(name, first) if fmt == "auto" else fmt
        if kind == "ndjson":
            yield from _ndjson_chunks(_line_blocks(first, text), base, writers)
        elif kind == "json":
            yield from _record_chunks(json_array_records("".join(chain_first(first, text)), display), base, writers)
        elif kind == "csv":
            yield from _record_chunks(csv_records(chain_first(first, text), display), base, writers)
        else:
            raise InputError(f"unknown format {kind!r}; expected auto, ndjson, json or csv")
    finally:
        if name != "-":
            text.close()
