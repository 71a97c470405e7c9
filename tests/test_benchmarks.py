"""Benchmark loaders, prompt templates and the real-benchmark problem source."""

import base64
import json
import pickle
import zlib
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tsq.data.benchmarks import BenchmarkSource, SplitEntry, decode_test_cases
from tsq.data.templates import PromptTemplate
from tsq.models.base import ModelHandle

FILES = Path(__file__).resolve().parents[1] / "tsq" / "data" / "files"
PLAIN = PromptTemplate(name="plain", user="{question}\n\nReason step by step, and put the final answer in \\boxed{}.")


@pytest.mark.parametrize(
    "name, file, rows",
    [
        ("math500", "math500.jsonl", 500),
        ("aime24", "aime24.jsonl", 30),
        ("aime25", "aime25.jsonl", 30),
        ("amc23", "amc2023.jsonl", 40),
        ("gsm8k", "gsm8k_test.jsonl", 1319),
    ],  # fmt: skip
)
def test_loaders_return_every_row(name, file, rows):
    items = SplitEntry(benchmark=name).load(None)
    assert len(items) == rows and len({it.id for it in items}) == rows
    assert all(it.question.strip() and it.answer.strip() for it in items)
    assert SplitEntry(benchmark=name, path=str(FILES / file)).load(None) == items  # the default path is the file


def test_shipped_benchmark_files_are_the_recorded_copies():
    """Every shipped file hashes to the sum recorded when it was copied (tsq/data/files/SHA256SUMS)."""
    import hashlib

    sums = dict(reversed(line.split()) for line in (FILES / "SHA256SUMS").read_text().splitlines())
    assert sorted(sums) == sorted(p.name for p in FILES.glob("*.jsonl"))
    for name, digest in sums.items():
        assert hashlib.sha256((FILES / name).read_bytes()).hexdigest() == digest, name


def test_math500_keeps_levels_and_gsm8k_answers_are_the_number_after_hashes():
    levels = {it.level for it in SplitEntry(benchmark="math500").load(None)}
    assert levels == {1, 2, 3, 4, 5}
    gsm = SplitEntry(benchmark="gsm8k", limit=3).load(None)
    assert gsm[0].answer == "18" and gsm[0].id == "gsm8k/0"
    assert all(float(it.answer) == float(it.answer) for it in SplitEntry(benchmark="gsm8k").load(None))
    sliced = SplitEntry(benchmark="gsm8k", offset=2, limit=5).load(None)
    assert [it.id for it in sliced] == [f"gsm8k/{i}" for i in range(2, 7)]


def test_bad_rows_are_named_by_file_and_line(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q", "answer": "#### 1"}\n{"question": oops}\n')
    with pytest.raises(ValueError, match=r"broken.jsonl:2: not valid JSON"):
        SplitEntry(benchmark="gsm8k", path=str(broken)).load(None)
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2"}\n')
    with pytest.raises(ValueError, match=r"missing.jsonl row 2: missing field\(s\) \['answer'\]"):
        SplitEntry(benchmark="gsm8k", path=str(missing)).load(None)
    no_hashes = tmp_path / "nohash.jsonl"
    no_hashes.write_text('{"question": "q", "answer": "42"}\n')
    with pytest.raises(ValueError, match="nohash.jsonl row 1: a GSM8K answer has no '####'"):
        SplitEntry(benchmark="gsm8k", path=str(no_hashes)).load(None)
    with pytest.raises(ValueError, match="unknown benchmark 'mat500'"):
        SplitEntry(benchmark="mat500")
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        SplitEntry(benchmark="gsm8k", path=str(tmp_path / "nowhere.jsonl")).load(None)


def test_a_problem_in_two_splits_is_refused():
    splits = {
        "train": [{"benchmark": "gsm8k", "limit": 10}],
        "test": [{"benchmark": "gsm8k", "offset": 5, "limit": 10}],
    }
    with pytest.raises(ValueError, match="gsm8k/5 is in both split train and test"):
        BenchmarkSource(name="g", splits=splits, template=PLAIN)


def lcb_row(i, date, private_compressed=False, functional=False):
    public = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]
    private = json.dumps([{"input": "4 5\n", "output": "9\n", "testtype": "stdin"}])
    if private_compressed:  # LiveCodeBench's own encoding of private cases
        private = base64.b64encode(zlib.compress(pickle.dumps(private))).decode()
    meta = {}
    if functional:
        public = [{"input": "[1]\n2", "output": "[1, 2]", "testtype": "functional"}]
        meta = {"func_name": "add"}
    return {
        "question_id": f"q{i}", "question_content": f"Problem {i}", "platform": "atcoder", "difficulty": "medium",
        "starter_code": "class Solution:\n    def add(self, xs, y):\n" if functional else "",
        "contest_date": date, "public_test_cases": json.dumps(public), "private_test_cases": private,
        "metadata": json.dumps(meta),
    }  # fmt: skip


def test_livecodebench_rows_dates_and_compressed_private_tests(tmp_path):
    path = tmp_path / "lcb.jsonl"
    rows = [lcb_row(0, "2024-07-01"), lcb_row(1, "2024-09-01", True), lcb_row(2, "2025-01-31", functional=True)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = SplitEntry(benchmark="livecodebench", path=str(path), start_date="2024-08-01", end_date="2025-01-31").load(
        None
    )
    assert [it.id for it in items] == ["livecodebench/q1", "livecodebench/q2"]
    spec = json.loads(items[0].answer)
    assert [t["input"] for t in spec["tests"]] == ["1 2\n", "4 5\n"] and items[0].level == 2
    assert json.loads(items[1].answer)["func_name"] == "add" and items[1].starter_code

    source = BenchmarkSource(name="lcb", splits={"test": [{"benchmark": "livecodebench", "path": str(path)}]},
                             template=PLAIN)  # fmt: skip
    (p0, p1, p2) = source.split("test")
    assert "Read the inputs from stdin" in p0.prompt and "starter code" in p2.prompt
    solve = "<think>easy</think>\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    assert source.grade_many([p0, p1], [solve, "no code"]) == [True, False]


def test_a_pickled_object_in_a_test_field_is_refused():
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    payload = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle"):
        decode_test_cases(payload)


@pytest.fixture
def chat_tokenizer(micro_model_dir):
    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant><think>\n{% endif %}"
    )
    return tok


def test_templates_render_through_the_chat_template(chat_tokenizer):
    instruction = "Please reason step by step, and put your final answer within \\boxed{}."
    r1 = PromptTemplate(name="r1", user="{question}\n" + instruction, generation_prefix="<think>\n")
    text = r1.render(chat_tokenizer, "What is {x}?")
    # braces stay literal; the chat template's own <think> is not doubled
    assert text == "<user>What is {x}?\n" + instruction + "\n<assistant><think>\n"
    paper = PromptTemplate(name="think_answer", system="Think in <think> </think>.", generation_prefix="<think>\n")
    assert paper.render(chat_tokenizer, "Q").startswith("<system>Think in <think> </think>.\n<user>Q\n")
    chat_tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        r1.render(chat_tokenizer, "Q")
    assert PromptTemplate(name="raw", use_chat_template=False).render(chat_tokenizer, "Q") == "Q\n\n"
    with pytest.raises(ValueError, match="must contain {question}"):
        PromptTemplate(name="bad", user="no placeholder")


def test_bind_renders_prompts_and_changes_the_fingerprint(micro_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    tok.chat_template = (
        "{% for m in messages %}[{{ m['content'] }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    )
    tok.save_pretrained(tmp_path)
    source = BenchmarkSource(name="g", splits={"test": [{"benchmark": "gsm8k", "limit": 2}]}, template=PLAIN)
    bound = source.bind(ModelHandle("chat", tmp_path, "chat"))
    raw, rendered = source.split("test")[0], bound.split("test")[0]
    assert rendered.prompt == f"[{raw.prompt}]>" and rendered.answer == raw.answer == "18"
    assert bound.fingerprint() != source.fingerprint()
    with pytest.raises(KeyError, match="no split 'dev'"):
        source.split("dev")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": 1, "problem": "2?", "answer": [1, 2]}\n', r"row 1: the answer must be .* got list"),
        (b'{"id": 1, "problem": "2?", "answer": null}\n', r"row 1: the answer must be .* got NoneType"),
        (b'{"id": 1, "problem": "2?", "answer": NaN}\n', r"row 1: the answer is nan, not a finite number"),
        (b'{"id": 1, "problem": "2?", "answer": "  "}\n', r"row 1: the answer is blank"),
        (b'{"id": 1, "problem": "2?", "answer": true}\n', r"row 1: the answer must be .* got bool"),
        (b'{"id": 1, "problem": "", "answer": "2"}\n', r"row 1: 'problem' must be non-empty text"),
        (b'{"problem": "a", "answer": "1", "id": 7}\n{"problem": "b", "answer": "2", "id": 7}\n',
         r"rows 1 and 2 have the same id 'aime24/7'"),
        (b'{"problem": "a", "answer": "1", "id": 1}\n{"problem": "a", "answer": "1", "id": 2}\n',
         r"rows 1 and 2 have the same question"),
        (b'{"problem": "a", "answer": "1", "id": 1}\n{"problem": "caf\xe9", "answer": "2", "id": 2}\n',
         r"rows.jsonl:2: not UTF-8"),
        (b'{"problem": "a", "answer": "1", "id": 1}\n[1, 2]\n', r"rows.jsonl:2: a list, not a JSON object"),
        (b'{"problem": "a", "answer": "1", "id": 1}\n{"problem": \n', r"rows.jsonl:2: not valid JSON"),
    ],
)  # fmt: skip
def test_bad_rows_are_named_by_file_and_row(tmp_path, content, message):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        SplitEntry(benchmark="aime24", path=str(path)).load(None)
    assert str(path) in str(err.value)


def test_numeric_answers_are_written_as_text():
    from tsq.data.benchmarks import answer_text

    assert [answer_text(v) for v in (12, 12.0, 0.5, " 7 ", -3)] == ["12", "12", "0.5", "7", "-3"]


def write_lcb(tmp_path, rows) -> Path:
    path = tmp_path / "lcb.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"public_test_cases": "[]", "private_test_cases": ""}, r"no test cases \(every response would pass\)"),
        ({"public_test_cases": json.dumps(["1 2"])}, r"test cases\[0\]: a test case must be an object, got str"),
        ({"public_test_cases": json.dumps({"input": "1"})}, r"must each be a list of test cases"),
        ({"public_test_cases": 7}, r"test cases must be a JSON string or a list, got int"),
        ({"metadata": "[1]"}, r"metadata must be a JSON object, got list"),
        ({"public_test_cases": json.dumps([{"input": ["1 2"], "output": "3", "testtype": "stdin"}])},
         r"input of a stdin test must be text, got list"),
        ({"public_test_cases": json.dumps([{"input": "\ud800", "output": "3", "testtype": "stdin"}])},
         r"input cannot be written as UTF-8"),
        ({"question_content": "Problem \ud800"}, r"'question_content' cannot be written as UTF-8"),
        ({"contest_date": None}, r"no contest_date"),
        ({"contest_date": "Sept 2024"}, r"contest_date 'Sept 2024' is not an ISO date"),
    ],
)  # fmt: skip
def test_bad_livecodebench_rows_are_named_by_file_and_row(tmp_path, change, message):
    path = write_lcb(tmp_path, [lcb_row(0, "2024-09-01"), {**lcb_row(1, "2024-09-02"), **change}])
    entry = SplitEntry(benchmark="livecodebench", path=str(path), start_date="2024-08-01", end_date="2025-01-31")
    with pytest.raises(ValueError, match=message) as err:
        entry.load(None)
    assert f"{path} row 2" in str(err.value)


def test_contest_dates_in_other_iso_forms_are_placed_and_rows_outside_the_window_counted(tmp_path, caplog):
    rows = [lcb_row(0, "2024-09-01T00:00:00"), lcb_row(1, "2024-07-31 23:59:59"), lcb_row(2, "2025-01-31")]
    entry = SplitEntry(benchmark="livecodebench", path=str(write_lcb(tmp_path, rows)), start_date="2024-08-01",
                       end_date="2025-01-31")  # fmt: skip
    with caplog.at_level("INFO"):
        items = entry.load(None)
    assert [it.id for it in items] == ["livecodebench/q0", "livecodebench/q2"]
    assert entry.outside_window == 1 and "1 of 3 rows are outside the contest_date window" in caplog.text


def test_a_functional_test_whose_input_is_a_json_list_is_graded_on_its_arguments(tmp_path):
    row = lcb_row(0, "2024-09-01", functional=True)
    row["public_test_cases"] = json.dumps([{"input": [[1], 2], "output": [1, 2], "testtype": "functional"}])
    row["private_test_cases"] = ""
    source = BenchmarkSource(name="lcb", splits={"test": [{"benchmark": "livecodebench",
                                                           "path": str(write_lcb(tmp_path, [row]))}]},
                             template=PLAIN, code_grader={"sandbox": "audit_hook"})  # fmt: skip
    good = "```python\nclass Solution:\n    def add(self, xs, y):\n        return xs + [y]\n```"
    wrong = good.replace("xs + [y]", "xs")
    (problem,) = source.split("test")
    assert source.grade_many([problem, problem], [good, wrong]) == [True, False]


def test_a_spec_with_no_test_is_an_error_not_a_pass():
    from tsq.grading.code import CodeGrader

    with pytest.raises(ValueError, match="no test cases"):
        CodeGrader(sandbox="audit_hook").grade({"tests": [], "func_name": None}, "```python\nprint(1)\n```")


def test_an_unclosed_thinking_block_is_graded_wrong_under_a_reasoning_template(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": 1, "problem": "1+1?", "answer": "2"}) + "\n")
    splits = {"test": [{"benchmark": "aime24", "path": str(path)}]}
    reasoning = PromptTemplate(name="r1", generation_prefix="<think>\n")
    closed, unclosed, after = "so \\boxed{2}</think>\\boxed{2}", "wait, maybe \\boxed{2} ... hmm", "x</think> 3"
    for template, expected in ((reasoning, [True, False, False]), (PLAIN, [True, True, False])):
        source = BenchmarkSource(name="m", splits=splits, template=template, math_grader={"workers": 0})
        (p,) = source.split("test")
        assert source.grade_many([p, p, p], [closed, unclosed, after]) == expected, template.name
    switch_off = PromptTemplate(**{**vars(reasoning), "thinking": False})
    switched = BenchmarkSource(name="m", splits=splits, template=switch_off, math_grader={"workers": 0})
    (p,) = switched.split("test")
    assert switched.grade_many([p], [unclosed]) == [True]
