"""Data commands: ``import`` a public PRM dataset, ``publish`` a run to the Hub, ``stats`` and ``sql`` over a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from prmfactory.cli import options as opt
from prmfactory.cli.typer_app import app, command, handled
from prmfactory.errors import PrmfactoryError


@command(app, "import", rich_help_panel=opt.HELP_PANELS["import"])
@handled
def import_data(
    dataset: Annotated[str, typer.Argument(help="math-shepherd, prm800k, processbench or prmbench.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="The dataset's file, or a folder of its files.", exists=True)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for part-*.parquet, rejects.jsonl, import.json, log.txt.")],
    include: Annotated[Optional[str], typer.Option(help="Of a folder, only the files whose names match this glob "
                                                        "(e.g. '*_train_*' for PRMBench's training files).")] = None,
    neutral_is_correct: Annotated[bool, typer.Option(help="PRM800K: a neutral (0) rating counts as correct "
                                                          "(TRL's conversion counts it wrong).")] = False,
    force: Annotated[bool, typer.Option(help="Replace an earlier import in --output.")] = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """A public PRM dataset as TRL stepwise Parquet for `train-prm --data DIR`; unmappable records go to rejects.jsonl."""
    from prmfactory.public_data import import_dataset

    report = import_dataset(dataset, input, output, neutral_is_correct=neutral_is_correct, force=force, quiet=quiet,
                            include=include)
    print(f"{report['rows']} rows ({report['steps']} steps, {report['positive_steps']} labelled correct), "
          f"{report['rejected']} rejected" + "".join(f"; {n} {r}" for r, n in report["rejected_by_reason"].items()))
    print(f"written to {output}; train with `prmfactory train-prm --data {output}`")


@command(app, rich_help_panel=opt.HELP_PANELS["publish"])
@handled
def publish(
    run: opt.RunOpt,
    repo_id: Annotated[str, typer.Option(help="Hub dataset repo, ORG/NAME.")],
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    revision: Annotated[Optional[str], typer.Option(help="Branch to push to.")] = None,
    create_pr: Annotated[bool, typer.Option(help="Open a pull request instead of pushing to the branch.")] = False,
    license: Annotated[str, typer.Option(help="License id for the card (e.g. apache-2.0, cc-by-4.0).")] = "unknown",
    dry_run: Annotated[Optional[Path], typer.Option(help="Write exactly what would be uploaded into this folder; upload nothing.")] = None,
) -> None:
    """Push a run's shards with a data card to the Hugging Face Hub (token from HF_TOKEN or `hf auth login`)."""
    import tempfile

    from prmfactory.hub import build_folder, check_repo_id, upload
    from prmfactory.store import Run

    check_repo_id(repo_id)
    source = Run.existing(run)
    if dry_run is not None:
        built = build_folder(source, dry_run, repo_id, license)
        print(json.dumps(built, indent=1))
        print(f"dataset folder written to {dry_run} (nothing uploaded)")
        return
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    with tempfile.TemporaryDirectory(prefix="prmfactory-publish-") as folder:
        build_folder(source, Path(folder) / "dataset", repo_id, license)
        try:
            result = upload(Path(folder) / "dataset", repo_id, private=private, revision=revision, create_pr=create_pr)
        except (HfHubHTTPError, LocalTokenNotFoundError) as exc:
            raise PrmfactoryError(f"publish to {repo_id} failed: {str(exc).splitlines()[0]}") from exc
    print(json.dumps(result, indent=1))
    print(f"published https://huggingface.co/datasets/{repo_id}")


@command(app, rich_help_panel=opt.HELP_PANELS["stats"])
@handled
def stats(run: opt.RunArg,
          as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
          check: Annotated[bool, typer.Option("--check", help="Re-hash every shard against the manifest, read it "
                                                             "against its schema and check its lineage.")] = False) -> None:
    """Counts per dataset and label distributions of a run folder (--check: verify the whole run)."""
    from prmfactory.runstats import check_run, run_stats, show_stats
    from prmfactory.store import Run

    if check:
        checked, problems = check_run(Run.existing(run))
        for problem in problems:
            print(problem)
        found = f"{len(problems)} fault{'s' if len(problems) > 1 else ''} found" if problems else "sound"
        print(f"{run}: {checked} shards checked: {found}")
        raise typer.Exit(1 if problems else 0)
    result = run_stats(Run.existing(run))
    if as_json:
        print(json.dumps(result, indent=1))
        return
    show_stats(result, f"run {run}")
    if "rejected_input_lines" in result:
        print(f"rejected input lines: {result['rejected_input_lines']} (see {run / 'rejects.jsonl'})")


@command(app, rich_help_panel=opt.HELP_PANELS["sql"])
@handled
def sql(run: opt.RunArg, query: Annotated[str, typer.Argument(help="SQL over views named after the datasets.")],
        output_format: Annotated[Literal["table", "csv", "json"], typer.Option("--format", help="How rows are printed.")] = "table") -> None:
    """Run duckdb SQL over a run's shards (views: problems, nodes, questions, verdicts, judgements, steps, rejected)."""
    from prmfactory.runstats import run_sql, show_table
    from prmfactory.store import Run

    show_table(run_sql(Run.existing(run), query), output_format)
