"""Webhook delivery: the change feed POSTed to subscribed URLs, at least once, in feed order, signed.

Every rule is SQL's (sql/081_webhooks.sql): which subscriptions are due and who holds them (a lease),
which changes a page holds and which the audience filter selects, moving the cursor (compare-and-set),
the backoff after a failure. This module only reads a page, POSTs it and reports the outcome, each
database call in its own short transaction (autocommit), and never holds a transaction open while it
talks HTTP: an open transaction would hold the whole change feed back.

A delivery is ``POST <url>`` with the JSON body ``{"webhook": name, "changes": [...], "next": cursor}``
(the change objects of ``GET /v3/changes``) and the headers

    X-Passthrough-Timestamp: <unix seconds>
    X-Passthrough-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
    X-Passthrough-Delivery:  <a unique id per attempt>

A 2xx answer acknowledges the changes; anything else, a network error or no answer within the timeout
is retried later with the same changes (and any that arrived since, when the page was not full).
``passthrough serve`` runs ``Webhooks`` in the background: it wakes on ``NOTIFY passthrough_changes`` and
at least every ``webhook_every`` seconds (for retries that come due).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import orjson
import psycopg

from pyapp import __version__
from pyapp.feed import change_json

log = logging.getLogger("passthrough.webhooks")

CHANNEL = "passthrough_changes"
LISTENER_APPLICATION_NAME = "passthrough-webhooks-listener"
LISTENER_STOP_SECONDS = 0.5  # how long the listener may take to notice that the app is stopping

DEFAULT_PAGE_SIZE = 500  # changes per POST
DEFAULT_TIMEOUT = 10.0  # seconds for one POST, connecting included
DEFAULT_CLAIM = 10  # subscriptions leased per round
DEFAULT_CONCURRENCY = 4  # POSTs in flight at once
MAX_TIMESTAMP_AGE = 300  # what receivers should accept (documented; verify() uses it)

TIMESTAMP_HEADER = "X-Passthrough-Timestamp"
SIGNATURE_HEADER = "X-Passthrough-Signature"
DELIVERY_HEADER = "X-Passthrough-Delivery"

CLAIM_SQL = "SELECT id, name, url, secret, feed_cursor FROM passthrough._claim_webhooks(%s, %s)"
PAGE_SQL = (
    "SELECT cursor, change, identifier_type, identifier, audience_id, audience, event_ts, received_at, source,"
    " batch_id, selected FROM passthrough._webhook_page(%s, %s)"
)
DELIVERED_SQL = "SELECT passthrough._webhook_delivered(%s, %s, %s, %s)"
FAILED_SQL = "SELECT passthrough._webhook_failed(%s, %s, %s, %s, %s)"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Passthrough-Signature value: ``sha256=`` and the hex HMAC-SHA256 of ``timestamp.body``."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, max_age: float = MAX_TIMESTAMP_AGE,
           now: float | None = None) -> bool:
    """What a receiver checks: the signature matches (in constant time) and the timestamp is recent."""
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return False
    return abs(age) <= max_age and hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass(frozen=True)
class Claimed:
    id: int
    name: str
    url: str
    secret: str
    cursor: str | None


@dataclass(frozen=True)
class Outcome:
    """What one claimed subscription's round did."""

    name: str
    sent: int = 0  # changes POSTed (0: nothing selected, or nothing new)
    status: int | None = None  # the HTTP status, None when nothing was sent or the request failed
    moved: bool = False  # the cursor moved forward
    more: bool = False  # a full page was delivered: more may be waiting
    error: str | None = None


class Webhooks:
    """Delivers due webhooks every ``every`` seconds, and as soon as the feed notifies a change."""

    def __init__(self, every: float = 1.0, *, timeout: float = DEFAULT_TIMEOUT, page_size: int = DEFAULT_PAGE_SIZE,
                 claim: int = DEFAULT_CLAIM, concurrency: int = DEFAULT_CONCURRENCY, lease: float | None = None,
                 backoff_base: float | None = None, backoff_cap: float | None = None, listen: bool = True) -> None:
        if every <= 0 or timeout <= 0 or page_size < 1 or claim < 1 or concurrency < 1:
            raise ValueError("every, timeout, page_size, claim and concurrency must be positive")
        self.every = every
        self.timeout = timeout
        self.page_size = page_size
        self.claim = claim
        self.concurrency = concurrency
        # the lease must outlast a whole round: the claimed subscriptions' POSTs, queued `concurrency` at a time
        self.lease = lease if lease is not None else max(60.0, 2 * timeout * (claim // concurrency + 1))
        # None: SQL's backoff (1 s doubling to 10 min); tests shorten it
        self.backoff_base = timedelta(seconds=backoff_base) if backoff_base is not None else None
        self.backoff_cap = timedelta(seconds=backoff_cap) if backoff_cap is not None else None
        self.listen = listen
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    # -- lifecycle

    async def start(self, pool: Any) -> None:
        self._stopping = asyncio.Event()  # a restarted app may run on another event loop
        self._wake = asyncio.Event()
        self._client = self._new_client()
        self._task = asyncio.create_task(self._run(pool), name="passthrough-webhooks")
        if self.listen:
            self._listener = asyncio.create_task(self._listen(pool), name="passthrough-webhooks-listener")

    async def close(self) -> None:
        self._stopping.set()
        for task in (self._listener, self._task):
            if task is None:
                continue
            done, _ = await asyncio.wait({task}, timeout=self.timeout + LISTENER_STOP_SECONDS * 3)
            if not done:  # a POST that outlives its timeout, or notifies() stuck on a dead connection
                task.cancel()
        self._task = self._listener = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- one round

    async def run_once(self, pool: Any) -> list[Outcome]:
        """Claim the due subscriptions and deliver one page to each; return what happened to each."""
        async with pool.connection() as conn:  # autocommit: the claim is its own short transaction
            cur = await conn.execute(CLAIM_SQL, (timedelta(seconds=self.lease), self.claim))
            claimed = [Claimed(*row) for row in await cur.fetchall()]
        if not claimed:
            return []
        client, own = (self._client, False) if self._client is not None else (self._new_client(), True)
        limit = asyncio.Semaphore(self.concurrency)

        async def one(hook: Claimed) -> Outcome:
            async with limit:
                try:
                    return await self._deliver(pool, client, hook)
                except Exception as exc:  # the database went away mid-round: the lease expires, it is retried
                    log.warning("webhook %s: %s: %s", hook.name, type(exc).__name__, exc)
                    return Outcome(hook.name, error=f"{type(exc).__name__}: {exc}")

        try:
            return list(await asyncio.gather(*(one(hook) for hook in claimed)))
        finally:
            if own:
                await client.aclose()

    async def _deliver(self, pool: Any, client: httpx.AsyncClient, hook: Claimed) -> Outcome:
        try:
            async with pool.connection() as conn:
                cur = await conn.execute(PAGE_SQL, (hook.id, self.page_size))
                rows = await cur.fetchall()
        except psycopg.Error as exc:  # e.g. PT032: the cursor was pruned; it shows as last_error
            return await self._failed(pool, hook, _db_message(exc), None)
        if not rows:  # nothing new: free the lease
            await self._delivered(pool, hook, hook.cursor or "", None)
            return Outcome(hook.name)

        selected = [change_json(row) for row in rows if row[10]]
        next_cursor = rows[-1][0]
        more = len(rows) == self.page_size
        if not selected:  # the filter selects none of them: move on without a POST
            moved = await self._delivered(pool, hook, next_cursor, None)
            return Outcome(hook.name, moved=moved, more=more and moved)

        body = orjson.dumps({"webhook": hook.name, "changes": selected, "next": next_cursor})
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"passthrough-webhooks/{__version__}",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(hook.secret, timestamp, body),
            DELIVERY_HEADER: str(uuid.uuid4()),
        }
        try:
            async with asyncio.timeout(self.timeout):
                async with client.stream("POST", hook.url, content=body, headers=headers) as response:
                    status = response.status_code
                    snippet = b""
                    if not 200 <= status < 300:
                        async for chunk in response.aiter_bytes():
                            snippet += chunk
                            if len(snippet) >= 200:
                                break
        except TimeoutError:
            return await self._failed(pool, hook, f"no answer within {self.timeout:g} s", None)
        except httpx.HTTPError as exc:
            return await self._failed(pool, hook, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                                      None)
        if not 200 <= status < 300:
            text = snippet[:200].decode("utf-8", "replace").strip()
            return await self._failed(pool, hook, f"HTTP {status}" + (f": {text}" if text else ""), status,
                                      sent=len(selected))
        moved = await self._delivered(pool, hook, next_cursor, status)
        if not moved:
            log.info("webhook %s: its cursor moved meanwhile; this delivery did not move it", hook.name)
        return Outcome(hook.name, sent=len(selected), status=status, moved=moved, more=more and moved)

    async def _delivered(self, pool: Any, hook: Claimed, new_cursor: str, status: int | None) -> bool:
        async with pool.connection() as conn:
            cur = await conn.execute(DELIVERED_SQL, (hook.id, hook.cursor, new_cursor, status))
            return bool((await cur.fetchone())[0])

    async def _failed(self, pool: Any, hook: Claimed, error: str, status: int | None, *, sent: int = 0) -> Outcome:
        log.warning("webhook %s: delivery failed: %s", hook.name, error)
        async with pool.connection() as conn:
            await conn.execute(FAILED_SQL, (hook.id, error, status, self.backoff_base, self.backoff_cap))
        return Outcome(hook.name, sent=sent, status=status, error=error)

    # -- the background loop

    async def _run(self, pool: Any) -> None:
        last_error: str | None = None  # the same failure every second is logged once
        while not self._stopping.is_set():
            self._wake.clear()
            busy = False
            try:
                outcomes = await self.run_once(pool)
                # a full page delivered, or every claim used on real work: go on without waiting
                busy = any(o.more for o in outcomes) or (
                    len(outcomes) == self.claim and any(o.moved or o.sent for o in outcomes))
            except Exception as exc:  # the database may be down or not migrated yet: try again later
                message = f"{type(exc).__name__}: {exc}"
                log.log(logging.DEBUG if message == last_error else logging.WARNING, "webhooks: %s", message)
                last_error = message
            else:
                last_error = None
            if busy:
                continue
            waiters = {asyncio.ensure_future(self._stopping.wait()), asyncio.ensure_future(self._wake.wait())}
            try:
                await asyncio.wait(waiters, timeout=self.every, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def _listen(self, pool: Any) -> None:
        """Set the wake event on every NOTIFY passthrough_changes (a dedicated connection, as GraphQL's)."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                kwargs = {**pool.kwargs, "autocommit": True, "application_name": LISTENER_APPLICATION_NAME,
                          "connect_timeout": 10}
                conn = await psycopg.AsyncConnection.connect(pool.conninfo, **kwargs)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._wake.set()  # catch up with what was notified while not listening
                    delay = 0.5
                    while not self._stopping.is_set():  # wakes at least every LISTENER_STOP_SECONDS
                        async for _ in conn.notifies(timeout=LISTENER_STOP_SECONDS):
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # polling every `every` seconds goes on meanwhile
                log.info("webhooks listener: %s: %s; retrying in %.1fs", type(exc).__name__, exc, delay)
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 30.0)

    def _new_client(self) -> httpx.AsyncClient:
        # no redirects: a 3xx is not an acknowledgement (the URL should be fixed instead)
        return httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), follow_redirects=False)


def _db_message(exc: psycopg.Error) -> str:
    diag = exc.diag
    text = diag.message_primary or str(exc).strip()
    if exc.sqlstate:
        text = f"{exc.sqlstate}: {text}"
    if diag.message_hint:
        text += f" (hint: {diag.message_hint})"
    return text
