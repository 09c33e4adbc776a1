"""A snapshot upload's body, as ``POST /v3/audiences/{audience_id}/snapshot`` reads it: its encoding (from the
headers), then, in the worker thread, the spooled bytes decoded (gzip or plain, bounded) and read as the snapshot
CSV's staging chunks (pyapp/ingest/snapshot.py), with what is wrong with them as 400s and 413s."""

from __future__ import annotations

import codecs
import csv
import gzip
import itertools
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BufferedReader, RawIOBase, TextIOWrapper
from typing import IO, Any

from starlette.datastructures import Headers

from pyapp.ingest import snapshot
from pyapp.ingest.formats import InputError
from pyapp.ingest.lines import LineTooLong, TooManyLines
from pyapp.ingest.staging import StagedRow
from pyapp.web.body import content_encoding_is_gzip, too_large
from pyapp.web.responses import ApiError

GZIP_MAGIC = b"\x1f\x8b"
GZIP_MEDIA_TYPES = ("application/gzip", "application/x-gzip")  # gzip required
DETECTED_MEDIA_TYPES = ("text/csv", "application/octet-stream")  # gzip when it starts with the magic bytes
MEDIA_TYPES = (*DETECTED_MEDIA_TYPES, *GZIP_MEDIA_TYPES)
SNAPSHOT_NAME = "the snapshot"  # what errors about the CSV call it


@dataclass(frozen=True)
class BodyEncoding:
    content_encoding_gzip: bool  # Content-Encoding: gzip
    gzip_required: bool  # Content-Type: application/gzip (else gzip only when the magic bytes say so)



def body_encoding(headers: Headers) -> BodyEncoding:
    content_type = headers.get("content-type")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in MEDIA_TYPES:
        got = f"got {content_type!r}" if content_type else "none was given"
        raise ApiError(
            400, "unsupported_media_type",
            f"Content-Type must be text/csv (plain or gzip), application/gzip or application/octet-stream; {got}",
        )
    return BodyEncoding(content_encoding_is_gzip(headers.get("content-encoding")), media_type in GZIP_MEDIA_TYPES)


@contextmanager
def _gzip_errors() -> Iterator[None]:
    try:
        yield
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ApiError(400, "malformed_gzip", f"the request body is not valid gzip: {exc}") from None


class _CsvBytes(RawIOBase):
    """Reads ``source`` (decompressing): a gzip error is 400, more than ``max_bytes`` in all 413, and bytes
    that are not UTF-8 are 400 naming their line (TextIOWrapper would only say which chunk)."""

    def __init__(self, source: IO[bytes], max_bytes: int) -> None:
        self._source, self._max_bytes = source, max_bytes
        self._size = self._lines = 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with _gzip_errors():
            data = self._source.read(len(buffer))
        n = len(data)
        self._size += n
        if self._size > self._max_bytes:
            raise too_large("the decompressed snapshot is larger than that", self._max_bytes)
        try:
            self._utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:  # exc.object: the bytes of an unfinished character, then data
            start = max(0, exc.start - (len(exc.object) - n))
            line = self._lines + data.count(b"\n", 0, start) + 1
            raise ApiError(400, "malformed_csv", f"the snapshot is not UTF-8 text: line {line} holds the bytes "
                           f"{exc.object[exc.start:exc.end].hex(' ')} ({exc.reason})") from None
        self._lines += data.count(b"\n")
        buffer[:n] = data
        return n


def _content(spool: IO[bytes], encoding: BodyEncoding) -> IO[bytes]:
    """The body from its start, without its Content-Encoding."""
    spool.seek(0)
    return gzip.GzipFile(fileobj=spool, mode="rb") if encoding.content_encoding_gzip else spool


def _csv_text(spool: IO[bytes], encoding: BodyEncoding, max_bytes: int) -> IO[str]:
    """The snapshot's CSV text: gunzipped once for Content-Encoding: gzip and once more when the content
    is gzip (by its magic bytes; Content-Type application/gzip requires them)."""
    with _gzip_errors():
        head = _content(spool, encoding).read(2)
    gzipped = head == GZIP_MAGIC
    if encoding.gzip_required and not gzipped:
        raise ApiError(400, "malformed_gzip", "Content-Type is application/gzip but the content is not gzip "
                       "(it does not start with the gzip magic bytes 1f 8b)")
    content = _content(spool, encoding)
    if gzipped:
        content = gzip.GzipFile(fileobj=content, mode="rb")
    # utf-8-sig: a byte order mark at the start (Excel's "CSV UTF-8") is not part of the header
    return TextIOWrapper(BufferedReader(_CsvBytes(content, max_bytes), 1 << 16), encoding="utf-8-sig", newline="")


def _records(text: IO[str], max_bytes: int) -> Iterator[tuple[int, StagedRow]]:
    """snapshot.snapshot_records, with a header it refuses or a CSV it cannot read as 400s and a
    line too long, or too many lines, as 413s."""
    line = 0  # the line of the last record read
    max_lines = snapshot.max_lines(max_bytes)
    try:
        for line, row in snapshot.snapshot_records(text, SNAPSHOT_NAME, max_lines):
            yield line, row
    except LineTooLong as exc:
        raise ApiError(413, "line_too_long", f"line {exc.line} of the snapshot is longer than {exc.max_chars} "
                       "characters, the most a snapshot line may have (a valid row is at most about 1,100)") from None
    except TooManyLines as exc:
        raise ApiError(413, "too_many_lines", f"the snapshot has more than {exc.max_lines} lines, blank lines "
                       f"included: the most a snapshot of at most {max_bytes} bytes (--max-snapshot-bytes) can "
                       f"have, since no row is shorter than {snapshot.MIN_ROW_BYTES} bytes") from None
    except InputError as exc:
        raise ApiError(400, "invalid_csv_header", str(exc), field="header") from None
    except csv.Error as exc:
        where = f"after line {line}" if line else "in its header"
        raise ApiError(400, "malformed_csv", f"the snapshot is not a readable CSV {where}: {exc}") from None


def staging_chunks(spool: IO[bytes], encoding: BodyEncoding, max_bytes: int) -> Iterator[bytes]:
    """The staging payload, read from the spool as it is COPYed. The header (and the gzip framing) are
    checked here, before a connection is opened."""
    text = _csv_text(spool, encoding, max_bytes)
    if not text.buffer.peek(1):  # type: ignore[attr-defined]
        raise ApiError(400, "empty_body", "the snapshot is empty; send a CSV with its header line")
    records = _records(text, max_bytes)
    first = next(records, None)  # reads the header: a bad one is refused now
    return snapshot.copy_text_chunks(records if first is None else itertools.chain([first], records))
