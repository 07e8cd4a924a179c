"""The ``prmfactory`` command line (DESIGN.md §3.9): each command turns typed flags into a config and
calls one function of the package; heavy libraries load inside the commands, so ``--help`` is instant.
Errors print one line and exit 2 (bad input or usage) or 1 (failure).

* :mod:`~prmfactory.cli.typer_app` — the typer app, its groups, the one-line error handling.
* :mod:`~prmfactory.cli.options` — every shared option, and the options generated from stage configs.
* :mod:`~prmfactory.cli.stage_commands` — mcts, verify, judge, filter, train-prm, run, demo.
* :mod:`~prmfactory.cli.eval_commands`, :mod:`~prmfactory.cli.serve_command`,
  :mod:`~prmfactory.cli.data_commands` (import, publish, stats, sql), :mod:`~prmfactory.cli.toy_and_models`.
"""

from prmfactory.cli import data_commands, eval_commands, serve_command, stage_commands, toy_and_models  # noqa: F401  (registers the commands)
from prmfactory.cli.typer_app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
