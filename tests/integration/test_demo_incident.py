"""`auditlog demo`, then the investigation it prints: the incident's timeline, its denials, and ``find``.

The demo runs as a subprocess (its own servers on 127.0.0.1); the follow-up commands are taken from its
output, exactly as printed, and run through the real CLI (``auditlog.cli.app.app``) with ``--json``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from auditlog.canaries import load_canaries, scan
from auditlog.cli.app import app
from tests.conftest import corpus

ROOT = Path(__file__).resolve().parents[2]
CANARIES = load_canaries()
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# The stolen-token steps, in the order the script sends them: (kind, method, what, allowed). The MCP
# session's opening request ("server/discover" or "initialize", by SDK version) is checked by kind only.
INCIDENT_STEPS = [
    ("authz.denied", "GET", "/admin/export", False),
    ("http.request", "GET", "/orders/{order_id}", True),
    ("mcp.request", "<session>", None, True),
    ("authz.denied", "tools/call", "export_customers", False),
    ("authz.denied", "tools/call", "delete_customer", False),
]
# What the demo prints to produce the planted token on stdin (it names the canary, never its value).
# The demo names the interpreter that ran it, so the pipe works outside an activated virtualenv.
TOKEN_PIPE = (
    shlex.quote(sys.executable)
    + """ -c 'from auditlog.canaries import load_canaries as c; print(c().values["bearer"])'"""
)
# The calls that carried the planted token: (kind, what, the fingerprinted fields that matched).
TOKEN_CALLS = [
    ("authz.denied", "export_customers", ["upstream_token"]),
    ("authz.denied", "delete_customer", ["upstream_token"]),
]


@dataclass(frozen=True, slots=True)
class Investigated:
    """The demo's directory, its summary rows, and what each printed follow-up command answered."""

    directory: Path
    rows: dict[str, str]
    commands: dict[str, str]
    token: str
    timeline: list[dict[str, Any]]
    denials: list[dict[str, Any]]
    find: list[dict[str, Any]]
    outputs: Path


def _summary(stdout: str) -> dict[str, str]:
    """The two-column summary table as {label: value} (one line per row: the output is wide)."""
    rows: dict[str, str] = {}
    for line in _ANSI.sub("", stdout).splitlines():
        cells = line.split("│")
        if len(cells) == 4 and not cells[0].strip() and not cells[3].strip():
            rows[cells[1].strip()] = cells[2].strip()
    return rows


def _cli(command: str, *extra: str, input: str | None = None) -> Any:
    argv = shlex.split(command)
    assert "auditlog" == argv[0]
    res = CliRunner().invoke(app, [*argv[1:], *extra], input=input)
    assert 0 == res.exit_code, res.output
    return res


@pytest.fixture(scope="module")
def investigated(tmp_path_factory: pytest.TempPathFactory) -> Investigated:
    tmp = tmp_path_factory.mktemp("incident")
    d = tmp / "demo"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}  # wide: one line per table row
    env.pop("FORCE_COLOR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "auditlog", "demo", "--dir", str(d)],
        capture_output=True,
        cwd=tmp,
        env=env,
        timeout=120,
    )
    assert 0 == proc.returncode, proc.stdout.decode() + proc.stderr.decode()
    outputs = tmp / "outputs"
    outputs.mkdir()
    (outputs / "demo.txt").write_bytes(proc.stdout + proc.stderr)
    rows = _summary(proc.stdout.decode())
    commands = {}
    for line in _ANSI.sub("", proc.stdout.decode()).splitlines():
        value = line.strip()
        if value.startswith("auditlog query ") or " -c " in value.split(" | ", 1)[0]:
            sub = shlex.split(value.rsplit(" | ", 1)[-1])[3]
            commands[sub] = value
    assert {"timeline", "denials", "find"} == set(commands)

    producer, query = commands["find"].rsplit(" | ", 1)
    argv = shlex.split(producer)
    assert Path(argv[0]).name.startswith("python")  # the interpreter that ran the demo
    made = subprocess.run([sys.executable, *argv[1:]], capture_output=True, env=env, timeout=30, check=True)
    token = made.stdout.decode().rstrip("\n")

    results = {}
    for name, command, stdin in (
        ("timeline", commands["timeline"], None),
        ("denials", commands["denials"], None),
        ("find", query, token + "\n"),
    ):
        res = _cli(command, "--json", input=stdin)
        (outputs / f"{name}.txt").write_text(res.output)
        results[name] = orjson.loads(res.stdout)
    return Investigated(
        directory=d,
        rows=rows,
        commands=commands,
        token=token,
        timeline=results["timeline"],
        denials=results["denials"],
        find=results["find"],
        outputs=outputs,
    )


@pytest.fixture(scope="module")
def cid(investigated: Investigated) -> str:
    return investigated.rows["incident correlation id (every stolen-token call)"]


class TestDemoIncident:
    def test_prints_the_incident_id_and_the_commands(self, investigated: Investigated, cid: str) -> None:
        """The demo prints a W3C trace id and the exact timeline / denials / find commands for it."""
        d = investigated.directory
        tail = f"--key-file {d}/demo.key"
        assert re.fullmatch(r"[0-9a-f]{32}", cid)
        assert {
            "timeline": f"auditlog query {d}/journal timeline {cid} {tail}",
            "denials": f"auditlog query {d}/journal denials {tail}",
            "find": f"{TOKEN_PIPE} | auditlog query {d}/journal find - {tail}",
        } == investigated.commands
        assert "yes" == investigated.rows["every request and tool call exactly once"]

    def test_the_find_command_pipes_the_planted_canary(self, investigated: Investigated) -> None:
        """The printed pipe produces the planted token, which no printed line holds."""
        assert CANARIES.values["bearer"] == investigated.token

    def test_timeline_lists_every_step_in_order(self, investigated: Investigated, cid: str) -> None:
        """The incident's timeline holds every stolen-token step, in time and journal order, nothing else."""
        rows = investigated.timeline
        actual = [
            (r["kind"], "<session>" if r["kind"] == "mcp.request" else r["method"], r["what"], r["allowed"])
            for r in rows
        ]
        assert INCIDENT_STEPS == actual
        assert {"support-7"} == {r["actor"] for r in rows}
        assert sorted(rows, key=lambda r: (r["ts"], r["seq"])) == rows
        assert sorted({r["seq"] for r in rows}) == [r["seq"] for r in rows]

    def test_find_names_exactly_the_calls_that_carried_the_token(
        self, investigated: Investigated, cid: str
    ) -> None:
        """`find -` with the planted token on stdin names the two admin tool calls, by their fingerprint."""
        assert TOKEN_CALLS == [(r["kind"], r["what"], r["fields"]) for r in investigated.find]
        assert {cid} == {r["correlation_id"] for r in investigated.find}
        assert "2 / 2" == next(v for k, v in investigated.rows.items() if k.startswith("calls carrying"))

    def test_denials_list_the_stolen_token_calls(self, investigated: Investigated, cid: str) -> None:
        """Every refused stolen-token call is a denial of the incident; no other denial is support-7's."""
        mine = [
            (r["what"], r["method"], r["actor"], r["client_id"], r["reason"])
            for r in investigated.denials
            if r["correlation_id"] == cid
        ]
        assert [
            ("/admin/export", "GET", "support-7", None, "missing_scopes"),
            ("export_customers", "tools/call", "support-7", "helpdesk", "missing_scopes"),
            ("delete_customer", "tools/call", "support-7", "helpdesk", "missing_scopes"),
        ] == mine
        assert {cid} == {r["correlation_id"] for r in investigated.denials if r["actor"] == "support-7"}

    def test_no_leaks_and_the_chain_still_verifies(self, investigated: Investigated) -> None:
        """After the investigation (journaled into the demo's journal): no canary anywhere, chain intact."""
        d = investigated.directory
        res = CliRunner().invoke(app, ["verify", str(d / "journal"), "--key-file", str(d / "demo.key")])
        assert 0 == res.exit_code, res.output
        assert [] == scan(d, investigated.outputs, canaries=corpus())
