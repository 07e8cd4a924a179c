"""Option definitions shared by the CLI commands, declared once (DESIGN.md §3.9).

Choices are ``Literal`` types, so typer refuses a wrong value with the list of right ones before
a command runs; the packages' own tuples of the same names are checked against them by the tests.

A stage command's options are generated from its config model (:func:`config_parameters`), so
a new config field needs no CLI code; ``--set`` (:func:`parse_sets`) reaches every field,
nested sections included.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Callable, Literal, Optional, Union, get_args, get_origin

import typer
from pydantic import BaseModel

InputFormat = Literal["auto", "prmfactory", "gsm8k", "math"]  # prmfactory.inputs.FORMATS
PrmFormat = Literal["auto", "prmfactory", "qwen2.5-math-prm", "math-shepherd", "rlhflow"]  # auto + prm.public.PRM_FORMATS
ScoringDtype = Literal["float32", "bfloat16", "float16"]  # prmfactory.prm.scorers.SCORING_DTYPES
ScoringBackend = Literal["transformers", "vllm"]  # prmfactory.prm.scorers.SCORERS
Aggregation = Literal["min", "last", "prod", "mean"]  # prmfactory.prm.rewards.AGGREGATIONS
ToySplit = Literal["train", "test"]  # prmfactory.toy.problems.Split

InputOpt = Annotated[Path, typer.Option("--input", "-i", help="Problems as JSONL ({id?, problem, answer}, GSM8K or MATH shape).")]
FormatOpt = Annotated[InputFormat, typer.Option("--format", help="Input shape (GSM8K's, MATH's, ours; auto: by the fields).")]
OutputRunOpt = Annotated[Path, typer.Option("--output", "-o", help="Run folder to create or resume.")]
RunOpt = Annotated[Path, typer.Option("--run", help="Run folder to read and extend.")]
# Stage commands take a run's location as text: a local path, or a URL of any fsspec filesystem
# (s3://bucket/run, gs://…, memory://…), whose manifest is then a commit log (prmfactory.store).
OutputLocationOpt = Annotated[str, typer.Option("--output", "-o", help="Run folder to create or resume: a path, "
                                                "or a URL such as s3://bucket/run.")]
RunLocationOpt = Annotated[str, typer.Option("--run", help="Run folder to read and extend: a path, or a URL such "
                                             "as s3://bucket/run.")]
RunArg = Annotated[Path, typer.Argument(help="Run folder.", exists=True, file_okay=False)]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (flat, or a pipelines/*.yaml file).", exists=True, dir_okay=False)]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="Process at most this many problems.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Discard this stage's outputs and everything computed from them, and rerun.")]
SkipInvalidOpt = Annotated[bool, typer.Option("--skip-invalid", help="Process valid lines; write bad ones to RUN/rejects.jsonl.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
RayAddressOpt = Annotated[Optional[str], typer.Option(
    "--ray-address", help="Run on Ray: `local` starts a cluster on this machine, `auto` joins the running one, "
                          "`ray://host:port` connects through Ray Client. Unset: in this process.")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=1, help="Ray workers, each with its own engine "
                                                   "(default: as many as the cluster's GPUs, or CPUs, hold).")]
GpusPerWorkerOpt = Annotated[Optional[float], typer.Option("--gpus-per-worker", min=0, help="GPUs per Ray worker "
                                                           "(default: the engine's tensor-parallel size where there are GPUs).")]
CpusPerWorkerOpt = Annotated[Optional[float], typer.Option("--cpus-per-worker", min=0.01, help="CPUs per Ray worker (default 1).")]
MaxAttemptsOpt = Annotated[Optional[int], typer.Option("--max-attempts", min=1, help="Workers a question may lose "
                                                       "before it is given up on (default 3).")]
CLUSTER_FLAGS = ("ray_address", "workers", "gpus_per_worker", "cpus_per_worker", "max_attempts")


def cluster_parameters() -> list[inspect.Parameter]:
    """``--ray-address``, ``--workers``, ``--gpus-per-worker``, ``--cpus-per-worker``, ``--max-attempts``."""
    options = (RayAddressOpt, WorkersOpt, GpusPerWorkerOpt, CpusPerWorkerOpt, MaxAttemptsOpt)
    return [parameter(name, option) for name, option in zip(CLUSTER_FLAGS, options)]


def cluster_values(given: dict[str, Any]) -> dict[str, Any]:
    """The cluster flags given, as the config's ``cluster`` section."""
    return {"cluster": {name: given[name] for name in CLUSTER_FLAGS if given.get(name) is not None}}


BaseUrlOpt = Annotated[Optional[str], typer.Option(help="Use an OpenAI-compatible server instead of in-process vLLM "
                                                         "(sets engine.backend=openai, engine.base_url).")]
PrmOpt = Annotated[Optional[Path], typer.Option(help="A PRM folder (from `prmfactory train-prm`, or of --prm-format).",
                                                exists=True, file_okay=False)]
PrmRequiredOpt = Annotated[Path, typer.Option("--prm", help="A PRM folder (from `prmfactory train-prm`, or of "
                                              "--prm-format).", exists=True, file_okay=False)]
BackendOpt = Annotated[ScoringBackend, typer.Option(help="PRM scorer: transformers, or vllm (discriminative PRMs).")]
PrmFormatOpt = Annotated[PrmFormat, typer.Option(
    "--prm-format", help="The PRM folder's format: auto (prmfactory's prm.json, or Qwen2.5-Math-PRM by its "
                         "architecture); math-shepherd and rlhflow PRMs must be named.")]
PrmDtypeOpt = Annotated[ScoringDtype, typer.Option(
    "--dtype", help="PRM weights dtype for scoring: bfloat16 is about 2x faster on CPUs with AVX-512 BF16.")]
EvalForceOpt = Annotated[bool, typer.Option("--force", help="Replace an earlier output of the same evaluation in "
                                                           "--output (any other folder is refused).")]
EvalOutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Folder for metrics.json, metrics.md, metrics.png.")]
ToySplitOpt = Annotated[ToySplit, typer.Option(help="Problems of the train or test split (disjoint by construction).")]
SeedOpt = Annotated[int, typer.Option(help="Generator and engine seed.")]

TemperatureOption = typer.Option(min=0.0, max=100.0, help="Sampling temperature (finite, 0 = greedy).")
CONFIG_SHORT_NAMES = {"quiet": "-q"}


def _unwrap(annotation: Any) -> tuple[Any, tuple[str, ...]]:
    """The flag type of a config field's annotation and its choices (for Literal), or (None, ()) if it has no flag."""
    if get_origin(annotation) in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            return None, ()
        annotation = args[0]
    if get_origin(annotation) is Literal:
        choices = tuple(str(c) for c in get_args(annotation))
        return str, choices
    if annotation in (str, int, float, bool):
        return annotation, ()
    return None, ()


def _has_flag(field: Any) -> bool:
    return _unwrap(field.annotation)[0] is not None


def config_parameters(model: type[BaseModel], skip: set[str]) -> list[inspect.Parameter]:
    """One typer option per scalar field of a stage config: its description as help, its default shown.

    Every option defaults to None, so only flags actually given override the ``--config`` file.
    Nested sections and mappings have no flag of their own; ``--set`` reaches them.
    """
    parameters = []
    for name, field in model.model_fields.items():
        flag_type, choices = _unwrap(field.annotation)
        if name in skip or flag_type is None:
            continue
        dash = name.replace("_", "-")
        declarations = [f"--{dash}/--no-{dash}" if flag_type is bool else f"--{dash}"]
        if name in CONFIG_SHORT_NAMES:
            declarations.append(CONFIG_SHORT_NAMES[name])
        text = field.description or ""
        if choices:
            text += f" One of: {', '.join(choices)}."
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        if field.is_required():
            text += " (required)"
        elif default is not None and "default" not in text and flag_type is not bool:
            text += f" (default: {default})"
        option = typer.Option(*declarations, help=text, show_default=False)
        parameters.append(parameter(name, Annotated[Optional[flag_type], option]))
    return parameters


def settable_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key ``--set`` accepts (a mapping field takes any key below it: ``hybrid_weights.mc``)."""
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += settable_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}" + (".KEY" if get_origin(annotation) is dict else ""))
    return keys


def parse_sets(model: type[BaseModel], assignments: list[str]) -> dict[str, Any]:
    """``--set section.field=value`` assignments as a nested mapping (values read as YAML scalars)."""
    import yaml

    from prmfactory.errors import UsageError

    valid = settable_keys(model)
    result: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set engine.max_num_seqs=64")
        parts = key.split(".")
        mapping_key = ".".join(parts[:-1]) + ".KEY" if len(parts) > 1 else None
        if key not in valid and mapping_key not in valid:
            raise UsageError(f"--set {key}: unknown key (valid: {', '.join(valid)})")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return result


def keys_without_flags(model: type[BaseModel]) -> list[str]:
    """The ``--set`` keys no flag of their own reaches (nested sections, mappings, lists)."""
    return [k for k in settable_keys(model) if k not in model.model_fields or not _has_flag(model.model_fields[k])]


SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="Set any config field, nested ones too (a dotted key: engine.seed=7); "
                                       "repeatable. The keys without a flag of their own are listed below.")]


def stage_command(register_command: Callable, wrap: Callable, stage: str, params: list[inspect.Parameter],
                  help: str) -> Callable:
    """Register the command of ``stage``: ``params`` (its own options), ``--config``, ``--set`` and one option
    per field of the stage's config model. The decorated body gets its own options and a ``build(extra)`` that
    makes the stage config from the config file, ``--set``, ``extra`` and the flags given, in that order.
    ``register_command(stage, panel, epilog)`` registers the command; ``wrap`` turns errors into one-line messages
    (the CLI's ``handled``)."""

    def register(body: Callable[[dict[str, Any], Callable[[dict[str, Any]], Any]], None]) -> Callable:
        from prmfactory.stages import config_model

        model = config_model(stage)
        own = [p.name for p in params]
        common = [parameter("config", ConfigOpt), parameter("set_values", SetOpt)]
        generated = config_parameters(model, skip=set(own))

        def run_command(**kwargs: Any) -> None:
            from prmfactory.config import build_config, merge

            config_file, sets = kwargs.pop("config"), kwargs.pop("set_values") or []
            given = {name: kwargs.pop(name) for name in own}

            def build(extra: dict[str, Any]) -> Any:
                values = parse_sets(model, sets)
                merge(values, extra)
                merge(values, kwargs)
                return build_config(model, stage, config_file, values)

            body(given, build)

        run_command.__signature__ = inspect.Signature([*params, *common, *generated])  # type: ignore[attr-defined]
        run_command.__doc__ = help
        run_command.__name__ = stage.replace("-", "_")
        epilog = f"--set keys without a flag of their own: {', '.join(keys_without_flags(model))}."
        register_command(stage, HELP_PANELS[stage], epilog)(wrap(run_command))
        return body

    return register


def parameter(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def exactly_one(given: dict[str, Any], **flags: str) -> None:
    """Refuse a command given none or several of its alternative inputs (``flags``: name → how to write it)."""
    from prmfactory.errors import UsageError

    if sum(given[name] is not None for name in flags) != 1:
        raise UsageError(f"give exactly one of {' or '.join(flags.values())}")


# `prmfactory --help` groups its commands in these panels (typer's rich_help_panel), as lighteval does.
HELP_PANELS = {"mcts": "Stages", "verify": "Stages", "judge": "Stages", "filter": "Stages", "train-prm": "Stages",
               "run": "Stages", "demo": "Stages", "eval": "Evaluation", "serve": "Serving", "import": "Data",
               "publish": "Data", "stats": "Data", "sql": "Data", "toy": "Data", "models": "Models"}
