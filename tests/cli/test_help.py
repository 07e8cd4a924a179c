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


def test_the_choices_the_flags_offer_are_the_ones_the_package_takes():
    """The CLI spells its choices as Literal types (light to import for --help); they must stay the package's."""
    from typing import get_args

    from prmfactory.cli import options as opt
    from prmfactory.eval.processbench import ON_TOO_LONG
    from prmfactory.inputs import FORMATS
    from prmfactory.prm.public import PRM_FORMATS
    from prmfactory.prm.rewards import AGGREGATIONS
    from prmfactory.prm.scorers import SCORERS, SCORING_DTYPES
    from prmfactory.serve.app import Aggregate
    from prmfactory.serve.launch import ServeConfig
    from prmfactory.toy.problems import Split

    assert get_args(opt.InputFormat) == FORMATS
    assert get_args(opt.PrmFormat) == ("auto", *PRM_FORMATS)
    assert get_args(opt.ScoringDtype) == SCORING_DTYPES
    assert set(get_args(opt.ScoringBackend)) == {backend for _, backend in SCORERS}
    assert get_args(opt.Aggregation) == get_args(Aggregate) == tuple(AGGREGATIONS)
    assert get_args(opt.ToySplit) == get_args(Split)
    assert get_args(ServeConfig.model_fields["backend"].annotation) == get_args(opt.ScoringBackend)
    on_too_long = CliRunner().invoke(app, ["eval", "processbench", "--help"], env={"COLUMNS": "200"}).output
    assert "<" + "|".join(ON_TOO_LONG) + ">" in on_too_long
