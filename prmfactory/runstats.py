"""``prmfactory stats`` and ``prmfactory sql``: duckdb queries over a run's shards, and how they are shown."""

from __future__ import annotations

import json
import sys
from typing import Any, Literal

import pyarrow as pa

from prmfactory import schemas
from prmfactory.errors import UsageError
from prmfactory.store import Run


def run_stats(run: Run) -> dict[str, Any]:
    """Rows, shards and questions per dataset, and the value counts of summarized columns.

    List columns (e.g. ``steps.labels``) are counted per item.
    """
    con = run.connect()
    result: dict[str, Any] = {"run": str(run.root), "datasets": {}}
    for name in run.datasets():
        schema = schemas.load(name)
        rows, questions = con.execute(f'SELECT count(*), count(DISTINCT question_id) FROM "{name}"').fetchone()
        entry: dict[str, Any] = {"shards": len(run.shards(name)), "rows": rows, "questions": questions,
                                 "distributions": {}}
        for column in schema.summarized_columns:
            is_list = pa.types.is_list(schema.arrow.field(column).type)
            source = f'(SELECT UNNEST("{column}") AS v FROM "{name}")' if is_list else f'(SELECT "{column}" AS v FROM "{name}")'
            counts = con.execute(f"SELECT v, count(*) AS n FROM {source} GROUP BY v ORDER BY n DESC, v").fetchall()
            entry["distributions"][column] = {str(v): n for v, n in counts}
        result["datasets"][name] = entry
    rejects = run.files.read_text("rejects.jsonl")
    if rejects is not None:
        result["rejected_input_lines"] = sum(1 for line in rejects.splitlines() if line.strip())
    return result


def check_run(run: Run) -> tuple[int, list[str]]:
    """Every shard re-hashed against the manifest, read and checked against its schema, and its lineage.

    Returns the shards checked and one line per problem found (none: the run is sound).
    """
    from prmfactory.errors import PrmfactoryError

    checked, problems = 0, []
    for name in run.datasets():
        for shard in run.shards(name):
            checked += 1
            try:
                run.verify_shard(name, shard, force=True)
            except PrmfactoryError as exc:
                problems.append(str(exc))
        if not any(p.startswith(run.location(name)) for p in problems):
            try:
                run.read(name)
            except (PrmfactoryError, schemas.SchemaError) as exc:
                problems.append(str(exc))
        try:
            run.require_fresh([name])
        except UsageError as exc:
            problems.append(str(exc))
    return checked, problems


READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")


def run_sql(run: Run, query: str) -> pa.Table:
    """Run ``query``, one read-only statement (SELECT, or EXPLAIN of one), over one view per dataset
    (``problems``, ``nodes``, ``steps``, ...). Nothing outside the run's shards is reachable
    (:meth:`Run.connect`), and statements that write (COPY, CREATE, ATTACH, INSTALL, SET, ...) are refused
    before they run."""
    import duckdb

    con = run.connect()
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {str(exc).splitlines()[0]}") from exc
    kinds = [statement.type.name for statement in statements]
    refused = [kind for kind in kinds if kind not in READ_ONLY_STATEMENTS]
    if len(kinds) != 1 or refused:
        got = f"a {refused[0]} statement" if refused else f"{len(kinds)} statements"
        raise UsageError(f"sql: one read-only query (SELECT or EXPLAIN) over the run's views is allowed, got {got}; "
                         "`prmfactory sql` never writes or reads files outside the run")
    try:
        relation = con.sql(query)
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {str(exc).splitlines()[0]}") from exc
    try:
        return relation.to_arrow_table()
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {str(exc).splitlines()[0]}") from exc


def show_stats(result: dict[str, Any], title: str) -> None:
    """:func:`run_stats`'s result as two tables: rows per dataset, then each label column's distribution."""
    from rich.console import Console
    from rich.table import Table

    console = Console()  # stdout: the result, not a progress message
    table = Table(title=title)
    for column in ("dataset", "shards", "rows", "questions"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for name, entry in result["datasets"].items():
        table.add_row(name, str(entry["shards"]), str(entry["rows"]), str(entry["questions"]))
    console.print(table)
    distributions = Table(title="distributions")
    for column in ("column", "value", "count"):
        distributions.add_column(column, justify="right" if column == "count" else "left")
    for name, entry in result["datasets"].items():
        for column, counts in entry["distributions"].items():
            for value, count in counts.items():
                distributions.add_row(f"{name}.{column}", value, str(count))
    console.print(distributions)


def show_table(table: pa.Table, output_format: Literal["table", "csv", "json"]) -> None:
    """A query's result on stdout: a rich table, CSV, or one JSON object per row."""
    if output_format == "json":
        for row in table.to_pylist():
            print(json.dumps(row, default=str, ensure_ascii=False))
    elif output_format == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, sys.stdout.buffer)
    else:
        from rich.console import Console
        from rich.table import Table

        view = Table()
        for name in table.column_names:
            view.add_column(name)
        for row in table.to_pylist():
            view.add_row(*(str(v) for v in row.values()))
        Console().print(view)
