"""train-prm: a PRM trained on the filter stage's stepwise rows, saved with ``prm.json`` and a model card.

Input: a run folder (its ``steps/`` shards, plus ``verdicts/`` and ``nodes/`` for the generative critiques) or
Parquet shards in TRL's stepwise format (``prompt``, ``completions``, ``labels``; ``soft_labels``
for soft-label training). Output folder: the model and tokenizer, ``prm.json``,
``train_config.yaml`` (the effective config), ``log.txt`` and ``README.md`` (the model card).

References: Math-Shepherd (Wang et al. 2024, arXiv:2312.08935) for token-classification PRMs with
hard and soft labels; Qwen2.5-Math-PRM (Zhang et al. 2025, arXiv:2501.07301) for the label-at-step-end
layout; GenPRM (Zhao et al. 2025, arXiv:2504.00891) and ThinkPRM (Khalifa et al. 2025,
arXiv:2504.16828) for generative PRMs that verify each step before the verdict.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prmfactory.config import dump_yaml
from prmfactory.errors import UsageError
from prmfactory.fileio import sha256_file
from prmfactory.stages import Stage, StageContext, StageInput, StageReport
from prmfactory.models import require_model
from prmfactory.store import Run
from prmfactory.train.config import TrainPrmConfig

REQUIRED_COLUMNS = ("prompt", "completions", "labels")
PIPELINE_PRM_FOLDER = "prm"  # where a pipeline's train-prm stage saves the PRM, inside the run folder




@dataclass
class TrainingData:
    """The stepwise rows to train on, their step segmentation and where they came from."""

    rows: list[dict[str, Any]]
    segmentation: str
    lineage: dict[str, Any]
    claims: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]]  # (question, steps through k) -> step k's claims


def load_training_data(path: Path, segmentation: str | None, *, with_claims: bool = False) -> TrainingData:
    """Rows from a run folder's ``steps/`` or from Parquet shards; every row is checked.

    ``with_claims`` also reads verify's claims for each step (the generative critiques need them;
    the run's ``nodes`` and ``verdicts`` are read only then).
    """
    import pyarrow.parquet as pq

    run = Run(path)
    claims: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    if run.exists():
        if "steps" not in run.datasets():
            raise UsageError(f"{path}: run has no steps/ shards; run `prmfactory filter --run {path}` first")
        run.require_fresh(TrainPrmStage.reads)
        rows = run.read("steps").to_pylist()
        filter_config = run.stage_configs().get("filter", {}).get("config", {})
        # run.read verified every shard against the manifest's sha256: these are the hashes of the bytes read
        lineage = {"runs": [str(path.resolve())], "rule": filter_config.get("rule"), "filter": filter_config,
                   "shards": [{"file": s["file"], "rows": s["rows"], "sha256": s["sha256"]} for s in run.shards("steps")]}
        if with_claims and "verdicts" in run.datasets():
            # keyed by the step's prefix, not its node: a row cut after its first error has no node of its own
            prefixes = {(n["question_id"], n["node_id"]): n["steps"]
                        for n in run.read("nodes").select(["question_id", "node_id", "steps"]).to_pylist()}
            for verdict in run.read("verdicts").select(["question_id", "node_id", "step_index", "claims"]).to_pylist():
                steps = prefixes.get((verdict["question_id"], verdict["node_id"]))
                if steps is not None:
                    claims[(verdict["question_id"], tuple(steps[:verdict["step_index"] + 1]))] = verdict["claims"]
        origin = path / "steps"
    else:
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path] if path.suffix == ".parquet" else []
        if not files:
            raise UsageError(f"{path}: neither a run folder nor Parquet shards (*.parquet)")
        rows = []
        for file in files:
            try:
                table = pq.read_table(file)
            except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
                raise UsageError(f"{file}: not a readable Parquet file ({str(exc).splitlines()[0]})") from exc
            missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
            if missing:
                raise UsageError(f"{file}: column {missing[0]!r}: missing (stepwise rows need {', '.join(REQUIRED_COLUMNS)})")
            rows += table.to_pylist()
        lineage = {"files": [str(f.resolve()) for f in files], "rule": None,
                   "shards": [{"file": str(f.resolve()), "rows": None, "sha256": sha256_file(f)} for f in files]}
        origin = path
    for index, row in enumerate(rows):
        for column in ("labels", "soft_labels"):
            if row.get(column) is not None and len(row[column]) != len(row["completions"]):
                raise UsageError(f"{origin}: row {index}: field {column!r}: {len(row[column])} labels for "
                                 f"{len(row['completions'])} steps")
    split_with = sorted({r["segmentation"] for r in rows if r.get("segmentation")})
    if len(split_with) > 1:
        raise UsageError(f"{origin}: field 'segmentation': rows split in {len(split_with)} ways ({', '.join(split_with)}); "
                         "train on rows of one segmentation")
    if segmentation and split_with and split_with != [segmentation]:
        raise UsageError(f"{origin}: field 'segmentation': the rows were split with {split_with[0]}, "
                         f"not {segmentation}; drop --segmentation or set it to {split_with[0]}")
    lineage["label_sources"] = label_sources(rows, lineage["rule"])
    lineage.update(_counts(rows))
    return TrainingData(rows, segmentation or (split_with or ["blank_line"])[0], lineage, claims)


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {"rows": len(rows), "steps": sum(len(r["completions"]) for r in rows),
            "positive_steps": sum(sum(1 for label in r["labels"] if label) for r in rows)}


def label_sources(rows: list[dict[str, Any]], rule: str | None) -> dict[str, int]:
    """Rows per origin of their labels: a run's filter rule (labels the factory made), or the ``source`` column
    an import writes (``prmbench``, ``math-shepherd``, ...), or ``as given`` for shards without one."""
    if rule is not None:
        return {f"prmfactory ({rule} rule)": len(rows)}
    return dict(Counter(row.get("source") or "as given" for row in rows))


def load_mixture(sources: list[tuple[Path, float]], segmentation: str | None, *, with_claims: bool = False,
                 seed: int = 0) -> TrainingData:
    """The rows of several datasets, each taken ``weight`` times (2: every row twice; 0.5: a seeded half).

    The first source is the main one: its segmentation is the PRM's, and the others' steps, already split,
    are joined with its separator. One source of weight 1 is :func:`load_training_data` unchanged; a
    mixture's lineage lists each source with its weight and the rows, steps and labels taken from it."""
    import random

    if len(sources) == 1 and sources[0][1] == 1:
        return load_training_data(sources[0][0], segmentation, with_claims=with_claims)
    rng = random.Random(seed)
    parts, rows, claims = [], [], {}
    for index, (path, weight) in enumerate(sources):
        data = load_training_data(path, segmentation if index == 0 else None, with_claims=with_claims)
        if index == 0:
            segmentation = data.segmentation
        whole, fraction = divmod(weight, 1)
        taken = data.rows * int(whole) + rng.sample(data.rows, round(fraction * len(data.rows)))
        used = _counts(taken)
        parts.append({**data.lineage, "data": str(path), "weight": weight, "rows_used": used["rows"],
                      "steps_used": used["steps"], "positive_steps_used": used["positive_steps"],
                      "label_sources_used": label_sources(taken, data.lineage["rule"])})
        rows += taken
        claims.update(data.claims)
    rng.shuffle(rows)
    sources_used = sum((Counter(part["label_sources_used"]) for part in parts), Counter())
    lineage = {"mixture": parts, "rule": None, "label_sources": dict(sources_used), **_counts(rows)}
    return TrainingData(rows, segmentation or "blank_line", lineage, claims)


def _content(lineage: dict[str, Any]) -> dict[str, Any]:
    """What a lineage says about the training rows themselves, without where they were read from: a run or
    shards copied to another folder or machine are the same data (their bytes' sha256 are the same)."""
    kept = {k: v for k, v in lineage.items()
            if k not in ("runs", "files", "shards", "data", "mixture", "label_sources")}  # the last: derived from the rows
    kept["shards"] = sorted((s["sha256"], s["rows"]) for s in lineage.get("shards", []))
    if "mixture" in lineage:
        kept["mixture"] = [_content(part) for part in lineage["mixture"]]
    return kept


def _has_accelerator() -> bool:
    """Pinned host memory speeds copies to a GPU; without one, torch warns on every data loader."""
    import torch

    return torch.cuda.is_available()


def _training_arguments(config: TrainPrmConfig, output: Path, cls, **extra):
    """The trainer's arguments: the config's fields, the trainer's own, then ``training_args`` as given."""
    try:
        return cls(output_dir=str(output / ".checkpoints"), learning_rate=config.learning_rate,
                   num_train_epochs=config.epochs, max_steps=config.max_steps,
                   per_device_train_batch_size=config.batch_size, lr_scheduler_type="cosine", warmup_steps=0.05,
                   weight_decay=0.01, logging_steps=10, save_strategy="no", report_to=[], seed=config.seed,
                   disable_tqdm=True, dataloader_pin_memory=_has_accelerator(), **{**extra, **config.training_args})
    except (TypeError, ValueError) as exc:
        raise UsageError(f"train-prm: training_args: {exc}") from exc


def _with_lora(model, config: TrainPrmConfig, task_type: str):
    if not config.lora_r:
        return model
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(task_type=task_type, r=config.lora_r, lora_alpha=config.lora_alpha,
                                            target_modules="all-linear",
                                            modules_to_save=["score"] if task_type == "TOKEN_CLS" else None))


def _train_discriminative(config: TrainPrmConfig, data: TrainingData, base: str, output: Path, callbacks):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from prmfactory.prm.heads import load_head
    from prmfactory.steps import Segmenter
    from prmfactory.train.discriminative import PRMConfig, PRMTrainer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = load_head(config.head).for_training(base)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    columns = {c: [r.get(c) for r in data.rows] for c in ("prompt", "completions", "labels", "soft_labels")}
    if config.soft_labels and any(v is None for v in columns["soft_labels"]):
        raise UsageError("--soft-labels: the training data has rows without soft_labels")
    args = _training_arguments(config, output, PRMConfig, max_length=config.max_length,
                               step_separator=Segmenter(data.segmentation).separator, soft_labels=config.soft_labels,
                               train_on_last_step_only=config.last_step_only, head=config.head,
                               remove_unused_columns=False)  # the step spans are the loss's, not the model's
    trainer = PRMTrainer(_with_lora(model, config, "TOKEN_CLS"), args, Dataset.from_dict(columns), tokenizer,
                         callbacks=callbacks)
    return trainer, tokenizer, trainer.data_counts


def with_verifications(data: TrainingData) -> list[dict[str, Any]]:
    """The rows, each with the critique text of every step (verify's claims for that step's prefix)."""
    from prmfactory.train.generative import verification_text

    rows = []
    for row in data.rows:
        verdicts = row.get("tool_verdicts") or [None] * len(row["completions"])
        steps = row["completions"]
        rows.append({**row, "verifications": [
            verification_text(verdicts[i], data.claims.get((row.get("question_id"), tuple(steps[:i + 1])), []),
                              row.get("judge_first_error") == i)
            for i in range(len(steps))]})
    return rows


def _train_generative(config: TrainPrmConfig, data: TrainingData, base: str, output: Path, callbacks):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from prmfactory.prm.encoding import CritiqueEncoder
    from prmfactory.train.generative import critique_dataset

    tokenizer = AutoTokenizer.from_pretrained(base)
    dataset, counts = critique_dataset(with_verifications(data), CritiqueEncoder(tokenizer, config.max_length))
    if not len(dataset):
        raise UsageError(f"no training row fits in max_length={config.max_length}")
    import torch

    args = _training_arguments(config, output, SFTConfig, max_length=config.max_length, completion_only_loss=True,
                               bf16=torch.cuda.is_available())  # SFTConfig defaults to bf16, which CPUs lack
    trainer = SFTTrainer(model=_with_lora(AutoModelForCausalLM.from_pretrained(base), config, "CAUSAL_LM"),
                         args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks)
    return trainer, tokenizer, counts


def _progress_callback(description: str, log, quiet: bool):
    """A rich progress bar (steps, ETA, loss) and the loss log lines, as a transformers callback."""
    from transformers import TrainerCallback

    from prmfactory.progress import stage_progress

    class TrainProgress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.context = stage_progress(description, state.max_steps, quiet=quiet)
            self.bar = self.context.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.advance(1)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.bar.advance(0, loss=round(logs["loss"], 4))
                log.info("step %d: %s", state.global_step, json.dumps(logs))

        def on_train_end(self, args, state, control, **kwargs):
            self.context.__exit__(None, None, None)

    return TrainProgress()


TRAINERS = {"discriminative": _train_discriminative, "generative": _train_generative}


class TrainPrmStage(Stage, name="train-prm", config=TrainPrmConfig, reads=("steps", "verdicts", "nodes")):
    """steps (a run folder, or stepwise Parquet shards) -> a PRM folder.

    ``ctx.run`` is the PRM folder (locked, logged to, its report in ``reports/``); ``ctx.source``
    the training data. A rerun with the same config and data is a no-op; a PRM in the folder
    trained on other data or with another config is replaced only with ``--force``.
    """

    def in_pipeline(self, root: Path, source: StageInput | None) -> tuple[Run, StageInput | None]:
        return Run(root / PIPELINE_PRM_FOLDER), StageInput(root)

    def prepare(self, ctx: StageContext) -> TrainingData:
        if ctx.source is None:
            raise UsageError("train-prm needs --data")
        if ctx.run.root.exists() and not ctx.run.root.is_dir():
            raise UsageError(f"{ctx.run.root}: not a folder; give a folder for the PRM")
        require_model(ctx.config.base)
        sources = [(ctx.source.path, 1.0)] + [(Path(path), weight) for path, weight in ctx.config.mix.items()]
        data = load_mixture(sources, ctx.config.segmentation, with_claims=ctx.config.kind == "generative",
                            seed=ctx.config.seed)
        if not data.rows:
            raise UsageError(f"{ctx.source.path}: no training rows")
        return data

    def begin(self, ctx: StageContext) -> None:
        from prmfactory.prm.folder import META_FILE, PRMMeta

        output, data = ctx.run.root, ctx.prepared
        if ctx.force or not (output / META_FILE).exists():
            return
        meta = PRMMeta.load(output)
        if meta.hyperparameters != ctx.config.output_affecting():
            raise UsageError(f"{output}: holds a PRM trained with another config; use --force to replace it")
        if _content(meta.lineage) != _content(data.lineage):
            raise UsageError(f"{output}: holds a PRM trained on other data (the training rows changed since); "
                             "use --force to retrain it")
        ctx.report.already_done = True

    def run(self, ctx: StageContext) -> StageReport:
        from prmfactory.prm.folder import PRMMeta

        report, data = ctx.report, ctx.prepared
        report.rows_in = len(data.rows)
        if report.already_done:
            ctx.log.info("%s already holds this PRM (same config and data)", ctx.run.root)
            report.details = PRMMeta.load(ctx.run.root).training
            return report
        report.details = train(ctx.config, data, ctx.source.path, ctx.run.root, ctx.log)
        return report


def train(config: TrainPrmConfig, data: TrainingData, data_path: Path, output: Path, log) -> dict[str, Any]:
    """Train, save the merged model with ``prm.json`` and its card; return the training summary."""
    import shutil

    import torch
    from transformers import PrinterCallback

    from prmfactory.fileio import atomic_write_text
    from prmfactory.models import resolve_model
    from prmfactory.prm.folder import PRMMeta, write_model_card

    if config.threads:
        torch.set_num_threads(config.threads)
    atomic_write_text(output / "train_config.yaml", dump_yaml({"train-prm": config.model_dump(mode="json"),
                                                              "data": str(data_path)}))
    base = resolve_model(config.base)
    started = time.monotonic()
    log.info("training a %s PRM on %d rows from %s (base %s)", config.kind, len(data.rows), data_path, base)
    progress = _progress_callback(f"train-prm ({config.kind})", log, config.quiet)
    trainer, tokenizer, counts = TRAINERS[config.kind](config, data, base, output, [progress])
    trainer.remove_callback(PrinterCallback)  # the progress bar and log.txt carry the losses
    log.info("data: %s", json.dumps(counts))
    result = trainer.train()
    model = trainer.model.merge_and_unload() if config.lora_r else trainer.model
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    shutil.rmtree(output / ".checkpoints", ignore_errors=True)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    training = {"steps": trainer.state.global_step, "train_loss": round(result.training_loss, 4),
                "first_logged_loss": losses[0] if losses else None, "last_logged_loss": losses[-1] if losses else None,
                "seconds": round(time.monotonic() - started, 1), "data": counts}
    log.info("done: %s", json.dumps(training))
    meta = PRMMeta(kind=config.kind, head=config.head, segmentation=data.segmentation, max_length=config.max_length, base=config.base,
                   lineage=data.lineage, hyperparameters=config.output_affecting(), training=training)
    meta.save(output)
    write_model_card(output, meta)
    return training
