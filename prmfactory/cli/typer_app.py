"""The ``prmfactory`` typer app, its command groups and the one-line error handling of every command."""

from __future__ import annotations

import contextlib
import functools
from typing import Annotated, Any, Callable, Iterator, Sequence

import typer
from typer.core import TyperCommand, TyperGroup

from prmfactory.cli.options import HELP_PANELS
from prmfactory.errors import PrmfactoryError

_METAVARS = {bool: "", int: "INT", float: "FLOAT", str: "TEXT"}


def _metavar(option: Any) -> str | None:
    """How help names an option's value; None leaves typer's (a choice lists its values)."""
    described = option.type_descriptor
    if described.is_choice:
        return None
    if described.is_path:
        return "PATH"
    return _METAVARS.get(described.annotation, "TEXT")


@contextlib.contextmanager
def _readable_options(params: Sequence[Any]) -> Iterator[None]:
    """While help is rendered: each value named as a user knows it (INT, FLOAT, PATH, TEXT; a flag takes
    none; a choice lists itself) instead of ``<int range>`` or ``<bool>``, and a flag's ``--no-…`` form
    in its help text rather than in a column of its own, where it squeezed long flag names to ``--questions-per-…``
    at 80 columns. Written by hand: typer's rich help has no setting for either."""
    options = [p for p in params if p.param_type_name == "option"]  # typer's own click: no class to test against
    labels = {p: _metavar(p) for p in params if p.param_type_name == "argument"}
    arguments = [argument for argument, label in labels.items() if label]
    saved = [(p, p.metavar, list(p.secondary_opts), p.help) for p in options]
    try:
        for argument in arguments:  # an argument's metavar is its name; its type has no setting
            argument.display_type_rich = lambda ctx, label=labels[argument]: label
        for param in options:
            if param.metavar is None:
                param.metavar = "" if param.is_flag else _metavar(param)
            if param.secondary_opts:
                param.help = f"{param.help or ''} Off: {', '.join(param.secondary_opts)}.".strip()
                param.secondary_opts = []
        yield
    finally:
        for argument in arguments:
            del argument.display_type_rich
        for param, metavar, secondary, text in saved:
            param.metavar, param.secondary_opts, param.help = metavar, secondary, text


class _ReadableHelp:
    """Help that names values as a user knows them (see :func:`_readable_options`), for a command or a group."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        with _readable_options(self.get_params(ctx)):
            super().format_help(ctx, formatter)


class ReadableHelpCommand(_ReadableHelp, TyperCommand):
    pass


class ReadableHelpGroup(_ReadableHelp, TyperGroup):
    pass


def group(**settings) -> typer.Typer:
    return typer.Typer(cls=ReadableHelpGroup, no_args_is_help=True, **settings)


def command(on: typer.Typer, name: str | None = None, **settings) -> Callable:
    """``on.command(name)`` with readable help."""
    return on.command(name, cls=ReadableHelpCommand, **settings)


app = group(name="prmfactory", add_completion=False, pretty_exceptions_enable=False)
toy_app = group(help="The offline arithmetic toy domain: problems, oracle, tiny policy and judge.")
models_app = group(help="Model names: the toy models, GGUF aliases (smollm2) and the converted-GGUF cache.")
eval_app = group(help="Evaluate a PRM on ProcessBench, PRMBench or by Best-of-N reranking.")
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
    else:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # vLLM's notices too (a library user's default hides them)


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
