import pyarrow as pa
import pytest

from prmfactory import schemas
from prmfactory.schemas import SchemaError


def _problem(**overrides):
    row = {"question_id": "q1", "problem": "1+1?", "answer": "2", "source": "f:1", "input_format": "prmfactory",
           "reference_solution": None, "subject": None, "level": None, "extra_json": None}
    row.update(overrides)
    return row


def test_every_schema_file_loads_with_version_and_question_id():
    for name in schemas.names():
        schema = schemas.load(name)
        assert schema.version >= 1
        assert "question_id" in schema.column_names
        assert schema.arrow.metadata[b"prmfactory.schema"] == name.encode()


def test_expected_shard_types_exist():
    assert {"problems", "nodes", "questions", "verdicts", "judgements", "steps"} <= set(schemas.names())


def test_table_from_rows_roundtrips():
    table = schemas.load("problems").table([_problem()])
    assert table.num_rows == 1 and table.schema.equals(schemas.load("problems").arrow, check_metadata=False)


def test_missing_column_is_rejected():
    row = _problem()
    del row["answer"]
    with pytest.raises(SchemaError, match="missing columns \\['answer'\\]"):
        schemas.load("problems").table([row])


def test_mistyped_column_is_rejected():
    with pytest.raises(SchemaError, match="'level'"):
        schemas.load("problems").table([_problem(level="three")])


def test_null_in_non_nullable_column_is_rejected():
    with pytest.raises(SchemaError, match="'answer'"):
        schemas.load("problems").table([_problem(answer=None)])


def test_validate_rejects_table_with_wrong_type_or_missing_column():
    schema = schemas.load("problems")
    good = schema.table([_problem()])
    mistyped = good.set_column(good.schema.get_field_index("level"), "level", pa.array(["x"], pa.string()))
    with pytest.raises(SchemaError, match="type string, expected int32"):
        schema.validate(mistyped)
    with pytest.raises(SchemaError, match="missing column 'answer'"):
        schema.validate(good.drop(["answer"]))


def test_nested_struct_column_builds():
    row = {"question_id": "q", "node_id": "0", "parent_id": None, "depth": 0, "steps": [], "mc_value": 0.5,
           "num_rollouts": 2, "num_correct": 1, "visits": 0, "complete": False, "strategy": "mc", "segmentation": "blank_line",
           "rollouts": [{"text": "a", "answer": "2", "correct": True, "num_tokens": 3},
                        {"text": "b", "answer": None, "correct": False, "num_tokens": 4}]}
    table = schemas.load("nodes").table([row])
    assert table.column("rollouts").to_pylist()[0][1]["answer"] is None


def test_readme_is_generated_from_the_schema_files():
    assert (schemas.SCHEMA_DIR / "README.md").read_text() == schemas.render_markdown()


def test_typed_rows_are_generated_from_the_schema_files():
    from pathlib import Path

    import prmfactory.rows

    assert Path(prmfactory.rows.__file__).read_text() == schemas.render_rows_module()
    assert list(prmfactory.rows.StepsRow.__annotations__) == schemas.load("steps").column_names
