"""Where webhook deliveries may connect: no loopback, link-local, private or other non-global address,
unless the webhook opted in (``passthrough webhooks create --allow-private-network``).

The check happens at connect time, inside the HTTP client's network backend (httpcore): the host name
is resolved here, every address it resolves to is checked, and the connection goes to an address that
was checked, never to the name. So a name that resolves to a public address once and to a private one
later (DNS rebinding) cannot get around the check; TLS still verifies, and SNI and the Host header still
carry, the original host name, since only the TCP connection is made here.

The networks below are IANA's special-purpose registries' non-global blocks. They are spelled out
rather than taken from ``ipaddress``'s ``is_global``, which varies between Python versions and lets
multicast through; SQL's ``passthrough._non_global_networks()`` lists the same blocks for the check at
creation, and tests/test_webhook_addresses.py holds the two lists equal.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str, int], Awaitable[list[str]]]

# (network, what kind of address it holds), as in sql/functions/250_webhooks.sql; the most specific one names the kind
NON_GLOBAL_NETWORKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),  # "this network"; 0.0.0.0 reaches the local host
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),  # cloud metadata services live here
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "reserved"),  # documentation
    ("192.88.99.0/24", "reserved"),  # 6to4 relays (deprecated)
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved"),  # benchmarking
    ("198.51.100.0/24", "reserved"),
    ("203.0.113.0/24", "reserved"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # and 255.255.255.255, broadcast
    ("::/8", "reserved"),  # IPv4-compatible and other deprecated forms
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "private"),  # local-use NAT64
    ("100::/64", "reserved"),  # discard-only
    ("2001::/23", "reserved"),  # IETF protocol assignments, Teredo included
    ("2001:db8::/32", "reserved"),  # documentation
    ("2002::/16", "reserved"),  # 6to4: would reach the IPv4 address it embeds
    ("3fff::/20", "reserved"),  # documentation
    ("fc00::/7", "private"),  # unique local
    ("fe80::/10", "link-local"),
    ("fec0::/10", "private"),  # site-local (deprecated)
    ("ff00::/8", "multicast"),
)
_NETWORKS = sorted(((ipaddress.ip_network(net), kind) for net, kind in NON_GLOBAL_NETWORKS),
                   key=lambda pair: -pair[0].prefixlen)
# IPv6 prefixes that embed an IPv4 address in their last 32 bits, which is what gets reached: that one is checked
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def non_global_kind(address: str | Address) -> str | None:
    """None for an address deliveries may connect to by default; else what it is: "loopback", "private", ..."""
    ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address  # no scope id
    if isinstance(ip, ipaddress.IPv6Address) and (ip in _MAPPED or ip in _NAT64):
        ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    for network, kind in _NETWORKS:
        if ip.version == network.version and ip in network:
            return kind
    return None


class RefusedAddress(httpcore.ConnectError):
    """A webhook's host resolves to an address it may not connect to; nothing was connected."""

    def __init__(self, host: str, address: str, kind: str) -> None:
        article = "an" if kind[0] in "aeiou" else "a"
        super().__init__(f"refused: {host} resolves to {address}, {article} {kind} address; create the webhook "
                         "with --allow-private-network to allow it")


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host, in its order, each once."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, but it resolves the host itself, refuses non-global addresses (unless
    ``allow_private``) before connecting anywhere, and connects to the checked address."""

    def __init__(self, *, allow_private: bool, resolve: Resolve = system_resolve,
                 backend: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.allow_private = allow_private
        self.resolve = resolve
        self.backend = backend if backend is not None else httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self.resolve(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout:g} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"{host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        if not self.allow_private:
            for address in addresses:  # any one refused refuses them all: the resolver's order is not ours
                if (kind := non_global_kind(address)) is not None:
                    raise RefusedAddress(host, address, kind)
        last: Exception | None = None
        for address in addresses:  # the next one if an address does not answer
            try:
                return await self.backend.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                      socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks connect over TCP only")  # pragma: no cover

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a GuardedBackend. Not through a proxy from the environment: a proxy would resolve
    the name itself, where it cannot be checked."""

    def __init__(self, backend: GuardedBackend) -> None:
        super().__init__(trust_env=False)
        # no cap on connections (httpcore's default is 10): receivers that hang would hold the others back; the
        # delivery loop caps how many deliveries are in flight
        self._pool = httpcore.AsyncConnectionPool(ssl_context=httpx.create_ssl_context(), network_backend=backend,
                                                  max_connections=None, max_keepalive_connections=20,
                                                  keepalive_expiry=5.0)


def refusal_of(exc: BaseException) -> RefusedAddress | None:
    """The RefusedAddress behind an httpx error (httpx re-raises httpcore's errors as its own), if any."""
    while exc is not None:
        if isinstance(exc, RefusedAddress):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
