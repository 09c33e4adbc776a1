"""Packaged migrations: apply the versioned SQL scripts shipped in ``pyapp/sql`` to a database.

The scripts follow PostgreSQL's extension naming, so the same files serve ``CREATE EXTENSION``:
``passthrough--X.Y.Z.sql`` installs version X.Y.Z from nothing and ``passthrough--A--B.sql`` upgrades
A to B. A fresh database gets the oldest install script, then every upgrade in the chain, so every
database has run exactly the same files. Each file runs in its own transaction and is recorded with
its SHA-256; a recorded file whose text has since changed is refused (migrations roll forward only).
A session advisory lock makes concurrent migrators safe.

``migrate`` and ``status`` take an open DB-API connection from psycopg or pg8000 (not autocommit).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

LEDGER_SCHEMA = "passthrough_migrations"
# pg_advisory_lock key: the first 8 bytes of sha256("passthrough migrate"), as a signed bigint.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"passthrough migrate").digest()[:8], "big", signed=True)

_INSTALL = re.compile(r"^passthrough--(\d+\.\d+\.\d+)\.sql$")
_UPGRADE = re.compile(r"^passthrough--(\d+\.\d+\.\d+)--(\d+\.\d+\.\d+)\.sql$")

_LEDGER_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {LEDGER_SCHEMA};
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.applied (
  filename   text        PRIMARY KEY,
  version    text        NOT NULL,
  sha256     text        NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  applied_by text        NOT NULL DEFAULT current_user
);
COMMENT ON TABLE {LEDGER_SCHEMA}.applied IS
  'Passthrough migration scripts applied by the packaged migrator, with the SHA-256 of each.';
"""


class MigrationError(RuntimeError):
    """The database cannot be migrated safely; the message says why and what to do."""


@dataclass(frozen=True)
class Migration:
    filename: str
    version: str  # the version the database is at after this file
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def packaged_migrations(directory=None) -> list[Migration]:
    """The ordered scripts a fresh database runs: the oldest install script, then the upgrade chain."""
    root = directory if directory is not None else resources.files("pyapp") / "sql"
    files = {entry.name: entry for entry in root.iterdir() if entry.name.endswith(".sql")}
    installs = sorted((m.group(1) for m in map(_INSTALL.match, files) if m), key=_version_key)
    upgrades = {m.group(1): (m.group(2), m.group(0)) for m in map(_UPGRADE.match, files) if m}
    if not installs:
        raise MigrationError(f"no passthrough--<version>.sql install script in {root}; run `make sql`")
    version = installs[0]
    name = f"passthrough--{version}.sql"
    chain = [Migration(name, version, files[name].read_text(encoding="utf-8"))]
    while version in upgrades:
        version, name = upgrades.pop(version)
        chain.append(Migration(name, version, files[name].read_text(encoding="utf-8")))
    return chain


def _applied(cursor) -> dict[str, str]:
    cursor.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{LEDGER_SCHEMA}.applied",)
    )
    if not cursor.fetchone()[0]:
        return {}
    cursor.execute(f"SELECT filename, sha256 FROM {LEDGER_SCHEMA}.applied")
    return dict(cursor.fetchall())


def _check_history(applied: dict[str, str], chain: list[Migration]) -> None:
    known = {m.filename: m for m in chain}
    for filename, digest in sorted(applied.items()):
        migration = known.get(filename)
        if migration is None:
            raise MigrationError(
                f"the database has migration {filename} applied, which this package does not ship: "
                "it was migrated by a newer Passthrough; upgrade the package instead"
            )
        if migration.sha256 != digest:
            raise MigrationError(
                f"migration {filename} was changed after it was applied "
                f"(recorded sha256 {digest[:12]}..., packaged {migration.sha256[:12]}...): "
                "applied migrations are never edited; add a new upgrade script instead"
            )


def migrate(conn, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the pending packaged migrations; return the file names applied (empty when up to date)."""
    chain = migrations if migrations is not None else packaged_migrations()
    cursor = conn.cursor()
    conn.commit()  # start from a clean transaction state
    cursor.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    conn.commit()
    try:
        cursor.execute(_LEDGER_DDL)
        conn.commit()
        applied = _applied(cursor)
        conn.commit()
        _check_history(applied, chain)
        done = []
        for migration in chain:
            if migration.filename in applied:
                continue
            try:
                cursor.execute(migration.sql)
                cursor.execute(
                    f"INSERT INTO {LEDGER_SCHEMA}.applied (filename, version, sha256) VALUES (%s, %s, %s)",
                    (migration.filename, migration.version, migration.sha256),
                )
                conn.commit()
            except Exception:
                conn.rollback()
                raise
            done.append(migration.filename)
        return done
    finally:
        cursor.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        conn.commit()


def status(conn, migrations: list[Migration] | None = None) -> list[dict]:
    """One entry per packaged migration: filename, version, and whether it is applied (and when)."""
    chain = migrations if migrations is not None else packaged_migrations()
    cursor = conn.cursor()
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{LEDGER_SCHEMA}.applied",))
    rows = {}
    if cursor.fetchone()[0]:
        cursor.execute(f"SELECT filename, sha256, applied_at FROM {LEDGER_SCHEMA}.applied")
        rows = {name: (digest, at) for name, digest, at in cursor.fetchall()}
    conn.rollback()
    result = []
    for migration in chain:
        digest, applied_at = rows.get(migration.filename, (None, None))
        result.append(
            {
                "filename": migration.filename,
                "version": migration.version,
                "applied": digest is not None,
                "applied_at": applied_at,
                "changed_since_applied": digest is not None and digest != migration.sha256,
            }
        )
    return result
