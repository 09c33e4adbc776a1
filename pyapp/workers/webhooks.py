"""Webhook delivery: the change feed POSTed to subscribed URLs, at least once, in feed order, signed (the body,
the headers and how a receiver checks them: README.md, "Webhooks").

Every rule is SQL's (sql/functions/250_webhooks.sql): which subscriptions are due and who holds them (a lease),
which changes a page holds and which the audience filter selects, moving the cursor (compare-and-set),
the backoff after a failure. This module only reads a page, POSTs it and reports the outcome, each
database call in its own short transaction (autocommit), and never holds a transaction open while it
talks HTTP: an open transaction would hold the whole change feed back. A 2xx answer acknowledges the changes;
anything else, a network error or no answer within the timeout is retried later with the same changes (and any
that arrived since, when the page was not full). ``passthrough serve`` runs ``Webhooks`` in the background.

A webhook reaches only global addresses unless it was created with ``allow_private_network``: the HTTP client
resolves each host itself and refuses before connecting (pyapp/workers/webhook_network.py). A refusal is
recorded, and retried, like any failed delivery.
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
from pyapp.errors import sql_error_fields
from pyapp.feed import change_json
from pyapp.workers.webhook_network import GuardedBackend, GuardedTransport, Resolve, refusal_of, system_resolve

log = logging.getLogger("passthrough.webhooks")

CHANNEL = "passthrough_changes"
LISTENER_APPLICATION_NAME = "passthrough-webhooks-listener"
LISTENER_STOP_SECONDS = 0.5  # how long the listener may take to notice that the app is stopping

DEFAULT_PAGE_SIZE = 500  # changes per POST
DEFAULT_TIMEOUT = 10.0  # seconds for one POST, connecting included
DEFAULT_CLAIM = 10  # subscriptions leased per claim
DEFAULT_CONCURRENCY = 64  # deliveries in flight at once: only this many hanging receivers hold the others back
DEFAULT_DATABASE_CALLS = 4  # pool connections the deliveries use at once (each call is short)
MAX_TIMESTAMP_AGE = 300  # what receivers should accept (documented; verify() uses it)

TIMESTAMP_HEADER = "X-Passthrough-Timestamp"
SIGNATURE_HEADER = "X-Passthrough-Signature"
DELIVERY_HEADER = "X-Passthrough-Delivery"

CLAIM_SQL = ("SELECT id, name, url, secret, feed_cursor, allow_private_network"
             " FROM passthrough._claim_webhooks(%s, %s)")
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
    allow_private_network: bool = False


@dataclass(frozen=True)
class Outcome:
    """What one claimed subscription's delivery did."""

    name: str
    sent: int = 0  # changes POSTed (0: nothing selected, or nothing new)
    status: int | None = None  # the HTTP status, None when nothing was sent or the request failed
    moved: bool = False  # the cursor moved forward
    more: bool = False  # a full page was delivered: more may be waiting
    error: str | None = None


class Webhooks:
    """Delivers due webhooks at least every ``every`` seconds (``webhook_every`` under ``passthrough serve``), for
    retries that come due, and as soon as the feed notifies a change (``NOTIFY passthrough_changes``), each webhook
    in a task of its own that delivers one page and frees its lease. The loop does not wait for those tasks, so a
    receiver that hangs holds only its own webhook back (until the timeout), never the others; the lease keeps a
    webhook to one delivery at a time, here and in any other process. ``resolve`` (host, port -> addresses) is the
    system resolver unless a test stubs it; ``network_backend`` is what connects to a checked address (httpcore's,
    unless a test records it)."""

    def __init__(self, every: float = 1.0, *, timeout: float = DEFAULT_TIMEOUT, page_size: int = DEFAULT_PAGE_SIZE,
                 claim: int = DEFAULT_CLAIM, concurrency: int = DEFAULT_CONCURRENCY, lease: float | None = None,
                 backoff_base: float | None = None, backoff_cap: float | None = None, listen: bool = True,
                 resolve: Resolve = system_resolve, network_backend: Any = None) -> None:
        if every <= 0 or timeout <= 0 or page_size < 1 or claim < 1 or concurrency < 1:
            raise ValueError("every, timeout, page_size, claim and concurrency must be positive")
        self.every = every
        self.timeout = timeout
        self.page_size = page_size
        self.claim = claim
        self.concurrency = concurrency
        # the lease must outlast one delivery: reading a page, one POST (at most `timeout`) and reporting it
        self.lease = lease if lease is not None else max(60.0, 3 * timeout)
        # None: SQL's backoff (1 s doubling to 10 min); tests shorten it
        self.backoff_base = timedelta(seconds=backoff_base) if backoff_base is not None else None
        self.backoff_cap = timedelta(seconds=backoff_cap) if backoff_cap is not None else None
        self.listen = listen
        self.resolve = resolve
        self.network_backend = network_backend
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._clients: dict[bool, httpx.AsyncClient] = {}  # by allow_private_network
        self._deliveries: dict[int, asyncio.Task[Outcome]] = {}  # webhook id -> its delivery in flight
        self._database = asyncio.Semaphore(DEFAULT_DATABASE_CALLS)
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    # -- lifecycle

    async def start(self, pool: Any) -> None:
        self._stopping = asyncio.Event()  # a restarted app may run on another event loop
        self._wake = asyncio.Event()
        self._database = asyncio.Semaphore(DEFAULT_DATABASE_CALLS)
        self._clients = self._new_clients()
        self._task = asyncio.create_task(self._run(pool), name="passthrough-webhooks")
        if self.listen:
            self._listener = asyncio.create_task(self._listen(pool), name="passthrough-webhooks-listener")

    async def close(self) -> None:
        self._stopping.set()
        grace = self.timeout + LISTENER_STOP_SECONDS * 3
        for task in (self._listener, self._task):
            if task is None:
                continue
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:  # notifies() stuck on a dead connection, say
                task.cancel()
        self._task = self._listener = None
        if self._deliveries:  # POSTs in flight end within their timeout; past that, their leases expire
            _, late = await asyncio.wait(set(self._deliveries.values()), timeout=grace)
            for task in late:
                task.cancel()
        self._deliveries.clear()
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

    # -- claiming and delivering

    async def _claim(self, pool: Any, limit: int) -> list[Claimed]:
        async with self._database, pool.connection() as conn:  # autocommit: the claim is its own transaction
            cur = await conn.execute(CLAIM_SQL, (timedelta(seconds=self.lease), limit))
            return [Claimed(*row) for row in await cur.fetchall()]

    async def run_once(self, pool: Any) -> list[Outcome]:
        """Claim the due subscriptions, deliver one page to each and return what happened to each, once all
        are done. The background loop does not wait like this (see _run); tests and one-off runs do."""
        claimed = await self._claim(pool, self.claim)
        if not claimed:
            return []
        clients, own = (self._clients, False) if self._clients else (self._new_clients(), True)
        limit = asyncio.Semaphore(self.concurrency)

        async def one(hook: Claimed) -> Outcome:
            async with limit:
                return await self._deliver_claimed(pool, clients, hook)

        try:
            return list(await asyncio.gather(*(one(hook) for hook in claimed)))
        finally:
            if own:
                for client in clients.values():
                    await client.aclose()

    async def _deliver_claimed(self, pool: Any, clients: dict[bool, httpx.AsyncClient], hook: Claimed) -> Outcome:
        try:
            return await self._deliver(pool, clients[hook.allow_private_network], hook)
        except Exception as exc:  # the database went away mid-delivery: the lease expires, it is retried
            log.warning("webhook %s: %s: %s", hook.name, type(exc).__name__, exc)
            return Outcome(hook.name, error=f"{type(exc).__name__}: {exc}")

    async def _deliver(self, pool: Any, client: httpx.AsyncClient, hook: Claimed) -> Outcome:
        try:
            async with self._database, pool.connection() as conn:
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
            if (refused := refusal_of(exc)) is not None:  # nothing was connected
                return await self._failed(pool, hook, str(refused), None)
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
        async with self._database, pool.connection() as conn:
            cur = await conn.execute(DELIVERED_SQL, (hook.id, hook.cursor, new_cursor, status))
            return bool((await cur.fetchone())[0])

    async def _failed(self, pool: Any, hook: Claimed, error: str, status: int | None, *, sent: int = 0) -> Outcome:
        log.warning("webhook %s: delivery failed: %s", hook.name, error)
        async with self._database, pool.connection() as conn:
            await conn.execute(FAILED_SQL, (hook.id, error, status, self.backoff_base, self.backoff_cap))
        return Outcome(hook.name, sent=sent, status=status, error=error)

    # -- the background loop

    async def _run(self, pool: Any) -> None:
        last_error: str | None = None  # the same failure every second is logged once
        while not self._stopping.is_set():
            self._wake.clear()
            limit = min(self.claim, self.concurrency - len(self._deliveries))
            claimed: list[Claimed] = []
            if limit > 0:
                try:
                    claimed = await self._claim(pool, limit)
                except Exception as exc:  # the database may be down or not migrated yet: try again later
                    message = f"{type(exc).__name__}: {exc}"
                    log.log(logging.DEBUG if message == last_error else logging.WARNING, "webhooks: %s", message)
                    last_error = message
                else:
                    last_error = None
            for hook in claimed:
                if hook.id in self._deliveries:  # cannot be while its lease holds; never two at once anyway
                    continue
                task = asyncio.create_task(self._deliver_claimed(pool, self._clients, hook),
                                           name=f"passthrough-webhook-{hook.id}")
                self._deliveries[hook.id] = task
                task.add_done_callback(lambda done, hook_id=hook.id: self._delivery_done(hook_id, done))
            if limit > 0 and len(claimed) == limit:  # more may be due: claim again without waiting
                continue
            waiters = {asyncio.ensure_future(self._stopping.wait()), asyncio.ensure_future(self._wake.wait())}
            try:
                await asyncio.wait(waiters, timeout=self.every, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    def _delivery_done(self, hook_id: int, task: asyncio.Task[Outcome]) -> None:
        if self._deliveries.get(hook_id) is task:
            del self._deliveries[hook_id]
        full = len(self._deliveries) + 1 >= self.concurrency  # the loop may be waiting for a free place
        more = not task.cancelled() and task.exception() is None and task.result().more
        if more or full:  # a full page delivered: its next page is due now
            self._wake.set()

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

    def _new_clients(self) -> dict[bool, httpx.AsyncClient]:
        """A client for the webhooks that may reach private addresses and one for the others."""
        # no redirects: a 3xx is not an acknowledgement (the URL should be fixed instead), nor a way around the check
        return {allow: httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout), follow_redirects=False,
            transport=GuardedTransport(GuardedBackend(allow_private=allow, resolve=self.resolve,
                                                      backend=self.network_backend)))
            for allow in (False, True)}


def _db_message(exc: psycopg.Error) -> str:
    sqlstate, message, _, hint = sql_error_fields(exc)
    text = message.strip()
    if sqlstate:
        text = f"{sqlstate}: {text}"
    if hint:
        text += f" (hint: {hint})"
    return text
