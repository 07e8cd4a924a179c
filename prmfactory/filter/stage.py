"""``run_filter``: nodes + verdicts + judgements -> stepwise training rows (``steps``).

Reads the run's ``problems``, ``nodes`` (every complete solution becomes one candidate row),
``verdicts`` and ``judgements`` (both optional: a rule that needs a missing signal says so), applies
the label rule, then the SQL filters in order, and writes the surviving rows as ``steps`` — TRL's
stepwise layout (``prompt``, ``completions``, ``labels``) plus soft labels and provenance. The
report (``reports/filter.json``) lists, for the rule and for every filter, the rows (and steps)
in and out, so nothing disappears silently. The stage runs over the whole run at once (dedupe and
balance look across questions); a rerun with the same config finds the rows written and stops.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Literal, Optional

import pyarrow as pa
from pydantic import Field

from prmfactory import schemas
from prmfactory.config import StageConfig, runtime_field
from prmfactory.errors import UsageError
from prmfactory.filter.rules import (HybridWeights, Labels, PathEvidence, consensus_labels, hybrid_labels, mc_labels,
                                     rpe_labels)
from prmfactory.filter.sql import FILTERS
from prmfactory.store import Run

LOG = logging.getLogger("prmfactory")


class FilterConfig(StageConfig):
    """``prmfactory filter``: the label rule and the filters, in the order they run."""

    rule: Literal["mc", "consensus", "hybrid", "rpe"] = Field("mc", description="Label rule (prmfactory/filter/rules.py).")
    hybrid_weights: dict[str, float] = Field(
        default_factory=lambda: dict(vars(HybridWeights())),
        description="hybrid: weights of the mc, judge, tool and outcome signals.")
    rpe_epsilon: float = Field(0.8, gt=0, description="rpe: least MC(s_t)/MC(s_t-1) of a correct step.")
    dedupe: bool = Field(True, description="Keep one row per identical step sequence of a question.")
    drop_after_first_error: bool = Field(True, description="Cut every row after its first wrong step.")
    min_rollouts: Optional[int] = Field(None, ge=1, description="Drop rows with an estimate resting on fewer rollouts.")
    min_step_length: Optional[int] = Field(None, ge=1, description="Drop rows with a step shorter than this (characters).")
    max_steps: Optional[int] = Field(None, ge=1, description="Drop rows with more steps than this.")
    balance: bool = Field(False, description="Keep as many all-correct rows as rows with an error.")
    quiet: bool = runtime_field(False, "No progress output.")


def _rule(config: FilterConfig):
    if config.rule == "hybrid":
        weights = HybridWeights(**config.hybrid_weights)
        return lambda path: hybrid_labels(path, weights)
    if config.rule == "rpe":
        return lambda path: rpe_labels(path, config.rpe_epsilon)
    return {"mc": mc_labels, "consensus": consensus_labels}[config.rule]


def collect_paths(run: Run) -> list[PathEvidence]:
    """Every complete solution of the run, with the evidence for each of its steps."""
    prompts = run.lookup("problems", "question_id", "problem")
    by_prefix: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    leaves = []
    for node in run.read("nodes").select(["question_id", "node_id", "steps", "mc_value", "num_rollouts",
                                          "complete"]).to_pylist():
        by_prefix[(node["question_id"], tuple(node["steps"]))] = node
        if node["complete"] and node["steps"]:
            leaves.append(node)
    verdicts = {(v["question_id"], v["node_id"], v["step_index"]): v["verdict"]
                for v in run.read("verdicts").select(["question_id", "node_id", "step_index", "verdict"]).to_pylist()}
    judged = {(j["question_id"], j["node_id"]): j
              for j in run.read("judgements").select(["question_id", "node_id", "first_error", "votes"]).to_pylist()}
    paths = []
    for leaf in leaves:
        qid, steps = leaf["question_id"], leaf["steps"]
        prefixes = [by_prefix.get((qid, tuple(steps[:i + 1]))) for i in range(len(steps))]
        root = by_prefix.get((qid, ()))
        judgement = judged.get((qid, leaf["node_id"]), {})
        paths.append(PathEvidence(
            question_id=qid, prompt=prompts[qid], steps=list(steps),
            node_ids=[p["node_id"] if p else None for p in prefixes],
            mc=[p["mc_value"] if p else None for p in prefixes],
            mc_rollouts=[p["num_rollouts"] if p and p["mc_value"] is not None else 0 for p in prefixes],
            tool=[verdicts.get((qid, leaf["node_id"], i)) for i in range(len(steps))],
            root_mc=root["mc_value"] if root else None,
            judge_first_error=judgement.get("first_error"), judge_votes=judgement.get("votes", [])))
    return paths


def training_row(path: PathEvidence, result: Labels, rule: str) -> dict[str, Any]:
    n = len(result.labels)
    return {"prompt": path.prompt, "completions": path.steps[:n], "labels": result.labels,
            "soft_labels": [float(s) for s in result.soft[:n]], "question_id": path.question_id,
            "source_node_ids": path.node_ids[:n], "mc_values": path.mc[:n], "mc_rollouts": path.mc_rollouts[:n],
            "tool_verdicts": path.tool[:n], "judge_votes": path.judge_votes, "judge_first_error": path.judge_first_error,
            "rule": rule}


def apply_filters(table: pa.Table, config: FilterConfig) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Run the enabled SQL filters in order; one report entry per filter."""
    import duckdb

    con = duckdb.connect()
    report = []
    settings = {"dedupe": config.dedupe, "drop_after_first_error": config.drop_after_first_error,
                "min_rollouts": config.min_rollouts, "min_step_length": config.min_step_length,
                "max_steps": config.max_steps, "balance": config.balance}
    for name, sql in FILTERS.items():
        value = settings[name]
        if value is None or value is False:
            continue
        con.register("rows", table)
        result = con.sql(sql(value)).to_arrow_table()
        result = result.select(schemas.load("steps").column_names).cast(schemas.load("steps").arrow)
        steps_in = sum(len(c) for c in table.column("completions").to_pylist())
        steps_out = sum(len(c) for c in result.column("completions").to_pylist())
        report.append({"filter": name, "parameter": value, "rows_in": table.num_rows, "rows_out": result.num_rows,
                       "rows_removed": table.num_rows - result.num_rows, "steps_removed": steps_in - steps_out,
                       "sql": sql(value)})
        con.unregister("rows")
        table = result
    return table, report


def run_filter(run: Run, config: FilterConfig, *, force: bool = False) -> dict[str, Any]:
    started = time.time()
    with run.writing(), run.log_to_file("filter"):
        run.begin_stage("filter", config, ["steps"], force=force)
        if run.shards("steps"):
            report = run.read_report("filter") or {}
            LOG.info("filter: steps already written with this config; nothing to do")
            return {**report, "skipped_done": report.get("rows_out", 0), "already_done": True}
        if not run.shards("nodes"):
            raise UsageError(f"{run.root}: no nodes to label; run `prmfactory mcts` first")
        paths = collect_paths(run)
        rule = _rule(config)
        rows, dropped = [], Counter()
        for path in paths:
            result = rule(path)
            if result.keep:
                rows.append(training_row(path, result, config.rule))
            else:
                dropped[result.reason or "dropped"] += 1
        table = schemas.load("steps").table(rows)
        table, filters = apply_filters(table, config)
        run.commit({"steps": table})
        labels = [label for row in table.column("labels").to_pylist() for label in row]
        report = {
            "stage": "filter", "rule": config.rule, "solutions": len(paths), "rule_kept": len(rows),
            "rule_dropped": dict(dropped), "filters": filters, "rows_out": table.num_rows,
            "steps_out": len(labels), "positive_steps": sum(labels), "negative_steps": len(labels) - sum(labels),
            "keep_rate": round(table.num_rows / len(paths), 4) if paths else 0.0,
            "skipped_done": 0, "wall_seconds": round(time.time() - started, 1),
        }
        run.write_report("filter", report)
        LOG.info("filter report: %s", {k: v for k, v in report.items() if k != "filters"})
    return report
