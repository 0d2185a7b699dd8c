"""Running the notebooks under notebooks/ against an export: execute, render, pick a figure."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

DIR = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ("delivery_metrics", "conversations")


def paired(name: str) -> tuple[Path, Path]:
    """The notebook's percent-format script and its .ipynb twin."""
    return DIR / f"{name}.py", DIR / f"{name}.ipynb"


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(paired(name)[1], as_version=4)


def sources(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(cell type, source) of every cell: what pairing must keep equal."""
    return [(cell.cell_type, cell.source.strip()) for cell in nb.cells]


def script_sources(name: str) -> list[tuple[str, str]]:
    return sources(jupytext.read(paired(name)[0]))


def execute(name: str, export_dir: Path, *, timeout: int = 60) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in a fresh python3 kernel; a failing cell raises."""
    nb = read(name)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(DIR)}},
        extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no TCP-transport notice
    )
    env = {
        **os.environ,
        "KAPSO_SINK_EXPORT_DIR": str(Path(export_dir).resolve()),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    client.execute(env=env)
    return nb


def to_html(nb: nbformat.NotebookNode, path: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    path.write_text(body, encoding="utf-8")
    return path


def figure(nb: nbformat.NotebookNode, tag: str) -> bytes:
    """The PNG shown by the cell tagged `tag`."""
    for cell in nb.cells:
        if tag in cell.get("metadata", {}).get("tags", []):
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                if "image/png" in data:
                    return base64.b64decode(data["image/png"])
    raise LookupError(f"no cell tagged {tag!r} shows a PNG")
