"""publish: a run folder as a Hugging Face Hub dataset — data files, a data card, the upload.

The dataset folder holds ``data/<config>/train-NNNNN-of-NNNNN.parquet`` for each shard type the run
has (``steps``, the default config, then ``problems``, ``questions``, ``nodes``, ``verdicts``,
``judgements``), ``run.yaml``, ``log.txt`` and ``README.md``. The card's YAML header declares
``configs:`` with ``data_files`` per split, so the Hub viewer and ``datasets.load_dataset(repo)``
work without a loading script. The token is huggingface_hub's business (``HF_TOKEN`` or the
user's login); nothing here reads, prints or writes it.
"""

from __future__ import annotations

import collections
import shutil
from pathlib import Path
from typing import Any, Optional

import yaml

from prmfactory.errors import UsageError
from prmfactory.fileio import atomic_write_text
from prmfactory.store import Run

CONFIGS = ("steps", "problems", "questions", "nodes", "verdicts", "judgements")
LARGE_FOLDER_BYTES = 2 * 2**30  # above this, upload_large_folder (resumable, multi-worker) is used
_SEARCH_PARAMETERS = ("strategy", "segmentation", "temperature", "max_new_tokens", "rollouts", "budget", "c_puct",
                      "alpha", "beta", "length_scale", "num_solutions", "seed")


def _stage_config(run: Run, stage: str) -> dict[str, Any]:
    return run.stage_configs().get(stage, {}).get("config", {})


def card_context(run: Run, repo_id: str, license: str) -> dict[str, Any]:
    """Everything the data card states, read from the run's shards, configs and reports."""
    configs = [name for name in CONFIGS if name in run.datasets()]
    if "steps" not in configs:
        raise UsageError(f"{run.root}: no steps/ shards to publish; run `prmfactory filter --run {run.root}` first")
    con = run.connect()
    label_counts = con.execute(
        "SELECT count(*), coalesce(sum(list_count(list_filter(labels, lambda x: x))), 0), "
        "coalesce(sum(list_count(list_filter(labels, lambda x: NOT x))), 0), "
        "count(*) FILTER (WHERE list_position(labels, false) IS NOT NULL) FROM steps").fetchone()
    sources = dict(con.execute(  # problems.source is FILE:LINE; the card names the input files
        "SELECT regexp_replace(source, ':[0-9]+$', ''), count(*) FROM problems GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()) if "problems" in configs else {}
    filter_report = run.read_report("filter") or {}
    mcts = _stage_config(run, "mcts")
    data_files = [{"config_name": name, **({"default": True} if name == "steps" else {}),
                   "data_files": [{"split": "train", "path": f"data/{name}/*.parquet"}]} for name in configs]
    header = yaml.safe_dump({"license": license, "pretty_name": repo_id.split("/")[-1],
                             "tags": ["process-reward-model", "prm", "step-level-labels", "math", "prmfactory"],
                             "task_categories": ["text-classification"], "configs": data_files},
                            sort_keys=False, allow_unicode=True).strip()
    return {"header": header, "title": repo_id.split("/")[-1], "repo_id": repo_id, "license": license,
            "configs": configs, "counts": {name: sum(s["rows"] for s in run.shards(name)) for name in configs},
            "problems": sum(sources.values()), "sources": sources, "mcts": mcts,
            "mcts_parameters": {k: mcts[k] for k in _SEARCH_PARAMETERS if k in mcts},
            "judge": _stage_config(run, "judge"), "filter": _stage_config(run, "filter"),
            "steps_rows": label_counts[0], "positive_steps": label_counts[1], "negative_steps": label_counts[2],
            "rows_with_error": label_counts[3], "keep_rate": filter_report.get("details", {}).get("keep_rate", "n/a"),
            "rule_dropped": filter_report.get("dropped") or {}, "filters": filter_report.get("details", {}).get("filters", [])}


def render_card(context: dict[str, Any]) -> str:
    import jinja2

    from prmfactory.resources import resource_dir

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(resource_dir("data_cards")),
                                     undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return environment.get_template("dataset_card.md.j2").render(**context)


def check_repo_id(repo_id: str) -> None:
    """Refuse a repo id the Hub would refuse (huggingface_hub's own validator), before anything is built."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise UsageError(f"--repo-id {repo_id!r}: {str(exc).splitlines()[0]}") from exc


def build_folder(run: Run, folder: Path, repo_id: str, license: str = "unknown") -> dict[str, Any]:
    """Write exactly what would be uploaded into ``folder`` (which must be empty or absent)."""
    check_repo_id(repo_id)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: not a folder; give a new folder for the dataset files")
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"{folder}: not empty; give a new folder for the dataset files")
    context = card_context(run, repo_id, license)
    files: dict[str, int] = collections.Counter()
    for name in context["configs"]:
        paths = run.shard_paths(name)  # checked: a damaged shard is never published
        target = folder / "data" / name
        target.mkdir(parents=True, exist_ok=True)
        for index, path in enumerate(paths):
            shutil.copyfile(path, target / f"train-{index:05d}-of-{len(paths):05d}.parquet")
            files[name] += 1
    for extra in ("run.yaml", "log.txt"):
        if (run.root / extra).exists():
            shutil.copyfile(run.root / extra, folder / extra)
    atomic_write_text(folder / "README.md", render_card(context))
    return {"folder": str(folder), "files": dict(files), "counts": context["counts"]}


def upload(folder: Path, repo_id: str, *, private: bool = False, revision: Optional[str] = None,
           create_pr: bool = False, api=None) -> dict[str, Any]:
    """Create the dataset repo (if needed) and upload the folder; large folders go through upload_large_folder."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    if size > LARGE_FOLDER_BYTES and not create_pr:
        if revision:
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        api.upload_large_folder(repo_id=repo_id, folder_path=str(folder), repo_type="dataset", revision=revision,
                                private=private)
        return {"repo_id": repo_id, "bytes": size, "method": "upload_large_folder", "revision": revision}
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="dataset", revision=revision,
                               create_pr=create_pr, commit_message="Upload prmfactory dataset")
    return {"repo_id": repo_id, "bytes": size, "method": "upload_folder", "revision": revision,
            "commit_url": getattr(commit, "commit_url", None), "pr_url": getattr(commit, "pr_url", None)}
