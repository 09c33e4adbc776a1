"""A loop that ``passthrough serve`` runs in the background until the app stops (the expiry sweeper and
retention pruning, pyapp/workers/upkeep.py; the background jobs' leadership, pyapp/web/leader.py)."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any


class BackgroundLoop:
    """``start(pool)`` runs ``_run(pool)`` as a task; ``close()`` asks it to end (``_stopping``) and waits
    for it. ``_pause(seconds)`` sleeps, and returns early once the loop is asked to end."""

    task_name = "passthrough-background"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self, pool: Any) -> None:
        self._stopping = asyncio.Event()  # a restarted app may run on another event loop
        self._task = asyncio.create_task(self._run(pool), name=self.task_name)

    async def close(self) -> None:
        if self._task is not None:
            self._stopping.set()
            await self._task
            self._task = None

    async def _pause(self, seconds: float) -> None:
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _run(self, pool: Any) -> None:
        raise NotImplementedError
