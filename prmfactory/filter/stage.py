"""The filter stage: nodes + verdicts + judgements -> stepwise training rows (``steps``).

Reads the run's ``problems``, ``nodes`` (every complete solution becomes one candidate row),
``verdicts`` and ``judgements`` (both optional: a rule that needs a missing signal says so), applies
the label rule, then the SQL filters in order, and writes the surviving rows as ``steps`` — TRL's
stepwise layout (``prompt``, ``completions``, ``labels``) plus soft labels and provenance. Every
candidate row it drops goes to ``rejected`` with its reason slug, committed together with the
steps, and the report counts them: rows in − rows out = the sum of the drops. The stage runs over
the whole run at once (dedupe and balance look across questions), so any change upstream makes
its rows stale and a rerun recomputes them; a rerun with nothing changed finds them written and stops.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from prmfactory import schemas
from prmfactory.filter.config import FilterConfig
from prmfactory.filter.rules import (HybridWeights, Labels, PathEvidence, consensus_labels, grounded_labels,
                                     hybrid_labels, mc_labels, rpe_labels)
from prmfactory.filter.sql import FILTERS, ROW_ID
from prmfactory.rows import RejectedRow, StepsRow
from prmfactory.stages import Stage, StageContext, StageReport
from prmfactory.store import Run

LOG = logging.getLogger("prmfactory")




def _rule(config: FilterConfig):
    if config.rule == "hybrid":
        weights = HybridWeights(**config.hybrid_weights)
        return lambda path: hybrid_labels(path, weights)
    if config.rule == "rpe":
        return lambda path: rpe_labels(path, config.rpe_epsilon)
    return {"mc": mc_labels, "consensus": consensus_labels, "grounded": grounded_labels}[config.rule]


def collect_paths(run: Run) -> list[PathEvidence]:
    """Every complete solution of the run, with the evidence for each of its steps."""
    prompts = run.lookup("problems", "question_id", "problem")
    by_prefix: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    leaves = []
    for node in run.read("nodes").select(["question_id", "node_id", "steps", "mc_value", "num_rollouts",
                                          "complete", "segmentation"]).to_pylist():
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
            judge_first_error=judgement.get("first_error"), judge_votes=judgement.get("votes", []),
            segmentation=leaf["segmentation"]))
    return paths


def training_row(path: PathEvidence, result: Labels, rule: str) -> StepsRow:
    n = len(result.labels)
    return {"prompt": path.prompt, "completions": path.steps[:n], "labels": result.labels,
            "soft_labels": [float(s) for s in result.soft[:n]], "question_id": path.question_id,
            "source_node_ids": path.node_ids[:n], "mc_values": path.mc[:n], "mc_rollouts": path.mc_rollouts[:n],
            "tool_verdicts": path.tool[:n], "judge_votes": path.judge_votes, "judge_first_error": path.judge_first_error,
            "rule": rule, "segmentation": path.segmentation}


def rejected_row(question_id: str, node_id: str | None, completions: list[str], labels: list[bool] | None,
                 reason: str) -> RejectedRow:
    return {"question_id": question_id, "stage": "filter", "reason": reason, "node_id": node_id,
            "completions": completions, "labels": labels}


def apply_filters(table: pa.Table, config: FilterConfig) -> tuple[pa.Table, list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the enabled SQL filters in order; one report entry per filter and a rejected row per removed row."""
    import duckdb

    schema = schemas.load("steps")
    carried = schema.arrow.append(pa.field(ROW_ID, pa.int64(), nullable=False))
    table = table.append_column(ROW_ID, pa.array(range(table.num_rows), pa.int64())).cast(carried)
    con = duckdb.connect()
    report, rejected = [], []
    settings = {"dedupe": config.dedupe, "drop_after_first_error": config.drop_after_first_error,
                "min_rollouts": config.min_rollouts, "min_step_length": config.min_step_length,
                "max_steps": config.max_steps, "balance": config.balance}
    for name, sql in FILTERS.items():
        value = settings[name]
        if value is None or value is False:
            continue
        con.register("rows", table)
        result = con.sql(sql(value)).to_arrow_table().select(carried.names).cast(carried).sort_by(ROW_ID)
        con.unregister("rows")
        kept = set(result.column(ROW_ID).to_pylist())
        rejected += [rejected_row(row["question_id"], row["source_node_ids"][-1], row["completions"], row["labels"], name)
                     for row in table.to_pylist() if row[ROW_ID] not in kept]
        steps_in = sum(len(c) for c in table.column("completions").to_pylist())
        steps_out = sum(len(c) for c in result.column("completions").to_pylist())
        report.append({"filter": name, "parameter": value, "rows_in": table.num_rows, "rows_out": result.num_rows,
                       "rows_removed": table.num_rows - result.num_rows, "steps_removed": steps_in - steps_out,
                       "sql": sql(value)})
        table = result
    return table.drop_columns([ROW_ID]).cast(schema.arrow), report, rejected


class FilterStage(Stage, name="filter", config=FilterConfig, reads=("problems", "nodes", "verdicts", "judgements"),
                  requires=("problems", "nodes"), writes=("steps", "rejected"), whole_run=True):
    """problems, nodes, verdicts, judgements -> steps (+ rejected), over the whole run."""

    def run(self, ctx: StageContext) -> StageReport:
        run, config = ctx.run, ctx.config
        if run.shards("steps"):
            try:
                previous = StageReport.model_validate({**(run.read_report("filter") or {"stage": "filter"}),
                                                       "already_done": True, "discarded": {}})
            except ValidationError:  # a report of an older prmfactory: recompute rather than guess
                run.drop_shards([s for d in self.writes for s in run.shards(d)])
            else:
                ctx.log.info("filter: steps already written from these inputs with this config; nothing to do")
                return previous
        report = ctx.report
        paths = collect_paths(run)
        rule = _rule(config)
        rows: list[StepsRow] = []
        rejected: list[RejectedRow] = []
        dropped: Counter[str] = Counter()
        for path in paths:
            result = rule(path)
            if result.keep:
                rows.append(training_row(path, result, config.rule))
            else:
                reason = result.reason or "rule"
                dropped[reason] += 1
                rejected.append(rejected_row(path.question_id, path.node_ids[-1], path.steps, result.labels or None,
                                             reason))
        table = schemas.load("steps").table(rows)
        table, filters, removed = apply_filters(table, config)
        dropped.update(r["reason"] for r in removed)
        ctx.commit({"steps": table, "rejected": rejected + removed})
        labels = [label for row in table.column("labels").to_pylist() for label in row]
        report.rows_in, report.dropped = len(paths), dict(dropped)
        report.counts.update(rule_kept=len(rows), steps_out=len(labels), positive_steps=sum(labels),
                             negative_steps=len(labels) - sum(labels))
        # keep-rate: the share of candidate solutions whose labels reach the training rows; a copy that
        # dedupe drops reaches them through the row it copies, so only the other drops count against it
        discarded = sum(count for reason, count in dropped.items() if reason != "dedupe")
        report.details.update(rule=config.rule, filters=filters,
                              keep_rate=round(1 - discarded / len(paths), 4) if paths else 0.0,
                              distinct_rate=round(table.num_rows / len(paths), 4) if paths else 0.0)
        return report
