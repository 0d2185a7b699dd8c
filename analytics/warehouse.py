"""The export's DuckDB file: views over the Parquet files, the staged models, the run history.

Views use paths relative to the export folder; `connect()` opens a file for reading with the
search path set, so an export folder can be moved or copied whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from analytics import sql
from analytics.extract import EVENT_SCHEMA, READ_MODELS

DATABASE = "kapso.duckdb"
# Only what is compiled in: an export must never download an extension.
_CONFIG = {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}


@dataclass(frozen=True)
class Run:
    run: int
    started_at: datetime
    finished_at: datetime
    from_position: int
    to_position: int
    new_events: int
    checkpoints: dict


def _open(path: Path, export_dir: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path), read_only=read_only, config=dict(_CONFIG))
    con.execute("SET file_search_path = ?", [str(Path(export_dir).resolve())])
    con.execute("SET TimeZone = 'UTC'")
    return con


def connect(export_dir: Path | str) -> duckdb.DuckDBPyConnection:
    """Open the committed export in `export_dir` read-only (views resolve against the folder)."""
    export_dir = Path(export_dir)
    path = export_dir / DATABASE
    if not path.exists():
        raise FileNotFoundError(f"no export at {path}: run `kapso-sink export` first")
    return _open(path, export_dir, read_only=True)


def runs(export_dir: Path) -> list[Run]:
    """The export runs recorded by the committed export (empty when there is none)."""
    path = export_dir / DATABASE
    if not path.exists():
        return []
    con = duckdb.connect(str(path), read_only=True, config=dict(_CONFIG))
    try:
        rows = con.execute("SELECT * FROM export_runs ORDER BY run").fetchall()
    finally:
        con.close()
    return [Run(*row[:6], json.loads(row[6])) for row in rows]


def build(path: Path, export_dir: Path, history: list[Run], has_events: bool) -> None:
    """Write a complete export database at `path` for the newest run in `history`."""
    newest = history[-1]
    con = _open(path, export_dir, read_only=False)
    try:
        con.execute(sql.DUCK["export_runs"])
        con.executemany(
            "INSERT INTO export_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.run,
                    r.started_at,
                    r.finished_at,
                    r.from_position,
                    r.to_position,
                    r.new_events,
                    json.dumps(r.checkpoints),
                )
                for r in history
            ],
        )
        if has_events:
            con.execute(sql.DUCK["raw_events"].format(until=newest.to_position))
        else:
            _empty_events(con)
        for name in READ_MODELS:
            con.execute(sql.DUCK["raw_read_model"].format(name=name, run=newest.run))
        for model in sql.models():
            con.execute(f"CREATE VIEW {model.name} AS {model.sql}")
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _empty_events(con: duckdb.DuckDBPyConnection) -> None:
    empty = pa.table(
        {**{f.name: pa.array([], f.type) for f in EVENT_SCHEMA}, "day": pa.array([], pa.date32())}
    )
    con.register("empty_events", empty)
    con.execute("CREATE TABLE raw_events AS SELECT * FROM empty_events")
    con.unregister("empty_events")
