"""A log that repeats itself at most once per interval (issue 17, item 2: a flood of "Too many open files" once
grew a log by 526 MB in 65 s).

``RepeatThrottle`` is a logging filter: of the records that say the same thing (same logger, level, exception type
and message, numbers aside: ports, file descriptors and addresses vary), it lets one through per ``interval``
seconds; the next one let through says how many were left out. pyapp/serving.py puts it on the handler that
uvicorn's, asyncio's and Passthrough's loggers write to."""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_INTERVAL = 10.0
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+")


class RepeatThrottle(logging.Filter):
    def __init__(self, interval: float = DEFAULT_INTERVAL, kinds: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.kinds = kinds  # the kinds of message remembered, least recent forgotten first
        self.clock = clock
        self._seen: OrderedDict[tuple, list] = OrderedDict()  # kind -> [when let through, left out since]

    def filter(self, record: logging.LogRecord) -> bool:
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
        kind = (record.name, record.levelno, exc_type, _NUMBERS.sub("#", record.getMessage()))
        now = self.clock()
        seen = self._seen.get(kind)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            return False
        self._seen[kind] = [now, 0]
        self._seen.move_to_end(kind)
        if len(self._seen) > self.kinds:
            self._seen.popitem(last=False)
        if seen is not None and seen[1]:
            record.msg = (f"{record.getMessage()} [and {seen[1]} more like this in the last "
                          f"{now - seen[0]:.0f} s, not logged]")
            record.args = ()
        return True
