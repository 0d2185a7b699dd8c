"""The analytics SQL under sql/analytics: named statements (`_*.sql`) and staged models."""

from __future__ import annotations

import graphlib
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from service import db

DIR = Path(__file__).resolve().parent.parent / "sql" / "analytics"
_GRAIN = re.compile(r"^--\s*grain:\s*(.+?)\s*$", re.M)


def load_statements(path: Path) -> MappingProxyType:
    """`-- name: x` statements of one file, read-only; duplicates are an error."""
    return MappingProxyType(db.parse_statements(path))


PG = load_statements(DIR / "_postgres.sql")
DUCK = load_statements(DIR / "_duckdb.sql")


@dataclass(frozen=True)
class Model:
    name: str
    sql: str
    grain: tuple[str, ...]  # columns that are unique together and never null


def models(folder: Path = DIR) -> list[Model]:
    """Every model, each after the models it selects from (staging, then marts)."""
    found = {}
    for path in sorted(p for p in folder.glob("*.sql") if not p.name.startswith("_")):
        text = path.read_text()
        grain = _GRAIN.search(text)
        if grain is None:
            raise ValueError(f"{path.name} declares no `-- grain:` line")
        columns = tuple(c.strip() for c in grain.group(1).split(","))
        found[path.stem] = Model(path.stem, text.strip().rstrip(";"), columns)
    graph = graphlib.TopologicalSorter()
    for model in found.values():
        words = set(re.findall(r"\w+", model.sql))
        graph.add(model.name, *sorted(words & (found.keys() - {model.name})))
    return [found[name] for name in graph.static_order()]
