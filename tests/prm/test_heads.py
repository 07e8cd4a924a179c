"""Heads come from one registry: a new head is one file and one registry line, trained and scored by the
same trainer and scorer; a prm.json naming a head nobody registered is a one-line error naming the known ones."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from prmfactory.errors import UsageError
from prmfactory.prm import PRM
from prmfactory.prm.heads import HEADS, load_head
from prmfactory.stages import StageInput, execute
from prmfactory.store import Run
from prmfactory.train.config import TrainPrmConfig


@pytest.fixture
def logistic_registered(monkeypatch):
    monkeypatch.setitem(HEADS, "logistic", "tests.prm.logistic_head:LogisticHead")  # the one registry line


@pytest.mark.slow
def test_a_head_added_by_one_file_and_one_registry_line_trains_and_scores(logistic_registered, shards, tmp_path):
    config = TrainPrmConfig(head="logistic", max_steps=3, batch_size=8, threads=1, quiet=True)
    execute("train-prm", Run(tmp_path / "prm"), config, source=StageInput(shards))
    assert json.loads((tmp_path / "prm" / "prm.json").read_text())["head"] == "logistic"
    assert "Head `logistic`: one logit per token" in (tmp_path / "prm" / "README.md").read_text()
    prm = PRM.from_pretrained(tmp_path / "prm")
    scores = prm.score("What is 2 + 3?", ["2 + 3 = 5", "The answer is 5"])
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
    with pytest.raises(UsageError, match="logistic head is scored with backend transformers, not vllm"):
        PRM.from_pretrained(tmp_path / "prm", backend="vllm")


def test_a_head_nobody_registered_is_refused_naming_the_known_ones(discriminative_prm, tmp_path):
    import shutil

    copy = tmp_path / "prm"
    shutil.copytree(discriminative_prm[0], copy)
    meta = json.loads((copy / "prm.json").read_text())
    (copy / "prm.json").write_text(json.dumps({**meta, "head": "mystery"}))
    with pytest.raises(UsageError, match=r"prm.json: invalid PRM metadata: field 'head': .*unknown head 'mystery' "
                                         r"\(known: token, probe\)"):
        PRM.from_pretrained(copy)
    with pytest.raises(ValidationError, match=r"unknown head 'mystery' \(known: token, probe\)"):
        TrainPrmConfig(head="mystery")


def test_each_registered_head_declares_what_the_trainer_and_scorers_ask():
    for name in HEADS:
        head = load_head(name)
        assert head.name == name and head.backends and set(head.backends) <= {"transformers", "vllm"}
        assert all(callable(getattr(head, method)) for method in ("for_training", "from_folder", "loss", "read"))
        assert head.card.strip() and isinstance(head.files, tuple) and isinstance(head.adapters, bool)
