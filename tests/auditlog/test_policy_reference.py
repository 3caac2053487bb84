"""The policy reference cannot drift: its rows are the loader's keys, and the README holds its table."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from auditlog import _policy_loader as loader
from auditlog import policy
from auditlog.cli.app import app
from auditlog.policy_reference import ROWS, render

README = Path(__file__).resolve().parents[2] / "README.md"


def loader_keys() -> set[str]:
    """Every key the loader accepts, spelled as the reference spells it."""
    keys = {k for k in loader.TOP_KEYS if k not in ("defaults", "rules", "readers", "operators", "paths")}
    keys |= {f"paths.{k}" for k in loader.PATH_FIELDS}
    keys |= {f"defaults.{k}" for k in loader.DEFAULT_FIELDS}
    keys |= {f"rules[].{k}" for k in loader.RULE_FIELDS if k != "match"}
    keys |= {f"rules[].match.{k}" for k in policy.MATCH_FIELDS}
    keys |= {"readers.NAME.scopes", "readers.NAME.tenants", "operators.NAME.scopes"}
    return keys


class TestPolicyReference:
    def test_a_row_for_every_key_the_loader_accepts(self) -> None:
        """No key is missing from the reference, and the reference documents no key the loader refuses."""
        documented = {r.key for r in ROWS}
        assert loader_keys() - documented == set(), "document the new key in auditlog/policy_reference.py"
        assert set() == documented - loader_keys()

    def test_readme_holds_the_generated_table(self) -> None:
        """The README's table is render()'s text (regenerate it after changing a row)."""
        text = README.read_text()
        start = text.index("<!-- policy-reference:start -->\n") + len("<!-- policy-reference:start -->\n")
        end = text.index("<!-- policy-reference:end -->")
        assert render() == text[start:end]

    def test_cli_prints_it(self) -> None:
        """`auditlog policy reference` prints the same table."""
        res = CliRunner().invoke(app, ["policy", "reference"])
        assert (0, render()) == (res.exit_code, res.stdout)
