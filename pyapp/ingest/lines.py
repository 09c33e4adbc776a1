"""The lines of a text stream, read in bounded chunks: no line longer than a limit is ever held whole.

Iterating a file object (or calling ``readline()`` without a size) builds each line in full before anyone
can look at its length, so a file with no newline is read into one string as large as the file: a 1 MB
gzip can inflate into a 1 GB line. ``bounded_lines`` reads ``chunk_chars`` at a time and refuses a line
(``LineTooLong``) as soon as it passes ``max_chars``, so it holds at most about ``max_chars +
chunk_chars`` characters; with ``max_lines`` it also refuses the line after the last one allowed
(``TooManyLines``), blank lines included, so that a body of nothing but newlines costs at most
``max_lines`` lines of work.

Lines end as ``open(newline="")`` ends them (``\\n``, ``\\r\\n`` or ``\\r``, kept), which is what the csv
module expects; numbering from 1 is the csv reader's ``line_num``. The chunks are split by
``str.splitlines`` (or a regular expression, when they hold other characters it splits at) and the lines
handed out through ``itertools.chain``: no Python code runs per line here.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import IO

CHUNK_CHARS = 1 << 16
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)")  # one complete line, its end kept
# Where str.splitlines splits and a CSV line does not (it is ten times faster than _LINE when there are none).
_OTHER_BREAKS = re.compile("[\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


class LineTooLong(ValueError):
    def __init__(self, line: int, max_chars: int) -> None:
        super().__init__(f"line {line} is longer than {max_chars} characters")
        self.line, self.max_chars = line, max_chars


class TooManyLines(ValueError):
    def __init__(self, max_lines: int) -> None:
        super().__init__(f"there are more than {max_lines} lines (blank lines count)")
        self.max_lines = max_lines


def bounded_lines(text: IO[str], max_chars: int, max_lines: int | None = None,
                  chunk_chars: int = CHUNK_CHARS) -> Iterator[str]:
    """The lines of ``text``, each at most ``max_chars`` long (its end included), at most ``max_lines`` of
    them; LineTooLong or TooManyLines is raised by the iteration that reaches the offending line."""
    return itertools.chain.from_iterable(_blocks(text, max_chars, max_lines, chunk_chars))


def _blocks(text: IO[str], max_chars: int, max_lines: int | None, chunk_chars: int) -> Iterator[list[str]]:
    read = 0  # lines handed out so far
    partial = ""  # the start of a line whose end has not been read yet (at most max_chars)
    while chunk := text.read(chunk_chars):
        block = partial + chunk
        # Only up to the last line end: past it the expression would be tried at every position (quadratic).
        complete = max(block.rfind("\n"), block.rfind("\r")) + 1
        lines = _split(block[:complete])
        if complete == len(block) and block.endswith("\r"):
            complete -= len(lines.pop())  # a \r at the end may be the first half of a \r\n
        partial = block[complete:]
        _check(lines, read, max_chars, max_lines)
        read += len(lines)
        if len(partial) > max_chars:
            raise LineTooLong(read + 1, max_chars)
        yield lines
    if partial:
        _check([partial], read, max_chars, max_lines)
        yield [partial]


def _split(text: str) -> list[str]:
    """The lines of ``text``, which ends with a line end."""
    return _LINE.findall(text) if _OTHER_BREAKS.search(text) else text.splitlines(keepends=True)


def _check(lines: list[str], read: int, max_chars: int, max_lines: int | None) -> None:
    if lines and max(map(len, lines)) > max_chars:
        raise LineTooLong(read + 1 + next(i for i, line in enumerate(lines) if len(line) > max_chars), max_chars)
    if max_lines is not None and read + len(lines) > max_lines:
        raise TooManyLines(max_lines)
