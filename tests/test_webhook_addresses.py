"""Webhooks reach global addresses only, unless a webhook opted in (allow_private_network): refused when created
with such an IP in its URL (sql/functions/250_webhooks.sql), and at every connection, whatever the host name resolves to
(pyapp/workers/webhook_network.py), before anything is connected.

No test here sends traffic to a link-local or private address: names resolve through a stub resolver, and the
network backend below it records every connection attempt instead of connecting (or connects to a local receiver).
"""

from __future__ import annotations

import ipaddress
import socket

import httpcore
import pytest
from sqlhelpers import expect_error, rows, scalar
from test_webhooks import deliver, due_now, feed, qualify, receiver, webhook  # noqa: F401 (fixtures)

from pyapp.workers.webhook_network import NON_GLOBAL_NETWORKS, non_global_kind

# What each address is, from IANA's special-purpose registries (not from the code under test)
KINDS = [
    ("8.8.8.8", None), ("93.184.215.14", None), ("2606:4700::1", None), ("2a00:1450:4001::1", None),
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("::1", "loopback"),
    ("10.0.0.1", "private"), ("10.255.255.255", "private"), ("172.16.0.1", "private"), ("172.31.255.255", "private"),
    ("172.32.0.1", None), ("192.168.1.1", "private"), ("fd00::1", "private"), ("fc00::1", "private"),
    ("169.254.169.254", "link-local"), ("169.254.0.1", "link-local"), ("fe80::1", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("100.64.0.1", "shared (carrier-grade NAT)"), ("100.127.255.255", "shared (carrier-grade NAT)"),
    ("100.128.0.1", None), ("100.63.255.255", None),
    ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("255.255.255.255", "reserved"), ("192.0.2.1", "reserved"), ("2001:db8::1", "reserved"),
    # IPv6 forms that reach an IPv4 address: the IPv4 address is what counts
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"), ("::ffff:10.0.0.1", "private"),
    ("::ffff:8.8.8.8", None), ("64:ff9b::a9fe:a9fe", "link-local"), ("64:ff9b::808:808", None),
    ("2002:a9fe:a9fe::1", "reserved"), ("::127.0.0.1", "reserved"), ("2001::a9fe:a9fe", "reserved"),
]


@pytest.mark.parametrize("address, kind", KINDS)
def test_the_kind_of_an_address_in_python(address, kind):
    assert non_global_kind(address) == kind


def test_the_kind_of_an_address_in_sql(conn):
    found = dict(rows(conn, "SELECT a, passthrough._non_global_kind(a::inet) FROM unnest(%s::text[]) a",
                      ([a for a, _ in KINDS],)))
    assert found == dict(KINDS)


def _boundaries(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    top = 2 ** network.max_prefixlen - 1
    ints = {int(network.network_address), int(network.broadcast_address)}
    ints |= {i - 1 for i in ints if i > 0} | {i + 1 for i in ints if i < top}
    addresses = [ipaddress.ip_address(i) if network.version == 4 else ipaddress.IPv6Address(i) for i in ints]
    mapped = [f"::ffff:{a}" for a in addresses if a.version == 4] + [f"64:ff9b::{a}" for a in addresses if a.version == 4]
    return sorted(str(a) for a in addresses) + mapped


def test_sql_and_python_list_the_same_networks_and_agree_at_every_boundary(conn):
    in_sql = {(str(ipaddress.ip_network(n)), k) for n, k in rows(conn, "SELECT network::text, kind "
                                                                      "FROM passthrough._non_global_networks()")}
    assert in_sql == {(str(ipaddress.ip_network(n)), k) for n, k in NON_GLOBAL_NETWORKS}
    probes = sorted({p for n, _ in NON_GLOBAL_NETWORKS for p in _boundaries(ipaddress.ip_network(n))})
    sql = dict(rows(conn, "SELECT a, passthrough._non_global_kind(a::inet) FROM unnest(%s::text[]) a", (probes,)))
    assert len(probes) > 200
    assert {p: non_global_kind(p) for p in probes} == sql


# --------------------------------------------------------------------------- at creation: IP literals


@pytest.mark.parametrize("url, named", [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://127.0.0.1:8080/hook", "127.0.0.1 is a loopback address"),
    ("https://10.0.0.1/hook", "10.0.0.1 is a private address"),
    ("http://192.168.0.10/", "192.168.0.10 is a private address"),
    ("http://100.64.1.1/", "100.64.1.1 is a shared (carrier-grade NAT) address"),
    ("http://0.0.0.0:9000/", "0.0.0.0 is an unspecified address"),
    ("http://224.0.0.251/", "224.0.0.251 is a multicast address"),
    ("http://[::1]:8080/", "::1 is a loopback address"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://[fd12:3456::1]/", "fd12:3456::1 is a private address"),
    ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254 is a link-local address"),
    ("http://[::ffff:a9fe:a9fe]/", "::ffff:169.254.169.254 is a link-local address"),
])
def test_a_non_global_ip_in_the_url_is_refused_at_creation_unless_allowed(feed, url, named):
    error = expect_error(feed, "SELECT passthrough.create_webhook('h', %s)", (url,), sqlstate="PT035")
    assert error.detail == "field: url" and named in error.message, error.message
    assert "--allow-private-network" in error.hint
    assert rows(feed, "SELECT name FROM passthrough.list_webhooks()") == []
    feed.execute("SELECT passthrough.create_webhook('h', %s, p_allow_private_network => true)", (url,))
    assert webhook(feed, "h")["allow_private_network"] is True


def test_public_ips_and_host_names_are_accepted_at_creation(feed):
    for n, url in enumerate(["http://8.8.8.8/", "https://[2606:4700::1]/hook", "https://localhost/",
                             "https://metadata.google.internal/"]):  # names: checked when delivering
        feed.execute("SELECT passthrough.create_webhook(%s, %s)", (f"h{n}", url))
    assert {r[0] for r in rows(feed, "SELECT allow_private_network FROM passthrough.list_webhooks()")} == {False}
    error = expect_error(feed, "SELECT passthrough.create_webhook('bad', 'http://300.1.1.1/')", sqlstate="PT035")
    assert error.detail == "field: url" and "not an IP address" in error.message


# --------------------------------------------------------------------------- at connect time: what names resolve to


class StubResolver:
    """Resolves names from a table (a name may answer differently on each call), and counts the calls."""

    def __init__(self, table: dict[str, list[str] | list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.table.get(host)
        if answers is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if answers and isinstance(answers[0], list):  # one answer per call, the last one repeated
            return answers[min(self.calls.count(host), len(answers)) - 1]
        return answers


class RecordingNetwork(httpcore.AsyncNetworkBackend):
    """Records every connection attempt; connects each to ``route_to`` (a local receiver) or refuses it."""

    def __init__(self, route_to: tuple[str, int] | None = None) -> None:
        self.attempts: list[tuple[str, int]] = []
        self.route_to = route_to
        self.real = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.attempts.append((host, port))
        if self.route_to is None:
            raise httpcore.ConnectError("the test network connects nowhere")
        return await self.real.connect_tcp(*self.route_to, timeout=timeout)

    async def sleep(self, seconds: float) -> None:
        await self.real.sleep(seconds)


REFUSED = {  # name -> what it resolves to, and what the refusal names
    "metadata.test": (["169.254.169.254"], "169.254.169.254, a link-local address"),
    "ten.test": (["10.0.0.1"], "10.0.0.1, a private address"),
    "loopback6.test": (["::1"], "::1, a loopback address"),
    "loopback.test": (["127.0.0.1"], "127.0.0.1, a loopback address"),
    "linklocal6.test": (["fe80::1"], "fe80::1, a link-local address"),
    "mapped.test": (["::ffff:169.254.169.254"], "::ffff:169.254.169.254, a link-local address"),
    "ula.test": (["fd00::1"], "fd00::1, a private address"),
    "cgnat.test": (["100.64.0.1"], "100.64.0.1, a shared (carrier-grade NAT) address"),
    "zero.test": (["0.0.0.0"], "0.0.0.0, an unspecified address"),
    "multicast.test": (["224.0.0.1"], "224.0.0.1, a multicast address"),
    # one refused address among public ones refuses the name: which one gets connected is not ours to pick
    "mixed.test": (["93.184.215.14", "2606:4700::1", "192.168.1.1"], "192.168.1.1, a private address"),
}


def test_a_name_that_resolves_to_a_non_global_address_is_refused_before_any_connection(feed, db_url):
    resolver = StubResolver({name: addresses for name, (addresses, _) in REFUSED.items()})
    network = RecordingNetwork()
    for n, name in enumerate(REFUSED):
        feed.execute("SELECT passthrough.create_webhook(%s, %s, NULL, false)", (f"h{n}", f"http://{name}:8080/hook"))
    qualify(feed, "u1")
    [outcomes] = deliver(db_url, resolve=resolver, network_backend=network, claim=20)
    assert len(outcomes) == len(REFUSED) and not any(o.moved or o.status for o in outcomes)
    assert network.attempts == []  # nothing was connected, not even tried
    assert sorted(resolver.calls) == sorted(REFUSED)
    for n, (name, (_, named)) in enumerate(REFUSED.items()):
        expected = f"refused: {name} resolves to {named}; create the webhook with --allow-private-network to allow it"
        hook = webhook(feed, f"h{n}")
        assert (hook["last_error"], hook["failures"], hook["cursor"]) == (expected, 1, None)
        assert hook["next_attempt_at"] > hook["last_attempt_at"]  # a backoff, like any failed delivery
        due_now(feed, f"h{n}")
    deliver(db_url, resolve=resolver, network_backend=network, claim=20)  # retried, and refused again
    assert network.attempts == []
    assert {webhook(feed, f"h{n}")["failures"] for n in range(len(REFUSED))} == {2}


def test_the_opt_in_connects_to_the_checked_address_with_the_original_host_header(feed, receiver, db_url):
    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    resolver = StubResolver({"receiver.test": ["127.0.0.1"]})
    feed.execute("SELECT passthrough.create_webhook('refused', %s, NULL, false)", (f"http://receiver.test:{port}/hook",))
    feed.execute("SELECT passthrough.create_webhook('allowed', %s, NULL, false, true)",
                 (f"http://receiver.test:{port}/hook",))
    qualify(feed, "u1")
    network = RecordingNetwork(route_to=("127.0.0.1", port))
    outcomes = {o.name: o for o in deliver(db_url, resolve=resolver, network_backend=network)[0]}
    assert (outcomes["allowed"].status, outcomes["allowed"].moved) == (200, True)
    assert outcomes["refused"].error.startswith("refused: receiver.test resolves to 127.0.0.1, a loopback address")
    assert network.attempts == [("127.0.0.1", port)]  # the address, not the name; once: the allowed webhook's
    [request] = receiver.requests
    assert request["headers"]["Host"] == f"receiver.test:{port}"


def test_the_system_resolver_refuses_localhost_and_the_receiver_sees_nothing(feed, receiver, db_url):
    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    feed.execute("SELECT passthrough.create_webhook('hook', %s, NULL, false)", (f"http://localhost:{port}/hook",))
    qualify(feed, "u1")
    [[outcome]] = deliver(db_url)
    assert outcome.error.startswith("refused: localhost resolves to ") and "a loopback address" in outcome.error
    assert receiver.requests == []


def test_dns_rebinding_a_name_public_on_one_delivery_and_private_on_the_next_is_refused(feed, receiver, db_url):
    """Creating a webhook resolves nothing (a name may change its answer at any time); each connection resolves
    the name and connects to the address it checked. Here the name answers a public address for the first
    delivery (the test network routes it to the local receiver), then 169.254.169.254."""
    port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
    resolver = StubResolver({"rebind.test": [["93.184.215.14"], ["169.254.169.254"]]})
    network = RecordingNetwork(route_to=("127.0.0.1", port))
    feed.execute("SELECT passthrough.create_webhook('hook', %s, NULL, false)", (f"http://rebind.test:{port}/hook",))
    qualify(feed, "u1")
    [[first]] = deliver(db_url, resolve=resolver, network_backend=network)
    assert (first.status, first.moved) == (200, True)
    assert network.attempts == [("93.184.215.14", port)]
    qualify(feed, "u2")
    [[second]] = deliver(db_url, resolve=resolver, network_backend=network)
    expected = ("refused: rebind.test resolves to 169.254.169.254, a link-local address; create the webhook with "
                "--allow-private-network to allow it")
    assert second.error == expected and not second.moved
    assert network.attempts == [("93.184.215.14", port)]  # no second connection
    assert resolver.calls == ["rebind.test", "rebind.test"]
    assert [c["identifier"] for c in receiver.acknowledged_changes()] == ["u1"]
    hook = webhook(feed)
    assert (hook["last_error"], hook["failures"]) == (expected, 1)
