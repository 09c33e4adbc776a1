"""``passthrough load``: files in, several writer connections in parallel, SQL decides.

Rows are routed to writers by a hash of the identifier (pyapp/ingest/chunks.py). A crashed load can simply be run
again from the start: the state is a function of the set of events, so replayed events change nothing (the event
log keeps the duplicates, as it does for any resend).
"""

from __future__ import annotations

import bisect
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyapp.ingest.chunks import routed_copy_chunks
from pyapp.errors import sql_error_fields
from pyapp.ingest.staging import LoadRefused, load_rows

DEFAULT_BATCH_SIZE = 50_000
DEFAULT_WRITERS = 2


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
    reading: bool = True  # False once every input is read: ``rows`` is then the load's total
    invalid: list[str] = field(default_factory=list)  # validate_only: "file:line: problems" of each invalid row

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def applied(self) -> int:
        """Rows the writers are done with (applied, ignored or rejected): what a progress bar counts."""
        return self.accepted + self.ignored + self.rejected


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
    validate_only: bool = False,
) -> LoadSummary:
    """Load ``files`` into the database at ``url`` with ``writers`` parallel connections.

    Each writer applies its batches in its own transactions; a batch is all or nothing. On the first
    refused batch (or any other writer error) everything stops and LoadFailed says what was already
    committed; rerunning the same load is safe. ``on_progress(summary, bytes_read)`` is called from the
    reading thread now and then, until the writers are done.

    ``validate_only``: each batch is staged and checked by passthrough.load_staged as a load with rejects
    would, its invalid rows read back (get_load_rejects), and its transaction rolled back: nothing is changed
    (but sequence numbers), and ``summary.invalid`` lists every invalid row. The counts are each batch's on
    its own (a batch does not see the events of the batches before it).
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
    found_invalid: list[tuple[int, list[str]]] = []

    def writer(index: int) -> None:
        conn = None
        try:
            conn = connect(url, driver=driver)
            while True:
                payload = queues[index].get()
                if payload is None or failure:
                    break
                invalid_rows: list[tuple[int, list[str]]] = []
                try:
                    if validate_only:  # SQL checks, and its transaction is rolled back whatever it finds
                        result = load_rows(conn, payload, source=source, rejects=True,
                                           skip_other_types=skip_other_types)
                        if result.rejected:
                            cur = conn.cursor()
                            cur.execute("SELECT row_no, problems FROM passthrough.get_load_rejects(%s)",
                                        (result.load_id,))
                            invalid_rows = [(int(row_no), list(problems)) for row_no, problems in cur.fetchall()]
                        conn.rollback()
                    else:
                        # registering first: this writer never waits for another's batch on a new audience id
                        result = load_rows(conn, payload, source=source, rejects=rejects,
                                           skip_other_types=skip_other_types, register_audiences=True)
                        conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
                with lock:
                    found_invalid.extend(invalid_rows)
                    summary.accepted += result.accepted
                    summary.ignored += result.ignored
                    summary.rejected += result.rejected
                    summary.changed += result.changed
                    summary.batches += 1
                    if result.rejected and not validate_only:
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
            for chunk in routed_copy_chunks(name, base, writers, fmt, on_read):
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
        summary.reading = False
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
            while thread.is_alive():  # the last batches are applied after the reading: keep reporting
                thread.join(0.1)
                if on_progress is not None:
                    summary.seconds = time.monotonic() - started
                    on_progress(summary, bytes_read[0])
        summary.reading = False
        summary.seconds = time.monotonic() - started
        if on_progress is not None:
            on_progress(summary, bytes_read[0])

    summary.invalid = [f"{locator.describe(row_no)}: {'; '.join(problems)}"
                       for row_no, problems in sorted(found_invalid)]
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
