"""Shard schemas: loads the canonical definitions in ``schemas/*.json`` into pyarrow.

``schemas/`` is the only place columns are defined (DESIGN.md §3.3). A schema file names
its fields with a small, language-neutral type vocabulary:

* a primitive name: ``string``, ``bool``, ``int32``, ``int64``, ``float32``, ``float64``;
* ``{"list": T}`` for a list of T (list items are always nullable);
* ``{"struct": [field, ...]}`` for a record.

This module turns them into :class:`pyarrow.Schema` objects, builds tables from rows with the
explicit schema (never inferred), and validates shards before they are written or after they
are read.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pyarrow as pa

from prmfactory.resources import resource_dir

SCHEMA_DIR = resource_dir("schemas")
METADATA_NAME = b"prmfactory.schema"
METADATA_VERSION = b"prmfactory.schema_version"

_PRIMITIVES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
}


class SchemaError(ValueError):
    """A table or row does not match its shard schema."""


@dataclass(frozen=True)
class ShardSchema:
    """One shard type: its name, version, arrow schema and the raw field definitions."""

    name: str
    version: int
    description: str
    fields: tuple[dict, ...]
    arrow: pa.Schema

    @property
    def column_names(self) -> list[str]:
        return [f["name"] for f in self.fields]

    @property
    def summarized_columns(self) -> list[str]:
        """Columns whose value distribution ``prmfactory stats`` reports."""
        return [f["name"] for f in self.fields if f.get("summarize")]

    def table(self, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
        """Build a validated table from row dicts; unknown, missing or mistyped keys are errors."""
        rows = list(rows)
        expected = set(self.column_names)
        for index, row in enumerate(rows):
            keys = set(row)
            if keys != expected:
                missing, unknown = sorted(expected - keys), sorted(keys - expected)
                raise SchemaError(
                    f"{self.name} row {index}: missing columns {missing}, unknown columns {unknown}"
                )
        columns = {}
        for field in self.arrow:
            values = [row[field.name] for row in rows]
            try:
                columns[field.name] = pa.array(values, type=field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                raise SchemaError(f"{self.name} column {field.name!r}: {exc}") from exc
        table = pa.table(columns, schema=self.arrow)
        self.validate(table)
        return table

    def validate(self, table: pa.Table) -> None:
        """Check column names, order, types and non-null constraints of a table."""
        got = {f.name: f.type for f in table.schema}
        for field in self.arrow:
            if field.name not in got:
                raise SchemaError(f"{self.name}: missing column {field.name!r}")
            if not got[field.name].equals(field.type):
                raise SchemaError(
                    f"{self.name} column {field.name!r}: type {got[field.name]}, expected {field.type}"
                )
            if not field.nullable and table.column(field.name).null_count:
                raise SchemaError(f"{self.name} column {field.name!r}: null values in a non-null column")
        extra = sorted(set(got) - set(self.column_names))
        if extra:
            raise SchemaError(f"{self.name}: unknown columns {extra}")

    def check_metadata(self, schema: pa.Schema, where: str) -> None:
        """Refuse a shard written for another schema or schema version."""
        meta = schema.metadata or {}
        name = meta.get(METADATA_NAME, b"").decode()
        version = meta.get(METADATA_VERSION, b"").decode()
        if name != self.name or version != str(self.version):
            raise SchemaError(
                f"{where}: shard is schema {name or '?'} v{version or '?'}, expected {self.name} v{self.version}"
            )


def _arrow_type(spec: Any, where: str) -> pa.DataType:
    if isinstance(spec, str):
        if spec not in _PRIMITIVES:
            raise SchemaError(f"{where}: unknown type {spec!r}")
        return _PRIMITIVES[spec]
    if isinstance(spec, dict) and set(spec) == {"list"}:
        return pa.list_(_arrow_type(spec["list"], where))
    if isinstance(spec, dict) and set(spec) == {"struct"}:
        return pa.struct([_arrow_field(f, where) for f in spec["struct"]])
    raise SchemaError(f"{where}: unknown type {spec!r}")


def _arrow_field(field: dict, where: str) -> pa.Field:
    for key in ("name", "type", "nullable", "description"):
        if key not in field:
            raise SchemaError(f"{where}: field {field.get('name', '?')!r} lacks {key!r}")
    return pa.field(field["name"], _arrow_type(field["type"], f"{where}:{field['name']}"), field["nullable"])


@functools.cache
def load(name: str) -> ShardSchema:
    """Load ``schemas/<name>.json``."""
    path = SCHEMA_DIR / f"{name}.json"
    if not path.exists():
        raise SchemaError(f"no schema named {name!r} in {SCHEMA_DIR}")
    spec = json.loads(path.read_text())
    fields = [_arrow_field(f, str(path)) for f in spec["fields"]]
    metadata = {METADATA_NAME: name.encode(), METADATA_VERSION: str(spec["version"]).encode()}
    return ShardSchema(
        name=spec["name"],
        version=int(spec["version"]),
        description=spec["description"],
        fields=tuple(spec["fields"]),
        arrow=pa.schema(fields, metadata=metadata),
    )


def names() -> list[str]:
    """All shard types defined in ``schemas/``."""
    return sorted(p.stem for p in SCHEMA_DIR.glob("*.json"))


def _type_text(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    if "list" in spec:
        return f"list<{_type_text(spec['list'])}>"
    return "struct<" + ", ".join(f"{f['name']}: {_type_text(f['type'])}" for f in spec["struct"]) + ">"


def render_markdown() -> str:
    """The field reference in ``schemas/README.md``, generated so it cannot drift from the files."""
    lines = [
        "# Shard schemas",
        "",
        "Generated by `python -m prmfactory.schemas > schemas/README.md`; edit the JSON files, not this page.",
        "Typed records of every schema (one TypedDict each) are in `prmfactory/rows.py`, generated the same way.",
        "Each `<name>.json` defines one shard type; shards carry `prmfactory.schema` and",
        "`prmfactory.schema_version` in their Parquet metadata and are validated on every write.",
        "Types: `string`, `bool`, `int32`, `int64`, `float32`, `float64`, `list<T>`, `struct<...>`.",
    ]
    for name in names():
        schema = load(name)
        lines += ["", f"## {name} (v{schema.version})", "", schema.description, "",
                  "| field | type | nullable | description |", "|---|---|---|---|"]
        for field in schema.fields:
            lines.append(f"| `{field['name']}` | `{_type_text(field['type'])}` | "
                         f"{'yes' if field['nullable'] else 'no'} | {field['description']} |")
            if isinstance(field["type"], dict) and "struct" in field["type"].get("list", {}):
                for sub in field["type"]["list"]["struct"]:
                    lines.append(f"| `{field['name']}[].{sub['name']}` | `{_type_text(sub['type'])}` | "
                                 f"{'yes' if sub['nullable'] else 'no'} | {sub['description']} |")
    return "\n".join(lines) + "\n"


_PYTHON_TYPES = {"string": "str", "bool": "bool", "int32": "int", "int64": "int", "float32": "float", "float64": "float"}


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_")) + "Row"


def _python_type(spec: Any, owner: str, field: str, nested: list[str]) -> str:
    if isinstance(spec, str):
        return _PYTHON_TYPES[spec]
    if "list" in spec:
        item = _python_type(spec["list"], owner, field, nested)
        return f"list[{item}]" if isinstance(spec["list"], dict) else f"list[Optional[{item}]]"
    record = f"{owner[:-3]}{_class_name(field)}"
    nested.append(_typed_dict(record, spec["struct"], f"An item of ``{field}``."))
    return record


def _typed_dict(name: str, fields: Iterable[dict], doc: str) -> str:
    nested: list[str] = []
    lines = []
    for field in fields:
        python = _python_type(field["type"], name, field["name"], nested)
        lines.append(f"    {field['name']}: {f'Optional[{python}]' if field['nullable'] else python}")
    return "\n\n\n".join([*nested, f'class {name}(TypedDict):\n    """{doc}"""\n\n' + "\n".join(lines)])


def render_rows_module() -> str:
    """``prmfactory/rows.py``: one TypedDict per shard schema, generated so readers and writers are typed."""
    parts = ['"""Typed records of every shard schema, one TypedDict per ``schemas/*.json`` file.\n\n'
             'Generated by ``python -m prmfactory.schemas rows > prmfactory/rows.py``; edit the JSON files, not this '
             'module.\n"""\n\nfrom __future__ import annotations\n\nfrom typing import Optional, TypedDict']
    for name in names():
        schema = load(name)
        parts.append(_typed_dict(_class_name(name), schema.fields, f"A ``{name}`` row (schema v{schema.version})."))
    return "\n\n\n".join(parts) + "\n"


if __name__ == "__main__":
    import sys

    print(render_rows_module() if sys.argv[1:] == ["rows"] else render_markdown(), end="")
