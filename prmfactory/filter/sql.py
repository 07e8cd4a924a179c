"""Step-level filters, each one duckdb SQL statement over the labelled rows.

Every filter reads the table ``rows`` (``steps`` schema) and yields the table that replaces it;
the stage counts rows (and steps) before and after each one, so the report adds up. Filters run
in the order of :data:`FILTERS`; a filter whose parameter is unset is skipped.
"""

from __future__ import annotations

from typing import Callable

# Per-step list columns: truncating a row cuts all of them to the same length.
STEP_COLUMNS = ("completions", "labels", "soft_labels", "source_node_ids", "mc_values", "mc_rollouts", "tool_verdicts")
# Each candidate's position in the stage's input, carried through every filter: the stage finds what a
# filter removed by it, and the order of rows (and the copy dedupe keeps) follows it, not duckdb's threads.
ROW_ID = "_row"


def _truncate_after_first_error(_: object) -> str:
    keep = "coalesce(list_position(labels, false), len(labels))"
    replaced = ", ".join(f"list_slice({c}, 1, {keep}) AS {c}" for c in STEP_COLUMNS)
    return f"SELECT * REPLACE ({replaced}) FROM rows"


FILTERS: dict[str, Callable[[object], str]] = {
    # steps after the first wrong one carry no information of their own
    "drop_after_first_error": _truncate_after_first_error,
    # identical (step sequence, labels) rows of one question: keep the first; after the truncation,
    # which makes many paths that share a wrong prefix identical
    "dedupe": lambda _: ("SELECT * FROM rows QUALIFY row_number() OVER "
                         f"(PARTITION BY question_id, completions, labels ORDER BY {ROW_ID}) = 1"),
    # every intermediate estimate rests on at least N rollouts (the last step is the answer itself)
    "min_rollouts": lambda n: (f"SELECT * FROM rows WHERE NOT list_bool_or(list_transform("
                               f"list_slice(mc_rollouts, 1, len(mc_rollouts) - 1), lambda r: r > 0 AND r < {int(n)}))"
                               f" OR len(mc_rollouts) < 2"),
    "min_step_length": lambda n: (f"SELECT * FROM rows WHERE list_min(list_transform(completions, lambda s: length(trim(s))))"
                                  f" >= {int(n)}"),
    "max_steps": lambda n: f"SELECT * FROM rows WHERE len(completions) <= {int(n)}",
    # as many all-correct paths as paths with an error, chosen by a hash (deterministic)
    "balance": lambda _: ("WITH tagged AS (SELECT *, list_bool_and(labels) AS positive, "
                          "hash(question_id || array_to_string(completions, '|')) AS draw FROM rows), "
                          "counts AS (SELECT count(*) FILTER (WHERE positive) AS p, "
                          "count(*) FILTER (WHERE NOT positive) AS n FROM tagged) "
                          "SELECT t.* EXCLUDE (positive, draw, rank) FROM (SELECT *, row_number() OVER "
                          "(PARTITION BY positive ORDER BY draw) AS rank FROM tagged) t, counts "
                          "WHERE rank <= least(p, n)"),
}
