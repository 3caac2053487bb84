"""The incident notebook runs top to bottom under nbclient with the venv's ipykernel, and is stored clean."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "incident_reconstruction.ipynb"


def outputs_text(nb: Any) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


class TestNotebook:
    def test_stored_without_outputs(self) -> None:
        """The committed notebook has no outputs and no execution counts."""
        nb = nbformat.read(NOTEBOOK, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code)

    @pytest.mark.timeout(240)
    def test_executes(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every cell runs; the walk shows the timeline, a plot, the token's calls and a verified pack."""
        monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
        monkeypatch.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        )
        monkeypatch.setenv("TMPDIR", str(tmp_path))
        nb = nbformat.read(NOTEBOOK, as_version=4)
        client = NotebookClient(
            nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        )
        client.execute()
        text = outputs_text(nb)
        assert "verifies: True" in text
        assert "timeline" in text and "(3 rows)" in text  # find(token): the three calls that carried it
        images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert 1 == len(images)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert [] == errors
