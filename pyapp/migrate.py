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


def extension_version(conn) -> str | None:
    """The version of Passthrough installed with CREATE EXTENSION, or None when it was not."""
    cursor = conn.cursor()
    cursor.execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'passthrough'")
    row = cursor.fetchone()
    conn.rollback()
    return row[0] if row else None


def _check_not_an_extension(conn, chain: list[Migration]) -> bool:
    """True when CREATE EXTENSION installed the packaged version: the migrator has nothing to do."""
    installed = extension_version(conn)
    if installed is None:
        return False
    if installed != chain[-1].version:
        raise MigrationError(
            f"Passthrough is installed as an extension at version {installed}, and this package is "
            f"{chain[-1].version}: upgrade it with ALTER EXTENSION passthrough UPDATE "
            "(after `make install-extension`), not with the migrator"
        )
    return True


def pending_migrations(
    applied: dict[str, str], installed_extension_version: str | None, migrations: list[Migration] | None = None
) -> list[str]:
    """The packaged files a database still lacks, given its ledger (filename -> sha256) and the
    passthrough extension version, if CREATE EXTENSION installed it. A file applied with other text counts
    as lacking. For callers that read those two facts themselves (the async HTTP app)."""
    chain = migrations if migrations is not None else packaged_migrations()
    if installed_extension_version is not None:
        installed = _version_key(installed_extension_version)
        return [m.filename for m in chain if _version_key(m.version) > installed]
    return [m.filename for m in chain if applied.get(m.filename) != m.sha256]


def migrate(conn, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the pending packaged migrations; return the file names applied (empty when up to date).

    A database where CREATE EXTENSION installed the packaged version is up to date; one with an older
    extension version is refused (extensions upgrade with ALTER EXTENSION ... UPDATE).
    """
    chain = migrations if migrations is not None else packaged_migrations()
    conn.commit()  # start from a clean transaction state
    if _check_not_an_extension(conn, chain):
        return []
    cursor = conn.cursor()
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
    """One entry per packaged migration: filename, version, whether it is applied, by what and when."""
    chain = migrations if migrations is not None else packaged_migrations()
    installed_as_extension = extension_version(conn)
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
        by_extension = installed_as_extension is not None and _version_key(migration.version) <= _version_key(
            installed_as_extension
        )
        result.append(
            {
                "filename": migration.filename,
                "version": migration.version,
                "applied": digest is not None or by_extension,
                "installed_by": "extension" if by_extension else ("migrator" if digest is not None else None),
                "applied_at": applied_at,
                "changed_since_applied": digest is not None and digest != migration.sha256,
            }
        )
    return result
