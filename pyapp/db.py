"""One PostgreSQL URL, two drivers.

Everything in Passthrough names a database by a single libpq-style URL::

    postgresql://user:password@host:5432/dbname
    postgresql://user:@/dbname?host=/path/to/socket/dir        # unix socket
    postgresql://user@/dbname?host=/path/to/socket/dir&port=5433

``connect(url)`` opens a psycopg 3 connection (libpq parses the URL itself) or,
with ``driver="pg8000"``, a ``pg8000.dbapi`` connection (the URL is translated
here, because pg8000 takes keyword arguments and a unix socket *file* path).
``with_database(url, dbname)`` points a URL at another database on the same
server.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

__all__ = ["DRIVERS", "connect", "pg8000_params", "with_database"]

DRIVERS = ("psycopg", "pg8000")
_SCHEMES = ("postgresql", "postgres")
DEFAULT_PORT = 5432


def connect(url: str, *, driver: str = "psycopg", autocommit: bool = False) -> Any:
    """Open a DB-API connection to ``url``.

    driver="psycopg" returns a ``psycopg.Connection``; driver="pg8000" returns a
    ``pg8000.dbapi.Connection``. Both honour ``autocommit``.
    """
    if driver == "psycopg":
        import psycopg

        _check_scheme(url)
        return psycopg.connect(url, autocommit=autocommit)
    if driver == "pg8000":
        import pg8000.dbapi

        conn = pg8000.dbapi.connect(**pg8000_params(url))
        conn.autocommit = autocommit
        return conn
    raise ValueError(f"unknown driver {driver!r}; expected one of {', '.join(DRIVERS)}")


def with_database(url: str, dbname: str) -> str:
    """Return ``url`` with its database replaced by ``dbname`` (same server, user, options)."""
    parts = urlsplit(url)
    _check_scheme(url, parts.scheme)
    query = parts.query
    if "dbname" in _parse_query(query):
        # An explicit ?dbname= would win over the path; drop it.
        query = "&".join(p for p in query.split("&") if p.split("=", 1)[0] != "dbname")
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(dbname, safe=""), query, parts.fragment))


def pg8000_params(url: str) -> dict[str, Any]:
    """Translate a libpq URL into keyword arguments for ``pg8000.dbapi.connect``.

    A host that is a directory (``?host=/run/postgresql`` or a percent-encoded
    ``postgresql://%2Frun%2Fpostgresql/db``) becomes
    ``unix_sock=<dir>/.s.PGSQL.<port>``, port defaulting to 5432.
    """
    parts = urlsplit(url)
    _check_scheme(url, parts.scheme)
    query = _parse_query(parts.query)

    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    host, port = _split_hostport(hostport)

    user = query.pop("user", None) or unquote(user) or "postgres"
    password = query.pop("password", None) or unquote(password) or None
    host = query.pop("host", None) or host or None
    port_text = query.pop("port", None) or port
    database = query.pop("dbname", None) or unquote(parts.path.lstrip("/")) or user

    if (host and "," in host) or (port_text and "," in port_text):
        raise ValueError("pg8000 does not support multi-host URLs")
    try:
        port_num = int(port_text) if port_text else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"invalid port {port_text!r} in database URL") from None

    params: dict[str, Any] = {"user": user, "database": database, "password": password}
    if host is None or host.startswith("/"):
        # libpq's default with no host is a unix socket; we only assume the
        # common Debian location when nothing else is given.
        sock_dir = host or "/var/run/postgresql"
        params["unix_sock"] = f"{sock_dir.rstrip('/')}/.s.PGSQL.{port_num}"
    else:
        params["host"] = host
        params["port"] = port_num

    if "application_name" in query:
        params["application_name"] = query.pop("application_name")
    if "connect_timeout" in query:
        params["timeout"] = int(query.pop("connect_timeout"))
    sslmode = query.pop("sslmode", "disable")
    if sslmode in ("require", "verify-ca", "verify-full"):
        ctx = ssl.create_default_context()
        if sslmode != "verify-full":
            ctx.check_hostname = False
        if sslmode == "require":
            ctx.verify_mode = ssl.CERT_NONE
        params["ssl_context"] = ctx
    elif sslmode not in ("disable", "allow", "prefer"):
        raise ValueError(f"unsupported sslmode {sslmode!r} for pg8000")
    if query:
        raise ValueError(f"URL parameters not supported with pg8000: {', '.join(sorted(query))}")
    return params


def _check_scheme(url: str, scheme: str | None = None) -> None:
    scheme = scheme if scheme is not None else urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise ValueError(f"not a PostgreSQL URL (expected postgresql://...): {url!r}")


def _parse_query(query: str) -> dict[str, str]:
    """Parse ``a=1&b=2`` the way libpq does: percent-decoding, but '+' stays '+'."""
    out: dict[str, str] = {}
    for item in query.split("&"):
        if item:
            key, _, value = item.partition("=")
            out[unquote(key)] = unquote(value)
    return out


def _split_hostport(hostport: str) -> tuple[str, str]:
    """Split ``host:port`` keeping case and percent-decoding the host ([v6]:port too)."""
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, rest.lstrip(":")
    host, _, port = hostport.partition(":")
    return unquote(host), port
