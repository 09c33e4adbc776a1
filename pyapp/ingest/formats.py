"""The file formats of bulk loads: NDJSON, JSON arrays and ODP-convention CSV, plain or gzip, ``-`` for stdin.

Each record becomes a staging row (pyapp/ingest/staging.py), noting what only the transport can see, e.g. a JSON
number where a string belongs; every other rule is SQL's.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal, InvalidOperation
from typing import IO, Any


from pyapp.ingest.staging import StagedRow
from pyapp.jsontypes import DECODE_ERRORS, JsonNumber, dumps_exact, json_type, loads_exact
from pyapp.pgvalues import held_text, numeric_holds, text_problems, undecoded_bytes


def _json_text(value: Any) -> str | None:
    """What PostgreSQL's ``value #>> '{}'`` gives: a string as is (a JsonNumber is its text), anything else as
    JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return dumps_exact(value)


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
            unheld = _unheld_in_json(ids)
            if unheld is None:
                row.identifiers = dumps_exact(ids)  # numbers as written
            else:  # jsonb cannot hold it: the row is set aside with the reason, not the whole COPY refused
                problems.append(f"identifiers: {unheld}")
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
                if isinstance(ts, JsonNumber) and not numeric_holds(Decimal(ts)):
                    problems.append(_unheld_ts(ts))
                else:
                    row.ts = str(ts)  # exact: a JsonNumber's text, an int, or a Decimal; SQL rounds it
            else:
                problems.append(f"data.ts: must be a number of seconds since the Unix epoch, got {json_type(ts)}")
        idem = data.get("idempotence_id")
        if idem is not None:
            if isinstance(idem, str):
                row.idempotence_id = idem
            else:
                problems.append(f"data.idempotence_id: must be a string, got {json_type(idem)}")
    return row


def _unheld_ts(text: str) -> str:
    return f"data.ts: must be seconds since the Unix epoch, got {text[:64]}, more digits than PostgreSQL's numeric holds"


def _unheld_in_json(value: Any) -> str | None:
    """What in a JSON value jsonb cannot hold (a NUL in a string or key, a number beyond numeric), else None."""
    if isinstance(value, JsonNumber):  # (a str too)
        return None if numeric_holds(Decimal(value)) else f"the number {value[:64]} has more digits than jsonb holds"
    if isinstance(value, str):
        return next((f"a string {reason}" for reason in text_problems(value)), None)
    if isinstance(value, dict):
        for key, item in value.items():
            found = next((f"a key {reason}" for reason in text_problems(key)), None) or _unheld_in_json(item)
            if found is not None:
                return found
    if isinstance(value, list):
        for item in value:
            found = _unheld_in_json(item)
            if found is not None:
                return found
    return None


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
            f"missing {', '.join(missing)} (header: {held_text(', '.join(columns))})"
        )
    others = [c for c in columns if c not in CSV_REQUIRED + CSV_OPTIONAL]
    if len(others) != 1:
        raise InputError(
            f"{name}: the CSV header must have exactly one identifier column (e.g. fs_user_id) besides "
            f"{', '.join(CSV_REQUIRED)}; found {len(others)}: {held_text(', '.join(others)) or 'none'}"
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
    if not numeric_holds(value):
        row.problems.append(_unheld_ts(text.strip()))
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


def ndjson_row(line: str) -> StagedRow | None:
    """The staging row of one NDJSON line; None for a blank line (skipped)."""
    if not line.strip():
        return None
    try:
        event = loads_exact(line)
    except DECODE_ERRORS as exc:
        return StagedRow(identifier_count=None, problems=[f"event: not valid JSON ({exc})"])
    except UnicodeEncodeError:  # bytes of the file that were not UTF-8 (read with surrogateescape)
        return StagedRow(identifier_count=None, problems=[f"event: {reason}" for reason in text_problems(line)])
    return event_to_row(event)


def ndjson_records(lines: Iterable[str]) -> Iterator[tuple[int, StagedRow]]:
    for line_no, line in enumerate(lines, 1):
        row = ndjson_row(line)
        if row is not None:
            yield line_no, row


def json_array_records(text: str, name: str) -> Iterator[tuple[int, StagedRow]]:
    try:
        events = loads_exact(text)
    except DECODE_ERRORS as exc:
        raise InputError(f"{name}: not valid JSON: {exc}") from None
    except UnicodeEncodeError as exc:  # bytes that were not UTF-8 (read with surrogateescape)
        raise InputError(f"{name}: not UTF-8 text: line {text.count(chr(10), 0, exc.start) + 1} holds the bytes "
                         f"{undecoded_bytes(text[exc.start:exc.end]).hex(' ')}") from None
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


def open_text(name: str, on_read: Callable[[int], None]) -> IO[str]:
    raw: IO[bytes] = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
    counted = io.BufferedReader(_CountingReader(raw, on_read), buffer_size=1 << 20)
    head = counted.peek(2)[:2]
    stream: IO[bytes] = gzip.GzipFile(fileobj=counted) if head == b"\x1f\x8b" else counted  # type: ignore[assignment]
    # utf-8-sig: a byte order mark at the start (Excel's "CSV UTF-8", PowerShell) is not part of the first line;
    # surrogateescape: a byte that is not UTF-8 makes its row invalid, naming it (staging.format_row), and the
    # rest of the file still loads
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")


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


def read_records(name: str, fmt: str = "auto", on_read: Callable[[int], None] = lambda n: None
                 ) -> Iterator[tuple[int, StagedRow]]:
    """(line number, staging row) for each record of one input (a path, or ``-`` for stdin)."""
    display = "<stdin>" if name == "-" else name
    text = open_text(name, on_read)
    try:
        first = text.readline()
        kind = detect_format(name, first) if fmt == "auto" else fmt
        rest = chain_first(first, text)
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


def chain_first(first: str, rest: Iterable[str]) -> Iterator[str]:
    if first:
        yield first
    yield from rest
