"""The notebooks: kept paired without outputs, and run top to bottom against a real export."""

from __future__ import annotations

import pytest

from analytics import notebooks


@pytest.mark.parametrize("name", notebooks.NAMES)
def test_notebook_is_paired_and_has_no_outputs(name):
    script, ipynb = notebooks.paired(name)
    assert script.exists() and ipynb.exists()
    nb = notebooks.read(name)
    assert notebooks.sources(nb) == notebooks.script_sources(name), (
        f"{ipynb.name} and {script.name} differ: run `jupytext --sync {script}`"
    )
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", notebooks.NAMES)
def test_notebook_runs_against_an_export(exported, name):
    nb = notebooks.execute(name, exported.out, timeout=60)
    images = [
        o for cell in nb.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 3
    if name == "delivery_metrics":
        assert notebooks.figure(nb, "delivery_rates").startswith(b"\x89PNG")
