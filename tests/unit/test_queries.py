import re
from pathlib import Path

import pytest

from service import db

SERVICE = Path(db.__file__).resolve().parent


def test_every_query_name_used_in_code_exists():
    used = set()
    for path in SERVICE.rglob("*.py"):
        used |= set(re.findall(r'Q\["(\w+)"\]', path.read_text()))
    assert used, "no named queries found in the code"
    assert used <= set(db.Q), f"missing queries: {used - set(db.Q)}"


def test_duplicate_names_are_refused(tmp_path):
    (tmp_path / "a.sql").write_text("-- name: x\nSELECT 1;\n-- name: x\nSELECT 2;\n")
    with pytest.raises(ValueError, match="duplicate"):
        db.load_queries(tmp_path)


def test_migrations_are_numbered_in_order():
    versions = [v for v, _, _ in db.migrations()]
    assert versions == sorted(versions) and versions[0] == 1
