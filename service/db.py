"""Pool, migrations runner and the named-query loader."""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType

import asyncpg
import orjson
import structlog

log = structlog.get_logger("service.db")

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
MIGRATIONS_DIR = SQL_DIR / "migrations"
QUERIES_DIR = SQL_DIR / "queries"
_MIGRATION_LOCK = 7263500
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.M)


def parse_statements(path: Path, into: dict | None = None) -> dict[str, str]:
    """The `-- name: x` statements of one file (comment lines dropped); duplicates are an error."""
    found = {} if into is None else into
    parts = _NAME.split(path.read_text())
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"duplicate query name {name!r} in {path.name}")
        lines = [ln for ln in body.strip().splitlines() if not ln.startswith("--")]
        found[name] = "\n".join(lines).strip().rstrip(";")
    return found


def load_queries(folder: Path = QUERIES_DIR) -> MappingProxyType:
    """Parse every `-- name: x` statement under `folder` into a read-only mapping."""
    queries: dict[str, str] = {}
    for path in sorted(folder.glob("*.sql")):
        parse_statements(path, queries)
    return MappingProxyType(queries)


Q = load_queries()


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every numbered migration file, in order."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        version = int(path.name.split("_", 1)[0])
        found.append((version, path.stem, path.read_text()))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError("duplicate migration version")
    return found


def latest_version() -> int:
    """The schema version this process's code expects, fixed when it was loaded (as `Q` is):
    migration files that change under a running process do not make it report "pending"."""
    return _LATEST


_LATEST = max(v for v, _, _ in migrations())


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations under an advisory lock; return the names applied."""
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied_now.append(name)
            log.info("migration_applied", version=version, name=name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def schema_version(conn: asyncpg.Connection) -> int:
    """The highest applied migration (0 when none)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")


def _encode_json(value) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool connections never change session state: settings are SET LOCAL, locks are
    transaction-scoped, and LISTEN and session locks live on dedicated connections. So a
    release skips asyncpg's default reset query (UNLISTEN, RESET ALL, unlock all: a round
    trip per release, i.e. per group commit and per API query); asyncpg still rolls back a
    transaction left open."""


async def create_pool(dsn: str, *, size: int = 8, connect_timeout: float = 5.0) -> asyncpg.Pool:
    """The one pool a process uses; JSON columns decode to Python objects."""
    return await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        init=_init_connection,
        reset=_keep_session,
        timeout=connect_timeout,
        command_timeout=60,
        # DateStyle ISO: the projector's input query hands times over as text (facts.pg_time)
        server_settings={"application_name": "kapso-sink", "DateStyle": "ISO"},
    )
