import pytest

from prmfactory.answers import AnswerChecker, extract_answer, extract_boxed
from prmfactory.steps import Segmenter


def test_blank_line_segmentation_roundtrip():
    segmenter = Segmenter()
    text = "First step.\n\nSecond step\nwith two lines.\n  \nThe answer is \\boxed{3}.\n\n"
    steps = segmenter.split(text)
    assert steps == ["First step.", "Second step\nwith two lines.", "The answer is \\boxed{3}."]
    assert segmenter.split(segmenter.join(steps)) == steps
    assert segmenter.prefix_text(steps[:1]) == "First step.\n\n" and segmenter.prefix_text([]) == ""


def test_step_prefix_segmentation():
    segmenter = Segmenter("step_prefix")
    text = "Step 1: add 2 and 3.\nStep 2: so 5.\nStep 3. The answer is 5."
    assert segmenter.split(text) == ["add 2 and 3.", "so 5.", "The answer is 5."]
    assert segmenter.prefix_text(["a", "b"]) == "Step 1: a\n\nStep 2: b\n\nStep 3: "
    assert segmenter.split(segmenter.join(["a", "b"])) == ["a", "b"]


def test_line_segmentation_is_one_step_per_line():
    segmenter = Segmenter("line")
    text = "Janet lays 16 eggs.\nShe eats 3, so 16 - 3 = 13.\n\n  \n#### 13\n"
    steps = segmenter.split(text)
    assert steps == ["Janet lays 16 eggs.", "She eats 3, so 16 - 3 = 13.", "#### 13"]
    assert segmenter.split(segmenter.join(steps)) == steps
    assert segmenter.prefix_text(steps[:2]) == "Janet lays 16 eggs.\nShe eats 3, so 16 - 3 = 13.\n"


@pytest.mark.parametrize("text, answer", [
    ("so \\boxed{18}. The answer is 3", "18"),  # a box wins over any free-text form
    ("She makes 64 * 12 = 760 dollars.\n#### 7\nThe answer is: 7", "7"),
    ("#### 1,250\n", "1,250"),
    ("So, the answer is 4.", "4"),
    ("The answer is: 12 eggs per day.\nDone.", "12 eggs per day"),
    ("the answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
    ("The answer is 5. Then the answer is 6.", "6"),
    ("the answer 1/2", None),
    ("The answer is", None),
    ("So, the final answer is:", None),  # the answer comes on the next line, or never
    ("The answer is:\n42", "42"),
    ("The answer is \\boxed{12", None),  # cut off inside the box: no answer
])
def test_extract_answer_falls_back_to_free_text_forms(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("text, answer", [
    ("so \\boxed{18}.", "18"),
    ("first \\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed {x^{2}}", "x^{2}"),
    ("no box here", None),
    ("\\boxed{unclosed", None),
    ("\\boxed{}", None),
])
def test_extract_boxed(text, answer):
    assert extract_boxed(text) == answer


@pytest.fixture(scope="module")
def checker():
    with AnswerChecker(timeout_s=10) as c:
        yield c


def test_equivalence_is_mathematical_not_textual(checker):
    checks = checker.check("\\frac{1}{2}", ["\\boxed{0.5}", "\\boxed{1/2}", "\\boxed{\\frac{2}{4}}", "\\boxed{12}",
                                             "the answer 1/2", "\\boxed{\\frac{1}{2}}"])
    assert [c.correct for c in checks] == [True, True, True, False, False, True]
    assert checks[4].answer is None and checks[0].answer == "0.5"


def test_free_text_answers_are_checked_like_boxed_ones(checker):
    checks = checker.check("72", ["48 + 24 = 72\n#### 72", "So the answer is: 72.", "The answer is 27", "no answer"])
    assert [c.correct for c in checks] == [True, True, False, False]
    assert checks[3].answer is None


def test_substring_is_not_a_match(checker):
    assert not checker.check("18", ["\\boxed{118}"])[0].correct
    assert checker.check("18", ["\\boxed{18.0}"])[0].correct


def test_a_check_over_the_time_limit_is_killed_and_counts_as_wrong():
    import time

    with AnswerChecker(timeout_s=1.0) as bounded:
        started = time.monotonic()
        results = bounded.check("2", ["\\boxed{2}", "\\boxed{9^{9^{9^{9}}}}"])  # sympy never finishes the latter
        assert [r.correct for r in results] == [True, False] and bounded.timeouts == 1
        assert time.monotonic() - started < 15
        assert bounded.check("3", ["\\boxed{3}"])[0].correct  # a fresh worker took over
