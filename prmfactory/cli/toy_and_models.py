"""``prmfactory toy`` (the offline arithmetic domain) and ``prmfactory models`` (model names and the GGUF cache)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from prmfactory.cli import options as opt
from prmfactory.cli.typer_app import command, handled, models_app, toy_app


@command(toy_app, "problems")
@handled
def toy_problems(
    n: Annotated[int, typer.Option("--n", min=1, help="How many problems.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write.")],
    split: opt.ToySplitOpt = "test",
    seed: opt.SeedOpt = 0,
) -> None:
    """Write toy arithmetic problems as JSONL in the `mcts --input` format."""
    from prmfactory.fileio import atomic_write_text
    from prmfactory.toy.problems import generate, to_input_row

    rows = [to_input_row(p) for p in generate(n, split, seed)]
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, "".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} {split} problems to {output}")


@command(toy_app, "processbench")
@handled
def toy_processbench(
    n: Annotated[int, typer.Option("--n", min=1, help="How many solutions (one per problem).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file of ProcessBench records to write.")],
    split: opt.ToySplitOpt = "test",
    policy: Annotated[str, typer.Option(help="Policy that writes the solutions.")] = "toy",
    temperature: Annotated[float, opt.TemperatureOption] = 1.0,
    seed: opt.SeedOpt = 0,
    quiet: opt.QuietOpt = False,
) -> None:
    """Policy solutions to toy problems labelled by the oracle, as a ProcessBench split (id, problem, steps, label)."""
    from prmfactory.toy.bench import write_processbench

    summary = write_processbench(output, n, split=split, policy=policy, temperature=temperature, seed=seed, quiet=quiet)
    print(f"wrote {summary['solutions']} solutions to {output} ({summary['with_error']} with an error, "
          f"{summary['all_right']} all right; final-answer accuracy {summary['final_answer_accuracy']})")


@command(toy_app, "build")
@handled
def toy_build(
    retrain: Annotated[bool, typer.Option(help="Retrain the three models from the recipe (about 70 minutes, one core).")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Recipe YAML.", exists=True, dir_okay=False)] = None,
) -> None:
    """Print the local paths of the toy policy, judge and PRM base (rebuild them with --retrain)."""
    from prmfactory.config import build_config
    from prmfactory.errors import PrmfactoryError
    from prmfactory.models import TOY_MODELS, TOY_MODELS_DIR
    from prmfactory.resources import resource_dir

    if retrain:
        from prmfactory.toy.build import ToyBuildConfig, build

        recipe = config or resource_dir("pipelines") / "toy_build.yaml"
        report = build(build_config(ToyBuildConfig, "toy_build", recipe, {}), TOY_MODELS_DIR)
        print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=1))
    for name, path in TOY_MODELS.items():
        if not (path / "config.json").exists():
            raise PrmfactoryError(f"toy model {name!r} missing at {path}; run `prmfactory toy build --retrain`")
        print(f"{name}\t{path}")


@command(toy_app, "check")
@handled
def toy_check(
    input: Annotated[Path, typer.Option("--input", "-i", help="JSONL of solutions: id, problem, steps.", exists=True, dir_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL of {id, first_error}.")],
) -> None:
    """Run the ground-truth oracle over toy solutions: the first wrong step of each (-1 if none)."""
    from prmfactory.fileio import atomic_write_text
    from prmfactory.toy.oracle import check_file

    lines, problems = check_file(input)
    atomic_write_text(output, "".join(json.dumps(line) + "\n" for line in lines))
    print(f"checked {len(lines) - problems} solutions, {problems} not toy problems (see 'error'); wrote {output}")


@command(models_app, "list")
@handled
def models_list() -> None:
    """Every model alias, where it lives, and the GGUF conversions in the cache ($PRMFACTORY_MODEL_CACHE)."""
    from rich.table import Table

    from prmfactory.models import model_cache_dir, model_table
    from prmfactory.progress import console

    table = Table("name", "kind", "source", "path", title=f"models (cache {model_cache_dir()})")
    for row in model_table():
        table.add_row(row["name"], row["kind"], row["source"], row["path"])
    console.print(table)


@command(models_app, "prepare")
@handled
def models_prepare(name: Annotated[str, typer.Argument(help="An alias (smollm2, toy, ...) or a .gguf file.")]) -> None:
    """Convert a GGUF alias or file into the cache once (a lock guards concurrent runs) and print its folder."""
    from prmfactory.models import prepare_model

    print(prepare_model(name))
