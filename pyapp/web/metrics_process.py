"""``passthrough serve``'s side of the metrics with several workers: where they keep them.

With several workers, prometheus-client's multiprocess mode needs a directory for the workers' files that no other
server shares and that starts empty: ``multiprocess_directory`` makes a private one (mode 0700) and sets
``PROMETHEUS_MULTIPROC_DIR`` before any worker starts (workers inherit it), then removes it when serving ends.
``WorkerSupervisor`` is uvicorn's supervisor that also marks each worker gone (``mark_process_dead``) when it
dies, is replaced or is retired, so that its gauges (pool use) leave the metrics; its counters stay in the totals.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import multiprocess
from uvicorn.supervisors import Multiprocess

from pyapp.web.metrics import MULTIPROC_ENV


# Workers write their metrics files through mmap on every request. On a disk file system a write to a page the
# kernel is writing back waits for the disk (stable pages), which showed as doubled p99s while PostgreSQL wrote
# WAL; in shared memory nothing is written back.
SHARED_MEMORY = "/dev/shm"


def metrics_parent() -> str | None:
    """Where the metrics directory goes: $TMPDIR when set, else /dev/shm where the system has a writable one, else
    tempfile's choice (None)."""
    if os.environ.get("TMPDIR"):
        return os.environ["TMPDIR"]
    return SHARED_MEMORY if os.path.isdir(SHARED_MEMORY) and os.access(SHARED_MEMORY, os.W_OK | os.X_OK) else None


@contextmanager
def multiprocess_directory() -> Iterator[str]:
    """A fresh private directory in PROMETHEUS_MULTIPROC_DIR for the block, removed afterwards."""
    previous = os.environ.get(MULTIPROC_ENV)
    path = tempfile.mkdtemp(prefix="passthrough-metrics-", dir=metrics_parent())
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


class WorkerSupervisor(Multiprocess):
    """uvicorn's Multiprocess, telling prometheus-client about each worker that is gone."""

    def _marking_gone(self, step: Callable[[], Any]) -> Any:
        before = {process.pid for process in self.processes}
        try:
            return step()
        finally:
            for pid in before - {process.pid for process in self.processes}:
                if pid is not None:
                    multiprocess.mark_process_dead(pid)

    def keep_subprocess_alive(self) -> None:  # a worker died and was replaced
        self._marking_gone(super().keep_subprocess_alive)

    def restart_all(self) -> None:  # SIGHUP
        self._marking_gone(super().restart_all)

    def handle_ttou(self) -> None:  # one worker fewer
        self._marking_gone(super().handle_ttou)
