import asyncio
import subprocess
import sys

import pytest

from prmfactory.engines.base import Completion
from prmfactory.judge.parse import majority, parse_critic, parse_per_step
from prmfactory.judge.render import DEFAULT_TEMPLATES, render
from prmfactory.errors import PromptTooLong
from prmfactory.judge.config import JudgeConfig
from prmfactory.engines import use_engine
from prmfactory.judge.stage import JudgeWork, judge_units, judgement_row
from prmfactory.progress import StageProgress
from prmfactory.work import UnitCommitter, run_units
from prmfactory.store import Run
from tests.store.test_store import problem


@pytest.mark.parametrize("text, expected", [
    ("The error is in paragraph 2. \\boxed{2}", 2),
    ("All fine: \\boxed{-1}", -1),
    ("\\boxed{ 1 }", 1),
    ("", None),                                  # empty
    ("I think paragraph 2 is wrong.", None),     # no box
    ("\\boxed{7}", None),                        # out of range (3 steps)
    ("\\boxed{-2}", None),                       # out of range
    ("\\boxed{two}", None),                      # not an integer
    ("\\boxed{1} ... no, \\boxed{2}", None),      # boxes that disagree
    ("\\boxed{1} so the answer is \\boxed{1}", 1),  # boxes that agree
    ("\\boxed{1", None),                         # unclosed
    ("The first mistake is step 2.", 2),           # the free-text form small models write
    ("The first mistake is the incorrect step 1.", 1),
    ("The first error is in step [0]", 0),
    ("The first mistake is step 9.", None),        # out of range
    ("The first step is incorrect.", None),
])
def test_parse_critic(text, expected):
    assert parse_critic(text, num_steps=3) == expected


def test_parse_per_step():
    ok = "Step 0: \\boxed{correct}\nStep 1: \\boxed{incorrect}\nStep 2: \\boxed{correct}"
    assert parse_per_step(ok, 3) == 1
    assert parse_per_step(ok.replace("incorrect", "correct"), 3) == -1
    assert parse_per_step("Step 0: \\boxed{correct}", 3) is None  # a step without a verdict
    assert parse_per_step(ok + "\nStep 1: \\boxed{correct}", 3) is None  # contradicting verdicts
    assert parse_per_step("", 3) is None


def test_majority_and_ties():
    assert majority([2, 2, -1, None]) == (2, 2)
    assert majority([3, 1]) == (1, 1)        # a tie goes to the earliest error
    assert majority([-1, 2]) == (2, 1)       # ... and an error beats "no error"
    assert majority([None, None]) == (None, 0)


def test_templates_render_steps():
    critic = render(DEFAULT_TEMPLATES["critic"].read_text(), "What is 1+1?", ["1+1 = 2", "So 2."])
    assert "<paragraph_1>\nSo 2.\n</paragraph_1>" in critic and "What is 1+1?" in critic and "\\boxed{}" in critic
    per_step = render(DEFAULT_TEMPLATES["per_step"].read_text(), "Q", ["a", "b"])
    assert "[0] a\n[1] b" in per_step


def test_judgement_row_counts_malformed_outputs():
    config = JudgeConfig(judge="j", votes=4)
    row = judgement_row("q", "7", config, ["\\boxed{1}", "\\boxed{1}", "garbage", "\\boxed{-1}"], num_steps=3)
    assert row["votes"] == [1, 1, None, -1] and row["first_error"] == 1 and row["majority_votes"] == 2
    assert row["malformed"] == 1 and row["raw_outputs"][2] == "garbage"


class ScriptedJudge:
    model = "scripted-judge"

    def __init__(self, outputs):
        self.outputs, self.prompts = outputs, []

    async def generate(self, prompt, spec):
        self.prompts.append(prompt.messages[-1].content)
        return [Completion(self.outputs[i % len(self.outputs)], 3, "stop") for i in range(spec.n)]

    def metrics(self):
        return {}

    async def close(self):
        pass


def judge_questions(commit, solutions, problems, config, engine) -> dict[str, int]:
    """The judge stage's work over ``engine`` in this process; its counters."""
    work = JudgeWork(config, config.template_text(), use_engine(engine))
    committer = UnitCommitter(commit, work, config.commit_every, set(), StageProgress(None, None))
    asyncio.run(run_units(work, judge_units(solutions, problems), committer))
    return committer.counts


def test_judge_questions_writes_one_row_per_solution(tmp_path):
    run = Run(tmp_path)
    config = JudgeConfig(judge="j", votes=3, quiet=True)
    solutions = {"q1": [{"node_id": "4", "steps": ["a", "b"]}, {"node_id": "5", "steps": ["c"]}],
                 "q2": [{"node_id": "2", "steps": ["d", "e", "f"]}]}
    engine = ScriptedJudge(["\\boxed{0}", "\\boxed{0}", "nonsense"])
    with run.writing():
        counts = judge_questions(run.commit, solutions, {"q1": "P1", "q2": "P2"}, config, engine)
    rows = run.read("judgements").to_pylist()
    assert sorted((r["question_id"], r["node_id"]) for r in rows) == [("q1", "4"), ("q1", "5"), ("q2", "2")]
    assert all(r["votes"] == [0, 0, None] and r["first_error"] == 0 and r["malformed"] == 1 for r in rows)
    assert {r["status"] for r in rows} == {"ok"}
    assert counts == {"solutions": 3, "flagged": 3, "malformed_outputs": 3, "too_long": 0}
    assert any("P2" in p and "<paragraph_2>\nf\n</paragraph_2>" in p for p in engine.prompts)


class TooLongForOne(ScriptedJudge):
    async def generate(self, prompt, spec):
        if "LONG" in prompt.messages[-1].content:
            raise PromptTooLong("prompt of 554 tokens leaves no room in max_model_len 512")
        return await super().generate(prompt, spec)


def test_a_solution_too_long_for_the_judge_gets_no_votes_and_the_stage_goes_on(tmp_path):
    run = Run(tmp_path)
    solutions = {"q1": [{"node_id": "4", "steps": ["LONG", "b"]}, {"node_id": "5", "steps": ["c"]}]}
    with run.writing():
        counts = judge_questions(run.commit, solutions, {"q1": "P1"}, JudgeConfig(judge="j", votes=2, quiet=True),
                                 TooLongForOne(["\\boxed{0}"]))
    rows = {r["node_id"]: r for r in run.read("judgements").to_pylist()}
    assert rows["4"]["votes"] == [] and rows["4"]["first_error"] is None and rows["4"]["raw_outputs"] == []
    assert rows["4"]["status"] == "too_long" and rows["5"]["status"] == "ok"
    assert rows["5"]["votes"] == [0, 0]
    assert counts == {"solutions": 2, "flagged": 1, "malformed_outputs": 0, "too_long": 1}


@pytest.mark.slow
def test_judge_command_with_the_toy_judge_on_vllm(tmp_path):
    from prmfactory.toy.problems import generate

    run = Run(tmp_path / "run")
    toys = generate(3, "test", 21)
    wrong = list(toys[1].reference_steps)
    wrong[0] = wrong[0].replace("=", "= 1 +")
    nodes = []
    for i, (toy, steps) in enumerate([(toys[0], toys[0].reference_steps), (toys[1], wrong), (toys[2], [])]):
        qid = f"q{i}"
        nodes.append({"question_id": qid, "node_id": "1", "parent_id": "0", "depth": len(steps), "steps": steps,
                      "mc_value": 1.0, "num_rollouts": 1, "num_correct": 1, "visits": 0, "complete": bool(steps),
                      "rollouts": [], "strategy": "mc", "segmentation": "blank_line"})
    with run.writing():
        run.commit({"problems": [dict(problem(f"q{i}"), problem=t.text) for i, t in enumerate(toys)], "nodes": nodes})
    command = [sys.executable, "-c", "from prmfactory.cli import main; main()", "judge", "--run", str(run.root),
               "--judge", "toy-judge", "--votes", "3", "--max-new-tokens", "200", "--quiet", "--config",
               str(tmp_path / "c.yaml")]
    (tmp_path / "c.yaml").write_text("engine: {dtype: float32, max_model_len: 512, kv_cache_gib: 0.25, block_size: 32}\n")
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["question_id"]: r for r in run.read("judgements").to_pylist()}
    assert set(rows) == {"q0", "q1"}  # q2 has no complete solution
    for row in rows.values():
        assert len(row["votes"]) == 3 and len(row["raw_outputs"]) == 3
        assert row["malformed"] < 3 and row["judge_model"] == "toy-judge"
    assert run.read_report("judge")["counts"]["solutions"] == 2
