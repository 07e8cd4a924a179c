"""The ``prmfactory`` typer app, its command groups and the one-line error handling of every command."""

from __future__ import annotations

import functools
from typing import Annotated, Callable

import typer

from prmfactory.cli.options import HELP_PANELS
from prmfactory.errors import PrmfactoryError

app = typer.Typer(name="prmfactory", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
toy_app = typer.Typer(help="The offline arithmetic toy domain: problems, oracle, tiny policy and judge.",
                      no_args_is_help=True)
models_app = typer.Typer(help="Model names: the toy models, GGUF aliases (smollm2) and the converted-GGUF cache.",
                         no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate a PRM on ProcessBench, PRMBench or by Best-of-N reranking.", no_args_is_help=True)
app.add_typer(toy_app, name="toy", rich_help_panel=HELP_PANELS["toy"])
app.add_typer(models_app, name="models", rich_help_panel=HELP_PANELS["models"])
app.add_typer(eval_app, name="eval", rich_help_panel=HELP_PANELS["eval"])


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", envvar="PRMFACTORY_DEBUG",
                                                 help="Show the Python stack of an error instead of one line.")] = False,
             no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip checking shards against their "
                                                     "sha256 on read (for huge runs; see BENCHMARKS.md).")] = False,
             verbose: Annotated[bool, typer.Option("--verbose", help="Show the notices of vLLM, torch and "
                                                   "transformers too (kept out by default; --debug implies it).")] = False):
    """Process-reward-model data factory: search, verify, judge, filter, train, evaluate, serve, publish."""
    import os

    if debug:
        os.environ["PRMFACTORY_DEBUG"] = "1"
    if no_verify:
        os.environ["PRMFACTORY_NO_VERIFY"] = "1"
    if not (verbose or debug):
        from prmfactory.progress import quiet_third_party

        quiet_third_party()


def _fail(message: str, code: int) -> None:
    from rich.markup import escape

    from prmfactory.progress import console

    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


_BAD_PATH = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


def _unexpected(exc: Exception) -> tuple[str, int] | None:
    """One line and an exit code for the errors a damaged file or a bad path raises anywhere; None for bugs."""
    import pyarrow as pa

    if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}", 2 if isinstance(exc, _BAD_PATH) else 1
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})", 2
    if isinstance(exc, pa.ArrowException):
        return f"damaged or unreadable Parquet data: {str(exc).splitlines()[0]}", 1
    return None


def handled(fn: Callable) -> Callable:
    """Turn errors into a one-line message and an exit code: 2 bad input or usage, 1 failure.

    prmfactory's own errors name file, line and field; a remaining OSError, UnicodeDecodeError or
    Arrow error (a damaged file the reader did not expect) is one line too. ``--debug`` (or
    PRMFACTORY_DEBUG=1) shows the stack instead.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import os

        try:
            return fn(*args, **kwargs)
        except PrmfactoryError as exc:
            if os.environ.get("PRMFACTORY_DEBUG") == "1":
                raise
            _fail(str(exc), exc.exit_code)
        except Exception as exc:
            described = None if os.environ.get("PRMFACTORY_DEBUG") == "1" else _unexpected(exc)
            if described is None:
                raise
            _fail(*described)

    return wrapper
