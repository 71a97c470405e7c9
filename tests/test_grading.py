"""Math answers through math-verify (in a process pool) and code answers through the sandbox."""

import json
import uuid
from pathlib import Path

import pytest

from tsq.grading.code import CodeGrader, extract_code, outputs_match
from tsq.grading.jail import jail_problem
from tsq.grading.math import MathGrader, grade_math, last_boxed, last_number

MATH500 = Path(__file__).resolve().parents[1] / "tsq" / "data" / "files" / "math500.jsonl"


@pytest.mark.parametrize(
    "text, boxed",
    [
        ("so \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{2}", "2"),  # the last one
        ("<think>maybe \\boxed{3}</think> the answer is \\boxed{4}", "4"),  # after </think>
        ("<think>maybe \\boxed{3}</think> the answer is 4", None),  # nothing boxed after </think>
        ("\\boxed{5} and then \\boxed{6", "5"),  # a truncated box is skipped
        ("\\fbox{7}", "7"),
        ("$\\boxed 8$", "8"),
        ("no answer", None),
    ],
)
def test_last_boxed(text, boxed):
    assert last_boxed(text) == boxed


def test_last_number_is_opt_in():
    assert last_number("2 + 3 = 5, so 1,250 apples.") == "1250"
    assert grade_math("1250", "2 + 3 = 5, so 1,250 apples.") is False
    assert grade_math("1250", "2 + 3 = 5, so 1,250 apples.", fallback="last_number") is True


@pytest.fixture(scope="module")
def math500():
    return [json.loads(line) for line in MATH500.read_text().splitlines()]


def test_every_math500_gold_grades_correct_when_boxed_and_a_wrong_one_does_not(math500):
    grader = MathGrader(workers=2)
    try:
        golds = [r["answer"] for r in math500]
        right = grader.grade_many(golds, [f"<think>...</think> The answer is $\\boxed{{{g}}}$." for g in golds])
        wrong = grader.grade_many(golds, [f"\\boxed{{{g}+1}}" for g in golds])
    finally:
        grader.close()
    assert [g for g, ok in zip(golds, right, strict=True) if not ok] == []
    assert [g for g, ok in zip(golds, wrong, strict=True) if ok] == []


def test_math_verify_equivalences_gold_first():
    assert grade_math("\\frac{1}{2}", "\\boxed{0.5}")
    assert grade_math("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\pi/2)}")
    assert not grade_math("\\frac{1}{2}", "\\boxed{0.6}")


# ------------------------------------------------------------------------------------------------- code
def fenced(code: str) -> str:
    return f"<think>I will write it.</think>\n```python\n{code}\n```"


STDIN_SPEC = {"tests": [{"input": "2 3\n", "output": "5\n", "testtype": "stdin"},
                        {"input": "10 -4\n", "output": "6\n", "testtype": "stdin"}]}  # fmt: skip


@pytest.fixture(scope="module")
def grader():
    """The jail where it works (tests/test_sandbox.py probes it), else the explicit weaker mode."""
    sandbox = "bwrap" if jail_problem() is None else "audit_hook"
    return CodeGrader(timeout_s=2, memory_mb=512, workers=2, sandbox=sandbox)


def test_extract_code_prefers_the_last_python_block_after_think():
    text = "<think>```python\nprint(0)\n```</think>```\nplain\n``` then ```python\nprint(1)\n```"
    assert extract_code(text).strip() == "print(1)"
    assert extract_code("no code") is None


def test_outputs_match_lines_and_numbers():
    assert outputs_match("5 \n", "5")
    assert outputs_match("0.3333333\n", "0.33333333")
    assert not outputs_match("5\n6", "5")
    assert not outputs_match("abc", "abd")


def test_a_correct_program_passes_and_a_wrong_one_fails(grader):
    assert grader.grade(STDIN_SPEC, fenced("a, b = map(int, input().split())\nprint(a + b)"))
    assert not grader.grade(STDIN_SPEC, fenced("a, b = map(int, input().split())\nprint(a - b)"))
    assert not grader.grade(STDIN_SPEC, "no code block at all")


def test_an_infinite_loop_is_killed_at_the_wall_clock_limit(grader):
    result = grader.run("while True:\n    pass\n")
    assert result.status == "timeout"
    assert not grader.grade(STDIN_SPEC, fenced("while True:\n    pass"))


def test_a_memory_hog_fails(grader):
    result = grader.run("x = bytearray(8 * 1024**3)\nprint(5)\n")
    assert result.status == "error" and "MemoryError" in result.stderr and "5" not in result.stdout


def test_a_network_connection_is_refused(grader):
    code = "import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('1.1.1.1', 80))\nprint('connected')\n"
    result = grader.run(code)
    assert result.status == "error" and "connected" not in result.stdout
    assert "PermissionError" in result.stderr
    assert not grader.grade(STDIN_SPEC, fenced(code))


def test_writing_outside_the_working_directory_is_refused(grader):
    target = Path("/tmp") / f"tsq-escape-{uuid.uuid4().hex}"
    code = f"open({str(target)!r}, 'w').write('x')\nprint(5)\n"
    result = grader.run(code)
    assert result.status == "error" and "PermissionError" in result.stderr
    assert not target.exists()
    assert grader.run("open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())\n").stdout == "ok\n"


def test_the_child_gets_a_clean_environment(grader, monkeypatch):
    monkeypatch.setenv("TSQ_SECRET", "hunter2")
    result = grader.run("import os\nprint(sorted(os.environ))\n")
    assert "TSQ_SECRET" not in result.stdout and result.status == "ok"


def test_functional_tests_call_the_starter_method(grader):
    spec = {"tests": [{"input": "[1, 2]\n3", "output": "[1, 2, 3]", "testtype": "functional"}], "func_name": "add"}
    good = (
        "class Solution:\n    def add(self, xs: List[int], y: int) -> List[int]:\n"
        "        print('noise')\n        return xs + [y]"
    )
    assert grader.grade(spec, fenced(good))
    assert not grader.grade(spec, fenced(good.replace("xs + [y]", "xs")))


def test_a_crashing_program_does_not_stop_the_batch(grader):
    responses = [fenced("raise SystemExit(3)"), fenced("import os\nos.abort()"),
                 fenced("a, b = map(int, input().split())\nprint(a + b)")]  # fmt: skip
    assert grader.grade_many([STDIN_SPEC] * 3, responses) == [False, False, True]
