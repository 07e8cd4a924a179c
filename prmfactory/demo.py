"""demo: the whole factory on the offline toy domain, end to end, with a report.

Toy *train* problems → ``pipelines/demo.yaml`` (mcts → verify → filter → train-prm) on
``OUTPUT/run`` → the label accuracy of every label rule that needs no judge against the oracle → the trained PRM on
an oracle-labelled toy ProcessBench set → Best-of-N against majority vote and pass@N →
``report.md``, ``report.json`` (every artefact's path and the headline numbers) and plots.
Every piece is cached in OUTPUT, so a rerun only redoes what is missing.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from prmfactory.fileio import atomic_write_text
from prmfactory.store import Run

# the rules that need no judge: the demo runs none (pipelines/demo.yaml says why); consensus needs one
RULES = ("mc", "hybrid", "rpe", "grounded")


@dataclass(frozen=True)
class DemoSize:
    train_problems: int = 120
    test_solutions: int = 400  # enough correct solutions for acc_cor to mean something (about 80)
    bon_problems: int = 100  # a standard error of about 0.05 on a Best-of-N accuracy
    bon_samples: int = 8


SIZES = {"full": DemoSize(), "quick": DemoSize(train_problems=12, test_solutions=24, bon_problems=6, bon_samples=4)}


def rule_accuracy(run: Run, rule: str, folder: Path) -> dict[str, Any]:
    """Label ``run`` with ``rule`` in a copy at ``folder`` and score the labels against the toy oracle."""
    from prmfactory.filter.config import FilterConfig
    from prmfactory.stages import execute
    from prmfactory.toy.oracle import label_accuracy

    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(run.root, folder, ignore=shutil.ignore_patterns(".lock", ".aside", "prm", "*.tmp-*"))
    report = execute("filter", Run(folder), FilterConfig(rule=rule, quiet=True), force=True)
    return {**label_accuracy(Run(folder).read("steps").to_pylist()), "keep_rate": report.details["keep_rate"],
            "distinct_rate": report.details["distinct_rate"]}


def _plot_rules(rules: dict[str, dict[str, Any]], path: Path) -> None:
    from prmfactory.eval.plots import figure

    names = list(rules)
    with figure(path, (5, 3.2)) as axis:
        for offset, key in enumerate(("f1", "keep_rate")):
            axis.bar([i + (offset - 0.5) * 0.38 for i in range(len(names))], [rules[n][key] for n in names], 0.38,
                     label={"f1": "label F1 vs oracle", "keep_rate": "keep-rate"}[key])
        axis.set_xticks(range(len(names)), names)
        axis.set_ylim(0, 1)
        axis.set_title("Step labels against the toy oracle, per label rule", fontsize=9)
        axis.legend(fontsize=7)


GOALS = {"label_f1": 0.95, "label_keep_rate": 0.5, "prm_processbench_f1": 0.6, "best_of_n_over_majority": 0.05}


def _goals_table(report: dict[str, Any]) -> list[str]:
    """The headline numbers that say whether the factory works (labels, PRM, Best-of-N), against their goals."""
    head, n = report["headline"], report["bon"]["samples"]
    margin = head[f"prm_best_of_{n}"] - head[f"majority_at_{n}"]
    rows = [("step-label F1 against the oracle (demo rule, distinct rows)", head["label_f1"], f"≥ {GOALS['label_f1']}",
             head["label_f1"] >= GOALS["label_f1"]),
            ("keep-rate of that rule", report["rules"][head["rule"]]["keep_rate"], f"≥ {GOALS['label_keep_rate']}",
             report["rules"][head["rule"]]["keep_rate"] >= GOALS["label_keep_rate"]),
            (f"PRM F1, toy ProcessBench protocol (threshold {head['dev_threshold']}, chosen on a dev split)",
             head["prm_processbench_f1_dev_threshold"], f"≥ {GOALS['prm_processbench_f1']}",
             head["prm_processbench_f1_dev_threshold"] >= GOALS["prm_processbench_f1"]),
            (f"PRM Best-of-{n} minus majority@{n}", round(margin, 3), f"≥ +{GOALS['best_of_n_over_majority']}",
             margin >= GOALS["best_of_n_over_majority"])]
    return ["| headline | measured | goal | met |", "|---|---:|---:|---|"] + [
        f"| {name} | {value} | {goal} | {'yes' if met else '**no**'} |" for name, value, goal, met in rows]


def _markdown(report: dict[str, Any]) -> str:
    head = report["headline"]
    lines = ["# prmfactory demo", "",
             f"{head['train_problems']} toy problems searched (OmegaPRM, toy policy), verified (sympy) and labelled; a "
             f"PRM ({head['prm']}) trained on the `{head['rule']}` labels; everything offline. No judge: the toy judge "
             "is worse than always answering \"no error\" (BENCHMARKS.md).", "",
             *_goals_table(report), "",
             "## Step labels against the oracle", "", "![labels](labels.png)", "",
             "Keep-rate: the share of candidate solutions whose labels reach the training rows (a duplicate reaches "
             "them through the row it copies); distinct: training rows per candidate solution.", "",
             "Columns: *rows* — training rows the rule keeps; *labels* — step labels in them; *acc_err* — share of "
             "solutions with an error whose first wrong step the rule's labels place exactly; *acc_cor* — share of "
             "correct solutions it labels correct throughout; *F1* — their harmonic mean (ProcessBench's metric), "
             "all against the exact oracle.", "",
             "| rule | rows | labels | acc_err | acc_cor | F1 | keep-rate | distinct |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for rule, r in report["rules"].items():
        lines.append(f"| {rule} | {r['rows']} | {r['labels']} | {r['acc_err']:.3f} | {r['acc_cor']:.3f} | "
                     f"{r['f1']:.3f} | {r['keep_rate']} | {r['distinct_rate']} |")
    pb, cal = report["processbench"]["splits"]["toy"], report["processbench_dev_threshold"]
    lines += ["", "## The PRM on held-out toy solutions (ProcessBench protocol, oracle labels)", "",
              "![processbench](eval-processbench/metrics.png)", "",
              f"{pb['n']} solutions: accuracy on erroneous {pb['acc_err']:.3f}, on correct {pb['acc_cor']:.3f}, "
              f"F1 **{pb['f1']:.3f}** at threshold 0.5 (the figure).", "",
              f"With the threshold chosen on a dev split of {cal['dev']['n']} solutions to *train* problems "
              f"({cal['threshold']}, dev F1 {cal['dev_f1']:.3f}): accuracy on erroneous {cal['test']['acc_err']:.3f}, "
              f"on correct {cal['test']['acc_cor']:.3f}, F1 **{cal['test']['f1']:.3f}**.", "",
              f"## Best-of-{report['bon']['samples']} on {report['bon']['problems']} held-out problems", "",
              "![bon](eval-bon/bon.png)", ""]
    n = report["bon"]["samples"]
    lines += [f"Methods, each picking one of the first {n} samples per problem: *pass* — any of them is right (the "
              "ceiling); *majority* — the most frequent answer (self-consistency); *prm_min*, *prm_last*, *prm_prod*, "
              "*prm_mean* — the sample whose step scores aggregate highest that way; *prm_vote* — majority vote "
              "weighted by each sample's lowest step score (Math-Shepherd).", "",
              "| method | accuracy |", "|---|---:|"] + [
        f"| {method}@{n} | {curve[n]:.3f} |"
        for method, curve in report["bon"]["curves"].items()]
    lines += ["", "## Where everything is", ""] + [f"- {name}: `{path}`" for name, path in report["artefacts"].items()]
    return "\n".join(lines) + "\n"


def _keep_threshold(prm: Path, threshold: float, dev: Path, dev_f1: float) -> None:
    """The threshold chosen on the dev file ``dev`` into the PRM's prm.json, as `eval processbench --threshold auto`
    keeps one."""
    from prmfactory.eval.processbench import THRESHOLDS
    from prmfactory.prm.folder import PRMMeta

    meta = PRMMeta.load(prm)
    meta.threshold = threshold
    meta.threshold_calibration = {"data": str(dev.parent), "split": dev.stem, "average_f1": dev_f1,
                                  "candidates": list(THRESHOLDS)}
    meta.save(prm)


def run_demo(output: Path, size: DemoSize, *, quiet: bool = False, force: bool = False,
             on_stage: Optional[Callable[[str, Any, Path], None]] = None) -> dict[str, Any]:
    """Run (or resume) the demo in ``output``; returns the report that ``report.json`` holds.

    ``force`` reruns every pipeline stage (a folder made with another demo config is refused without it)."""
    from prmfactory.eval.best_of_n import evaluate_bon
    from prmfactory.eval.processbench import calibrate_threshold, evaluate_prm, load_splits, metrics, read_predictions
    from prmfactory.pipeline import run_pipeline
    from prmfactory.prm.folder import PRMMeta
    from prmfactory.stages import StageInput
    from prmfactory.train.stage import PIPELINE_PRM_FOLDER
    from prmfactory.progress import console
    from prmfactory.resources import resource_dir
    from prmfactory.toy.bench import write_processbench
    from prmfactory.toy.problems import generate, to_input_row

    started = time.monotonic()
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "demo_config.json", json.dumps(asdict(size), indent=1))
    problems = output / "train-problems.jsonl"
    if not problems.exists():
        rows = [to_input_row(p) for p in generate(size.train_problems, "train", 0)]
        atomic_write_text(problems, "".join(json.dumps(r) + "\n" for r in rows))
    run_dir = output / "run"
    pipeline = resource_dir("pipelines") / "demo.yaml"
    run_pipeline(pipeline, StageInput(problems), run_dir, force=force, on_stage=on_stage)
    run = Run(run_dir)
    prm = run_dir / PIPELINE_PRM_FOLDER

    console.print("[bold]labels[/bold]: scoring every label rule against the toy oracle")
    rules = {rule: rule_accuracy(run, rule, output / "rules" / rule) for rule in RULES}
    _plot_rules(rules, output / "labels.png")

    bench = output / "processbench" / "toy.jsonl"
    if not bench.exists():
        write_processbench(bench, size.test_solutions, seed=11, quiet=quiet)
    processbench = evaluate_prm(prm, bench.parent, output / "eval-processbench", quiet=quiet, force=True)
    # the threshold is chosen on a dev set of *train* problems, then applied to the test set
    dev = output / "processbench-dev" / "toy-dev.jsonl"
    if not dev.exists():
        write_processbench(dev, size.test_solutions, split="train", seed=13, quiet=quiet)
    dev_result = evaluate_prm(prm, dev.parent, output / "eval-processbench-dev", quiet=quiet, force=True)
    threshold, dev_f1 = calibrate_threshold(load_splits(dev.parent), output / "eval-processbench-dev" / "predictions.jsonl")
    _keep_threshold(prm, threshold, dev, dev_f1)  # so serve and the RL adapters flag what the report measured
    test_splits = load_splits(bench.parent)
    calibrated = metrics(test_splits, read_predictions(output / "eval-processbench" / "predictions.jsonl", test_splits,
                                                       threshold))

    bon_dir = output / "eval-bon"
    cached = bon_dir / "candidates.jsonl"
    if cached.exists():
        bon = evaluate_bon(prm, bon_dir, candidates=cached, quiet=quiet, force=True)
    else:
        bon_problems = [{**row, "question_id": row["id"]}
                        for row in map(to_input_row, generate(size.bon_problems, "test", 12))]
        bon = evaluate_bon(prm, bon_dir, problems=bon_problems, samples=size.bon_samples, temperature=0.8,
                           max_tokens=300, quiet=quiet, force=True)

    filter_report = run.read_report("filter") or {}
    rule = filter_report.get("details", {}).get("rule", "mc")
    prm_meta = PRMMeta.load(prm)
    n = bon["samples"]
    report = {
        "headline": {"train_problems": size.train_problems, "rule": rule,
                     "prm": f"{prm_meta.kind}, {prm_meta.head} head on {prm_meta.base}",
                     "training_rows": filter_report.get("rows_out"),
                     "label_f1": rules[rule]["f1"],
                     "prm_processbench_f1": processbench["splits"]["toy"]["f1"],
                     "dev_threshold": threshold, "prm_processbench_f1_dev_threshold": calibrated["splits"]["toy"]["f1"],
                     f"prm_best_of_{n}": bon["curves"]["prm_min"][n], f"majority_at_{n}": bon["curves"]["majority"][n],
                     f"pass_at_{n}": bon["curves"]["pass"][n], "seconds": round(time.monotonic() - started, 1)},
        "rules": rules, "processbench": processbench, "bon": bon,
        "processbench_dev_threshold": {"threshold": threshold, "dev_f1": dev_f1, "dev": dev_result["splits"]["toy-dev"],
                                       "test": calibrated["splits"]["toy"]},
        "artefacts": {"run": str(run_dir), "training_rows": str(run_dir / "steps"), "prm": str(prm),
                      "prm_card": str(prm / "README.md"), "processbench_set": str(bench),
                      "eval_processbench": str(output / "eval-processbench"),
                      "processbench_dev_set": str(dev), "eval_processbench_dev": str(output / "eval-processbench-dev"),
                      "eval_bon": str(bon_dir),
                      "label_plot": str(output / "labels.png"), "report_md": str(output / "report.md"),
                      "report_json": str(output / "report.json")},
    }
    atomic_write_text(output / "report.json", json.dumps(report, indent=1))
    atomic_write_text(output / "report.md", _markdown(report))
    return report
