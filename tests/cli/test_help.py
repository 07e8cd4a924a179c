"""`--help` for humans at 80 columns: no flag name cut short, values named as users know them, choices listed."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from prmfactory.cli import app

COMMANDS = [[], ["mcts"], ["verify"], ["judge"], ["filter"], ["train-prm"], ["run"], ["demo"], ["serve"], ["publish"],
            ["stats"], ["sql"], ["import"], ["eval"], ["eval", "processbench"], ["eval", "prmbench"], ["eval", "bon"],
            ["toy"], ["toy", "problems"], ["toy", "processbench"], ["toy", "build"], ["toy", "check"], ["models"],
            ["models", "list"], ["models", "prepare"]]
PYTHON_TYPES = re.compile(r"<(bool|int|float|str|path|file|text)\b[^>]*>|list\[", re.IGNORECASE)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "prmfactory")
def test_help_at_80_columns_cuts_no_flag_and_names_values_plainly(command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert "…" not in result.output, [line for line in result.output.splitlines() if "…" in line]
    assert not PYTHON_TYPES.search(result.output), PYTHON_TYPES.findall(result.output)


def test_a_flag_shows_its_off_form_in_its_help_and_both_forms_still_parse():
    help_text = CliRunner().invoke(app, ["filter", "--help"], env={"COLUMNS": "80"}).output
    assert "--dedupe" in help_text and "Off: --no-dedupe." in re.sub(r"\s+", " ", help_text.replace("│", " "))
    for flag in ("--dedupe", "--no-dedupe"):
        result = CliRunner().invoke(app, ["filter", "--run", "/nonexistent-run", flag])
        assert "No such option" not in result.output, result.output
