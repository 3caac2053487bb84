"""Conventions every ``auditlog`` command follows, checked on its ``--help``: one exit-code scheme, no markup.

The commands are found by walking the Typer app's click commands, so a new command is checked too.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

from auditlog.cli import _options
from auditlog.cli.app import app
from auditlog.cli.query import _jsonable, _render
from auditlog.investigate import Result
from store.keys import KeyRing, MasterKey
from tests._support import write_key_file

EXIT_CODES = "Exit codes: 0 success, 1 a check failed or nothing was found, 2 bad usage or input."


def walk(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command under ``cmd`` (a click command; Typer vendors click), with its path of names."""
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from walk(sub, (*path, name))


COMMANDS = [path for path, _ in walk(typer.main.get_command(app))]


def help_text(path: tuple[str, ...]) -> str:
    """``auditlog PATH --help``, as printed (a placeholder SOURCE for the query group's subcommands)."""
    args = list(path)
    if len(path) > 1 and path[0] == "query":
        args.insert(1, "SOURCE")
    res = CliRunner().invoke(app, [*args, "--help"], terminal_width=100)
    assert 0 == res.exit_code, res.output
    return res.stdout


def _param(path: tuple[str, ...]) -> object:
    return pytest.param(path, id=" ".join(path) or "auditlog")


class TestHelp:
    @pytest.mark.parametrize("path", [_param(p) for p in COMMANDS])
    def test_states_the_exit_codes_without_markup(self, path: tuple[str, ...]) -> None:
        """Every --help states the one exit-code scheme; no RST ``literal`` or <bool> metavar shows."""
        text = help_text(path)
        flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())
        assert EXIT_CODES in flat
        assert "``" not in text and "<bool>" not in text.lower() and "[bold" not in text


class TestOutput:
    def test_json_and_csv_times_carry_a_zone(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Naive (UTC) and aware times both print as ISO 8601 with Z, in JSON and CSV."""
        naive = datetime(2026, 11, 22, 10, 0, 0, 123456)
        result = Result(name="x", columns=("ts", "n"), rows=((naive, 1), (naive.replace(tzinfo=UTC), 2)))
        _render(result, as_json=True, as_csv=False, title="x")
        rows = orjson.loads(capsys.readouterr().out)
        assert ["2026-11-22T10:00:00.123456Z"] * 2 == [r["ts"] for r in rows]
        _render(result, as_json=False, as_csv=True, title="x")
        assert "2026-11-22T10:00:00.123456Z,1" in capsys.readouterr().out
        assert "2026-11-22T10:00:00Z" == _jsonable(datetime(2026, 11, 22, 10, tzinfo=UTC))

    def test_wide_tables_fit_80_columns(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A result wider than the terminal prints one record per block, never 4-character columns."""
        monkeypatch.setattr(_options.out, "width", 80)
        columns = tuple(f"column_{i}" for i in range(14))
        row = tuple(f"value-{i}-" + "x" * 12 for i in range(14))
        with _options.out.capture() as cap:
            _render(
                Result(name="w", columns=columns, rows=(row, row)), as_json=False, as_csv=False, title="w"
            )
        text = cap.get()
        assert all(len(line) <= 80 for line in text.splitlines())
        assert all(v in text for v in row)  # nothing truncated away
        assert "column_13" in text

    def test_narrow_tables_stay_tables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A result that fits is one table with a header row."""
        monkeypatch.setattr(_options.out, "width", 80)
        with _options.out.capture() as cap:
            _render(
                Result(name="n", columns=("a", "b"), rows=(("1", "2"),)),
                as_json=False,
                as_csv=False,
                title="n",
            )
        assert "n (1 rows)" in cap.get() and "┃ a" in cap.get()


class TestKeyFile:
    def test_warns_when_group_or_world_can_read_it(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A key file readable by group or others loads, with a warning naming the fix."""
        key = write_key_file(KeyRing(MasterKey.generate()), tmp_path / "k.key")
        os.chmod(key, 0o644)
        _options.key_ring(key)
        said = " ".join(capsys.readouterr().err.split())
        assert "readable by group or others" in said and f"chmod 600 {key}" in said
        os.chmod(key, stat.S_IRUSR | stat.S_IWUSR)
        _options.key_ring(key)
        assert "" == capsys.readouterr().err


class TestUntilNow:
    def test_until_now(self, tmp_path: Path) -> None:
        """`--until now` is accepted wherever --until is."""
        from auditlog.investigate import parse_time

        assert parse_time("now") is not None
        assert parse_time("NOW ") is not None
