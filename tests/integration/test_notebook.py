"""The incident notebook runs top to bottom under nbclient with the venv's ipykernel, and is stored clean."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

import auditlog
from store.keys import KeyRing, MasterKey
from tests._support import write_hosts, write_key_file

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

    @pytest.mark.timeout(300)
    def test_executes(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every cell runs; results are DataFrames; two plots; the token's three calls; a verified pack."""
        nb = run(tmp_path, monkeypatch)
        text = outputs_text(nb)
        assert "verifies: True" in text
        assert "find: 3 events carried the value" in text
        assert len(frames(nb)) >= 8  # timeline, around, denials, reads, find, top, anomalies, sql, runs
        images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert 2 == len(images)

    @pytest.mark.timeout(300)
    def test_never_modifies_the_source(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Run over a trail of the user's: every file of it is byte-identical afterwards (the notebook
        compacts a copy, and journals its queries into a trail of its own)."""
        source = tmp_path / "users-trail"
        ring = KeyRing(MasterKey.generate())
        key_file = tmp_path / "k.key"
        key_file.write_text(ring.active.to_b64() + "\n")
        handle = auditlog.configure(journal_dir=source, key=ring, stdlib=False)
        for i in range(20):
            allowed = i % 5 != 0
            handle.emit(
                {
                    "kind": "http.request" if allowed else "authz.denied",
                    "correlation_id": f"{i:032x}",
                    "actor": {"subject": "ann" if i % 2 else "bob"},
                    "action": {"name": "/orders/{n}", "method": "GET"},
                    "decision": {"allowed": allowed, "reason": "ok" if allowed else "missing_scopes"},
                    "outcome": {"status": "ok" if allowed else "denied", "duration_ms": 1.0},
                }
            )
        handle.shutdown()
        before = snapshot(source)
        nb = run(tmp_path, monkeypatch, SOURCE=str(source), KEY_FILE=str(key_file))
        assert before == snapshot(source)
        assert "verifies: True" in outputs_text(nb)
        assert frames(nb)

    @pytest.mark.timeout(300)
    def test_reads_several_trails_as_one(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """SOURCE as a list (one trail per host): each copied and compacted, then queried and exported as
        one; the trails are left as they were."""
        hosts = write_hosts(tmp_path / "hosts")
        key_file = write_key_file(hosts.ring, tmp_path / "k.key")
        before = [snapshot(hosts.a), snapshot(hosts.b)]
        nb = run(tmp_path, monkeypatch, SOURCE=[str(hosts.a), str(hosts.b)], KEY_FILE=str(key_file))
        assert before == [snapshot(hosts.a), snapshot(hosts.b)]
        text = outputs_text(nb)
        assert f"{hosts.a}: compacted" in text and f"{hosts.b}: compacted" in text
        assert "verifies: True" in text
        assert any("host-a" in f and "host-b" in f for f in frames(nb))


def frames(nb: Any) -> list[str]:
    """The DataFrames the notebook displayed (pandas' HTML tables)."""
    return [
        html
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if 'class="dataframe"' in (html := str(out.get("data", {}).get("text/html", "")))
    ]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **params: object) -> Any:
    """Execute the notebook (parameters set in its first code cell); fail on any error output."""
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    for name, value in params.items():
        first.source += f"\n{name} = {value!r}"
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert [] == errors
    return nb
