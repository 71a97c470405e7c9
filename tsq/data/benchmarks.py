"""Real benchmarks as a problem source (`data=math`, `data=gsm8k`, `data=livecodebench`).

Each split is a list of entries `{benchmark, path, hub, hub_split, offset, limit, start_date, end_date}`.
A benchmark is read from `path` (JSONL, JSON or parquet), else from the shipped copy in `tsq/data/files`
(MATH500, AIME24, AIME25, AMC23, GSM8K test), else from the HF hub when `hub` is set and `datasets` is
installed. Rows are validated on load, and a bad one is reported with its file and line.

Prompts need the model's chat template, so `split()` of an unbound source gives the bare user
message; the pipeline calls `bind(handle)` once the model directory exists, and every stage after that
sees fully rendered prompts.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import json
import logging
import math
import pickle
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from tsq.cache import file_sha256
from tsq.data.base import Conversation, ModelFolder, Problem
from tsq.data.templates import PromptTemplate
from tsq.grading.code import CodeGrader, parse_tests
from tsq.grading.math import MathGrader
from tsq.text import THINK_CLOSE, utf8_text

FILES = Path(__file__).with_name("files")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives and which fields hold what."""

    kind: str  # "math" or "code"
    file: str | None
    hub: str | None
    hub_split: str
    question: str
    answer: str | None
    id: str | None = None
    level: str | None = None
    hub_config: str | None = None


SPECS: dict[str, BenchmarkSpec] = {
    "math500": BenchmarkSpec("math", "math500.jsonl", "HuggingFaceH4/MATH-500", "test", "problem", "answer",
                             id="unique_id", level="level"),
    "aime24": BenchmarkSpec("math", "aime24.jsonl", "HuggingFaceH4/aime_2024", "train", "problem", "answer", id="id"),
    "aime25": BenchmarkSpec("math", "aime25.jsonl", "yentinglin/aime_2025", "train", "problem", "answer", id="id"),
    "amc23": BenchmarkSpec("math", "amc2023.jsonl", "math-ai/amc23", "test", "problem", "answer", id="id"),
    "gsm8k": BenchmarkSpec("math", "gsm8k_test.jsonl", "openai/gsm8k", "test", "question", "answer", hub_config="main"),
    # A generic math JSONL (e.g. TokenSqueeze's math14k: instruction / ground_truth_answer); fields from the entry.
    "math_jsonl": BenchmarkSpec("math", None, None, "train", "instruction", "ground_truth_answer"),
    "livecodebench": BenchmarkSpec("code", None, "livecodebench/code_generation_lite", "test", "question_content",
                                   None, id="question_id", level="difficulty"),
}  # fmt: skip
CODE_LEVELS = {"easy": 1, "medium": 2, "hard": 3}


@dataclass(frozen=True)
class BenchmarkItem:
    """A benchmark row before prompting. For code, `answer` is the JSON test spec the code grader reads."""

    id: str
    benchmark: str
    kind: str
    question: str
    answer: str
    level: int
    starter_code: str = ""


# ---------------------------------------------------------------------------------------------- reading
def read_rows(path: Path) -> list[dict]:
    """Rows of a JSONL, JSON (a list) or parquet file, each a JSON object; a line that is not UTF-8, not
    JSON or not an object is named by file and line (JSON: by index)."""
    if not path.exists():
        raise FileNotFoundError(f"benchmark file {path} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_dict(orient="records")
    raw = path.read_bytes()
    if path.suffix == ".json":
        try:
            rows = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 at byte {e.start}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of rows")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ValueError(f"{path}: row {i} is a {type(row).__name__}, not an object")
        return rows
    rows = []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:{n}: not UTF-8 (byte {e.start} of the line)") from None
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n}: a {type(row).__name__}, not a JSON object")
        rows.append(row)
    return rows


def answer_text(value: object) -> str:
    """A gold answer as text. Accepted: a non-empty string (stripped) or a finite number (written as an
    integer when it is one, e.g. 12.0 -> "12", else with Python's shortest round-trip digits). Lists,
    null, NaN, booleans and blank strings are errors (the caller names the file and row)."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("the answer is blank")
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"the answer is {value!r}, not a finite number")
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    raise ValueError(f"the answer must be a string or a number, got {type(value).__name__} {value!r}")


def read_hub(hub: str, split: str, config: str | None) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"reading {hub} from the HF hub needs `pip install datasets` (or give a local path)"
        ) from None
    return list(datasets.load_dataset(hub, config, split=split))


class _StringsOnly(pickle.Unpickler):
    def find_class(self, module, name):  # a pickled str needs no class; anything else is refused
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} in a test-case field")


MAX_TEST_BYTES = 256 * 2**20  # one row's decompressed test cases; LiveCodeBench's largest are tens of MB


def decode_test_cases(raw: str | list) -> list:
    """LiveCodeBench test cases: a JSON string, or (private cases) base64(zlib(pickle(JSON string))), at most
    MAX_TEST_BYTES once decompressed (a larger one is refused instead of filling the memory)."""
    if isinstance(raw, list):
        return raw
    if not isinstance(raw, str):
        raise ValueError(f"test cases must be a JSON string or a list, got {type(raw).__name__}")
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        inflater = zlib.decompressobj()
        blob = inflater.decompress(base64.b64decode(raw), MAX_TEST_BYTES)
        if inflater.unconsumed_tail:
            raise ValueError(f"test cases larger than {MAX_TEST_BYTES >> 20} MB once decompressed") from None
        return json.loads(_StringsOnly(io.BytesIO(blob)).load())


def contest_date(value: object) -> str:
    """A LiveCodeBench `contest_date` as YYYY-MM-DD: ISO text (a date, or a date and time) or a datetime
    (parquet files and the hub give those); anything else is an error."""
    if isinstance(value, (datetime.date, pd.Timestamp)):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, str):
        try:
            return datetime.datetime.fromisoformat(value.strip()).strftime("%Y-%m-%d")
        except ValueError:
            pass
    raise ValueError(f"contest_date {value!r} is not an ISO date (YYYY-MM-DD, optionally with a time)")


def gsm8k_answer(solution: str) -> str:
    """The number after GSM8K's `####`, without thousands separators."""
    head, sep, tail = solution.rpartition("####")
    if not sep:
        raise ValueError("a GSM8K answer has no '####'")
    return tail.strip().replace(",", "")


# ---------------------------------------------------------------------------------------------- entries
@dataclass
class SplitEntry:
    """One benchmark (or a slice of it) inside a split."""

    benchmark: str
    path: str | None = None
    hub: str | None = None
    hub_split: str | None = None
    offset: int = 0
    limit: int | None = None
    start_date: str | None = None  # LiveCodeBench contest_date window, inclusive (YYYY-MM-DD)
    end_date: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # override the spec's question/answer/id fields

    def __post_init__(self) -> None:
        if self.benchmark not in SPECS:
            raise ValueError(f"unknown benchmark {self.benchmark!r}; known: {sorted(SPECS)}")
        if self.offset < 0 or (self.limit is not None and self.limit <= 0):
            raise ValueError(f"{self.benchmark}: offset must be >= 0 and limit > 0, got {self.offset}, {self.limit}")

    @property
    def spec(self) -> BenchmarkSpec:
        return replace(SPECS[self.benchmark], **self.fields) if self.fields else SPECS[self.benchmark]

    def location(self, data_dir: str | None) -> tuple[str, Path | None]:
        if self.path:
            return str(self.path), Path(self.path)
        spec = self.spec
        if spec.file:
            path = Path(data_dir or FILES) / spec.file
            if path.exists() or not (self.hub or spec.hub):
                return str(path), path
        hub = self.hub or spec.hub
        if hub is None:
            raise ValueError(f"{self.benchmark}: give a path (no shipped file and no hub id)")
        return f"hf://{hub}", None

    def load(self, data_dir: str | None) -> list[BenchmarkItem]:
        spec, (where, path) = self.spec, self.location(data_dir)
        rows = read_rows(path) if path else read_hub(self.hub or spec.hub, self.hub_split or spec.hub_split,
                                                     spec.hub_config)  # fmt: skip
        items = [self._item(spec, row, where, n) for n, row in enumerate(rows, start=1)]
        self.outside_window = sum(it is None for it in items)
        if self.outside_window:
            log.info("%s: %d of %d rows are outside the contest_date window %s .. %s and left out", where,
                     self.outside_window, len(items), self.start_date or "-", self.end_date or "-")  # fmt: skip
        rows_of: dict[str, int] = {}
        for n, it in enumerate(items, start=1):
            if it is None:
                continue
            for seen_as in (it.id, "question:" + it.question.strip()):
                if rows_of.setdefault(seen_as, n) != n:
                    same = "id " + repr(it.id) if seen_as == it.id else "question"
                    raise ValueError(f"{where}: rows {rows_of[seen_as]} and {n} have the same {same}")
        items = [it for it in items if it is not None]
        end = None if self.limit is None else self.offset + self.limit
        return items[self.offset : end]

    def _item(self, spec: BenchmarkSpec, row: dict, where: str, n: int) -> BenchmarkItem | None:
        needed = [spec.question] + ([spec.answer] if spec.answer else []) + ([spec.id] if spec.id else [])
        if spec.kind == "code":
            needed += ["public_test_cases"]
        missing = [k for k in needed if k not in row]
        if missing:
            raise ValueError(f"{where} row {n}: missing field(s) {missing} for benchmark {self.benchmark}")
        question = row[spec.question]
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{where} row {n}: {spec.question!r} must be non-empty text, got {question!r}")
        rid = f"{self.benchmark}/{row[spec.id] if spec.id else n - 1}"
        try:
            utf8_text(question, repr(spec.question))
            if spec.kind == "code":
                return self._code_item(spec, row, rid, question)
            answer = utf8_text(answer_text(row[spec.answer]), repr(spec.answer))
            answer = gsm8k_answer(answer) if self.benchmark == "gsm8k" else answer
        except (ValueError, KeyError, TypeError, AttributeError, zlib.error, pickle.UnpicklingError) as e:
            raise ValueError(f"{where} row {n}: {e}") from None
        level = int(row[spec.level]) if spec.level and str(row.get(spec.level, "")).isdigit() else 0
        return BenchmarkItem(rid, self.benchmark, "math", question, answer, level)

    def _code_item(self, spec: BenchmarkSpec, row: dict, rid: str, question: str) -> BenchmarkItem | None:
        if self.start_date or self.end_date:
            if row.get("contest_date") is None:
                raise ValueError("no contest_date, so the row cannot be placed in the date window")
            date = contest_date(row["contest_date"])
            if (self.start_date and date < self.start_date) or (self.end_date and date > self.end_date):
                return None  # counted by load()
        public = decode_test_cases(row["public_test_cases"])
        private = decode_test_cases(row.get("private_test_cases") or "[]")
        if not isinstance(public, list) or not isinstance(private, list):
            raise ValueError("public_test_cases and private_test_cases must each be a list of test cases")
        tests = [asdict(t) for t in parse_tests(public + private, where=f"{rid} test cases")]
        metadata = row.get("metadata") or "{}"
        metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
        if not isinstance(metadata, dict):
            raise ValueError(f"metadata must be a JSON object, got {type(metadata).__name__}")
        func_name = metadata.get("func_name")
        if any(t["testtype"] == "functional" for t in tests) and not func_name:
            raise ValueError("functional tests but no metadata.func_name")
        spec_json = json.dumps({"tests": tests, "func_name": func_name})
        level = CODE_LEVELS.get(str(row.get(spec.level or "", "")).lower(), 0)
        starter = utf8_text(str(row.get("starter_code") or ""), "'starter_code'")
        return BenchmarkItem(rid, self.benchmark, "code", question, spec_json, level, starter)


def file_digest(path: Path) -> str:
    return file_sha256(path)[:16]


# ---------------------------------------------------------------------------------------------- source
@dataclass
class BenchmarkSource:
    """A `data=` problem source over real benchmarks, graded by math-verify or the code sandbox."""

    name: str
    splits: dict[str, list[dict]]
    template: PromptTemplate
    step_delimiter: str = "\n\n"
    data_dir: str | None = None
    math_grader: dict = field(default_factory=dict)
    code_grader: dict = field(default_factory=dict)
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not self.step_delimiter:
            raise ValueError("data.step_delimiter must be a non-empty string")
        if not isinstance(self.template, PromptTemplate):
            self.template = PromptTemplate(**dict(self.template))
        self.entries = {
            name: [e if isinstance(e, SplitEntry) else SplitEntry(**dict(e)) for e in (entries or [])]
            for name, entries in self.splits.items()
        }
        self.items = {
            name: [it for e in entries for it in e.load(self.data_dir)] for name, entries in self.entries.items()
        }
        seen: dict[str, str] = {}
        for name, items in self.items.items():
            for it in items:
                if it.id in seen:  # in two splits, or twice in one (two entries reading the same rows)
                    first = seen[it.id]
                    where = f"twice in split {name}" if first == name else f"in both split {first} and {name}"
                    raise ValueError(f"data={self.name}: problem {it.id} is {where}")
                seen[it.id] = name
        self.by_id = {it.id: it for items in self.items.values() for it in items}
        # The content key of each entry's source, hashed once here rather than on every world_key call.
        self.sources = {
            name: [{**asdict(e), "source": self._source_key(e)} for e in entries]
            for name, entries in self.entries.items()
        }
        self.tokenizer = None
        self._math = MathGrader(**self.math_grader)
        # The code grader (and its jail check) only where some split holds code problems.
        has_code = any(SPECS[it.benchmark].kind == "code" for items in self.items.values() for it in items)
        self._code = CodeGrader(**self.code_grader) if has_code else None

    # ------------------------------------------------------------------ prompts
    def bind(self, model: ModelFolder) -> BenchmarkSource:
        """This source with prompts rendered through the chat template of `model`."""
        from transformers import AutoTokenizer

        bound = replace(self)  # re-runs __post_init__ (cheap: files are small) on a copy
        bound.tokenizer = AutoTokenizer.from_pretrained(
            model.path, revision=model.revision, trust_remote_code=self.trust_remote_code
        )
        return bound

    def prompt(self, item: BenchmarkItem) -> str:
        if self.tokenizer is None:
            return self.template.user_message(item.question, item.kind, item.starter_code)
        return self.template.render(self.tokenizer, item.question, item.kind, item.starter_code)

    def conversation(self, problem: Problem) -> Conversation:
        """The problem's messages before any chat template, and what the rendered prompt adds after them."""
        item = self.by_id.get(problem.id)
        if item is None:
            raise KeyError(f"data={self.name} has no problem {problem.id!r}")
        messages = self.template.messages(item.question, item.kind, item.starter_code)
        prefix = "" if self.tokenizer is None else self.template.response_prefix(self.tokenizer, messages)
        return Conversation(item.question, messages, prefix)

    def split(self, name: str) -> list[Problem]:
        if name not in self.items:
            raise KeyError(f"data={self.name} has no split {name!r}; splits: {sorted(self.items)}")
        return [Problem(it.id, it.benchmark, self.prompt(it), it.answer, it.level) for it in self.items[name]]

    # ------------------------------------------------------------------ grading
    @property
    def requires_closed_thinking(self) -> bool:
        """Whether a response must close its thinking block to be graded (data.template.thinking)."""
        return self.template.reasoning

    def kind(self, problem: Problem) -> str:
        return SPECS[problem.benchmark].kind

    def grade(self, problem: Problem, response: str) -> bool:
        return self.grade_many([problem], [response])[0]

    def grade_many(self, problems: list[Problem], responses: list[str]) -> list[bool]:
        """Math rows through the math-verify pool, code rows through the sandbox, in the callers' order."""
        out: list[bool | None] = [None] * len(problems)
        for i, response in enumerate(responses):
            if self.requires_closed_thinking and THINK_CLOSE not in response:
                out[i] = False  # unfinished reasoning: no answer was given
        for kind, grader in (("math", self._math), ("code", self._code)):
            idx = [i for i, p in enumerate(problems) if self.kind(p) == kind and out[i] is None]
            if not idx:
                continue
            grades = grader.grade_many([problems[i].answer for i in idx], [responses[i] for i in idx])
            for i, ok in zip(idx, grades, strict=True):
                out[i] = ok
        return out  # type: ignore[return-value]

    def _source_key(self, entry: SplitEntry) -> str:
        where, path = entry.location(self.data_dir)
        return file_digest(path) if path else where

    def fingerprint(self) -> dict:
        chat = getattr(self.tokenizer, "chat_template", None)
        return {
            "kind": "benchmarks",
            "splits": self.sources,
            "template": asdict(self.template),
            "step_delimiter": self.step_delimiter,
            "chat_template": hashlib.sha256(chat.encode()).hexdigest()[:16] if chat else None,
            # a grade is part of every artifact that holds graded samples: what decides it enters their keys
            "graders": {"math": self._math.result_settings(), "code": self._code and self._code.result_settings()},
        }
