"""The synthetic reasoning world: mod-10 add/subtract chains and an overthinking teacher.

A problem is a chain such as ``3 +4 -2 +9 = ?``; its answer is the chain's value mod 10 and its
difficulty level is the number of operands. A full-reasoning trace applies one operation per step and
carries the rest of the chain along (``3 +4 = 7 -2 +9 ;`` then ``7 -2 = 5 +9 ;`` then ``5 +9 = 4 ;``):
the arithmetic reads only the two words before ``=`` and the rest is copied from the step before, which
a tiny transformer can learn. The teacher overthinks the way long CoT does:

* necessary steps: the rewrites; dropping one breaks the chain;
* redundant steps: ``check 3 +4 = 7 ;`` (re-computes the last operation) and ``again 7 -2 +9 ;``
  (restates the current chain), both dropping out without changing the answer;
* filler inside steps: phrases such as ``ok so`` before a step's content;
* arithmetic slips: now and then a necessary step writes a wrong digit and the trace carries it on,
  which gives long incorrect traces (the negatives of preference pairs);
* a System-1 shortcut: ``<think> </think> d`` where ``d`` is a glance at the first operands, exact on
  the easiest level and near chance (one in ten) once more operands follow.

Words are separated by single spaces; ``;`` ends every step. Everything here is plain Python and
seeded, so a world is a pure function of its config.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field

from tsq.data.base import Conversation, Problem
from tsq.text import THINK_CLOSE, THINK_OPEN, answer_part

STEP_DELIMITER = ";"
CHECK = "check"
AGAIN = "again"
FILLER_PHRASES: tuple[str, ...] = (
    "so",
    "ok so",
    "now",
    "well",
    "hmm let me see",
    "right",
    "next",
    "ok then",
    "let me think",
)
FILLER_WORDS: frozenset[str] = frozenset(w for p in FILLER_PHRASES for w in p.split())
DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))
SIGNED: tuple[str, ...] = tuple(f"{s}{d}" for s in "+-" for d in range(10))

# Token kinds a teacher trace is annotated with.
NECESSARY, REDUNDANT, FILLER, STRUCTURE = "necessary", "redundant", "filler", "structure"


def vocabulary() -> list[str]:
    """Every word the world can write, in a fixed order (the tiny tokenizer's vocabulary)."""
    words = [*DIGITS, *SIGNED, "=", "?", THINK_OPEN, THINK_CLOSE, STEP_DELIMITER, CHECK, AGAIN]
    words += sorted(FILLER_WORDS)
    return words


def thinking_steps(response: str) -> tuple[list[str], int, list[list[str]]]:
    """(the response's words, how many lie outside the thinking block, its non-empty steps as word lists, each
    with its closing `;` when it has one)."""
    words = response.split()
    start = words.index(THINK_OPEN) + 1 if THINK_OPEN in words else 0
    end = words.index(THINK_CLOSE) if THINK_CLOSE in words[start:] else len(words)
    steps: list[list[str]] = [[]]
    for w in words[start:end]:
        steps[-1].append(w)
        if w == STEP_DELIMITER:
            steps.append([])
    return words, start + (len(words) - end), [step for step in steps if step]


def apply_op(total: str, op: str) -> str:
    """``apply_op("3", "+4") == "7"``; arithmetic is mod 10."""
    value = int(op[1:]) if op[0] == "+" else -int(op[1:])
    return str((int(total) + value) % 10)


def check_probabilities(style) -> None:
    """Every field of a teacher's style (a dataclass of probabilities) lies in [0, 1], or a ValueError names it."""
    for name, value in asdict(style).items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"data.teacher.{name} must lie in [0, 1], got {value}")


@dataclass(frozen=True)
class TeacherStyle:
    """How the teacher writes. The default overthinks; `concise()` writes only necessary steps."""

    p_shortcut: float = 0.1
    p_check: float = 0.6
    p_again: float = 0.35
    p_filler: float = 0.8
    # An arithmetic slip in a necessary step (a wrong digit that the rest of the trace carries on):
    # the source of long incorrect traces, as in real long CoT.
    p_slip: float = 0.03

    def __post_init__(self) -> None:
        check_probabilities(self)

    @classmethod
    def concise(cls) -> TeacherStyle:
        return cls(p_shortcut=0.0, p_check=0.0, p_again=0.0, p_filler=0.0, p_slip=0.0)

    @classmethod
    def system1(cls) -> TeacherStyle:
        """A fast thinker: a glance half the time, otherwise only the necessary steps (TL;DR's short model)."""
        return cls(p_shortcut=0.5, p_check=0.0, p_again=0.0, p_filler=0.0, p_slip=0.0)


@dataclass(frozen=True)
class TraceAnatomy:
    """Token counts of one response by kind. `compressible` is what a perfect compressor drops."""

    total: int
    necessary: int
    redundant: int
    filler: int
    structure: int

    @property
    def compressible(self) -> int:
        return self.redundant + self.filler


@dataclass
class SyntheticWorld:
    """Seeded problem generator with fixed splits, teacher, grader and trace analyser.

    `operands` lists the number of operands of each difficulty level (level 1 first); `split_sizes`
    gives problems per level for each split. Splits never share a problem, and test is drawn first
    so that growing train or dev never changes it.
    """

    seed: int = 0
    operands: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6])
    split_sizes: dict[str, int] = field(default_factory=lambda: {"test": 50, "dev": 20, "train": 100})
    shortcut_span: int = 2
    teacher: TeacherStyle = field(default_factory=TeacherStyle)
    name: str = "synthetic"
    step_delimiter: str = STEP_DELIMITER

    def __post_init__(self) -> None:
        if isinstance(self.teacher, dict) or hasattr(self.teacher, "items"):
            self.teacher = TeacherStyle(**dict(self.teacher))
        self.operands = [int(n) for n in self.operands]
        self.split_sizes = {str(k): int(v) for k, v in dict(self.split_sizes).items()}
        if not self.operands:
            raise ValueError("data.operands must list at least one level")
        if any(n < 2 for n in self.operands):
            raise ValueError(f"data.operands: every level needs at least 2 operands, got {self.operands}")
        for split, size in self.split_sizes.items():
            if size <= 0:
                raise ValueError(f"data.split_sizes.{split} must be > 0, got {size}")
        if self.shortcut_span < 1:
            raise ValueError(f"data.shortcut_span must be >= 1, got {self.shortcut_span}")
        self._splits = self._build_splits()

    # ----------------------------------------------------------------- problems
    @property
    def levels(self) -> list[int]:
        return list(range(1, len(self.operands) + 1))

    @staticmethod
    def vocabulary() -> list[str]:
        """Every word this world writes (the tiny model's tokenizer)."""
        return vocabulary()

    def style(self, name: str):
        """The teacher's named styles: default (this world's), concise, system1 (from the teacher's own style class,
        so a world with another teacher gets its presets)."""
        kind = type(self.teacher)
        return {"default": self.teacher, "concise": kind.concise(), "system1": kind.system1()}[name]

    def fingerprint(self) -> dict:
        return {
            "world": self.name,
            "seed": self.seed,
            "operands": self.operands,
            "split_sizes": self.split_sizes,
            "shortcut_span": self.shortcut_span,
            "teacher": asdict(self.teacher),
        }

    def conversation(self, problem: Problem) -> Conversation:
        """The prompt is the question itself (the tiny model reads no chat template)."""
        return Conversation(problem.prompt, [{"role": "user", "content": problem.prompt}])

    def _random_chain(self, rng: random.Random, level: int) -> list[str]:
        n = self.operands[level - 1]
        return [rng.choice(DIGITS)] + [rng.choice(SIGNED) for _ in range(n - 1)]

    def make_problem(self, chain: list[str], level: int) -> Problem:
        prompt = " ".join(chain) + " = ?"
        answer = chain[0]
        for op in chain[1:]:
            answer = apply_op(answer, op)
        uid = hashlib.sha1(prompt.encode()).hexdigest()[:10]
        return Problem(id=f"syn-{uid}", benchmark=self.name, prompt=prompt, answer=answer, level=level)

    def _build_splits(self) -> dict[str, list[Problem]]:
        rng = random.Random(self.seed)
        seen: set[str] = set()
        order = ["test", "dev", "train"] + sorted(set(self.split_sizes) - {"test", "dev", "train"})
        splits: dict[str, list[Problem]] = {}
        for split in order:
            if split not in self.split_sizes:
                continue
            problems = []
            for level in self.levels:
                want, tries = self.split_sizes[split], 0
                got = 0
                while got < want:
                    tries += 1
                    if tries > 200 * want + 1000:
                        raise ValueError(
                            f"data.split_sizes.{split}={want}: level {level} "
                            f"({self.operands[level - 1]} operands) has too few distinct problems left"
                        )
                    chain = self._random_chain(rng, level)
                    problem = self.make_problem(chain, level)
                    if problem.prompt in seen:
                        continue
                    seen.add(problem.prompt)
                    problems.append(problem)
                    got += 1
            splits[split] = problems
        return splits

    def split(self, name: str) -> list[Problem]:
        if name not in self._splits:
            raise ValueError(f"unknown split {name!r}; the world has {sorted(self._splits)}")
        return list(self._splits[name])

    def held_out_prompts(self) -> set[str]:
        """Prompts of dev and test: the base model's pretraining corpus never contains these."""
        return {p.prompt for s in ("dev", "test") if s in self._splits for p in self._splits[s]}

    def sample_problem(self, rng: random.Random, exclude: set[str]) -> Problem:
        """A fresh random problem (uniform level) whose prompt is not in `exclude`."""
        while True:
            level = rng.choice(self.levels)
            problem = self.make_problem(self._random_chain(rng, level), level)
            if problem.prompt not in exclude:
                return problem

    # ------------------------------------------------------------------ teacher
    def chain_of(self, problem: Problem) -> list[str]:
        words = problem.prompt.split()
        if len(words) < 4 or words[-2:] != ["=", "?"]:
            raise ValueError(f"problem {problem.id}: not a synthetic chain: {problem.prompt!r}")
        return words[:-2]

    def shortcut_answer(self, problem: Problem) -> str:
        """The System-1 glance: the value of the first `shortcut_span` operands only."""
        chain = self.chain_of(problem)[: self.shortcut_span]
        total = chain[0]
        for op in chain[1:]:
            total = apply_op(total, op)
        return total

    def teacher_trace(
        self, problem: Problem, rng: random.Random, style: TeacherStyle | None = None
    ) -> list[tuple[str, str]]:
        """One teacher response as (word, kind) pairs; kinds are NECESSARY/REDUNDANT/FILLER/STRUCTURE."""
        style = style or self.teacher
        out: list[tuple[str, str]] = [(THINK_OPEN, STRUCTURE)]
        if rng.random() < style.p_shortcut:
            return out + [(THINK_CLOSE, STRUCTURE), (self.shortcut_answer(problem), STRUCTURE)]

        def filler() -> list[tuple[str, str]]:
            if rng.random() >= style.p_filler:
                return []
            return [(w, FILLER) for w in rng.choice(FILLER_PHRASES).split()]

        state = self.chain_of(problem)
        while len(state) > 1:
            value = apply_op(state[0], state[1])
            if rng.random() < style.p_slip:
                value = rng.choice([d for d in DIGITS if d != value])
            new_state = [value, *state[2:]]
            step = [state[0], state[1], "=", *new_state, STEP_DELIMITER]
            out += filler() + [(w, NECESSARY) for w in step]
            if rng.random() < style.p_check:
                words = [CHECK, state[0], state[1], "=", new_state[0], STEP_DELIMITER]
                out += filler() + [(w, REDUNDANT) for w in words]
            if rng.random() < style.p_again:
                out += filler() + [(w, REDUNDANT) for w in [AGAIN, *new_state, STEP_DELIMITER]]
            state = new_state
        return out + [(THINK_CLOSE, STRUCTURE), (state[0], STRUCTURE)]

    def teacher_response(self, problem: Problem, rng: random.Random, style: TeacherStyle | None = None) -> str:
        return " ".join(w for w, _ in self.teacher_trace(problem, rng, style))

    # ------------------------------------------------------------ grader, analysis
    @staticmethod
    def extract_answer(response: str) -> str | None:
        """The single word after the last ``</think>``; None when there is none."""
        if THINK_CLOSE not in response:
            return None
        words = answer_part(response).split()
        return words[0] if len(words) == 1 else None

    def grade(self, problem: Problem, response: str) -> bool:
        return self.extract_answer(response) == problem.answer

    def grade_many(self, problems: list[Problem], responses: list[str]) -> list[bool]:
        return [self.grade(p, r) for p, r in zip(problems, responses, strict=True)]

    def anatomy(self, problem: Problem, response: str) -> TraceAnatomy:
        """Classify every word of a (model or teacher) response.

        A step is necessary when, with filler removed, it reads ``a op = chain`` and its chain is one
        operand shorter than the last necessary chain; ``check``/``again`` steps and anything else
        inside ``<think>`` are redundant; filler words are filler wherever they stand. Right or wrong
        arithmetic does not matter: this measures what a perfect compressor could drop.
        """
        words, structure, steps = thinking_steps(response)
        counts = {NECESSARY: 0, REDUNDANT: 0, FILLER: 0, STRUCTURE: structure}
        chain_len = len(self.chain_of(problem))
        for step in steps:
            core = [x for x in step if x not in FILLER_WORDS and x != STEP_DELIMITER]
            counts[FILLER] += sum(x in FILLER_WORDS for x in step)
            is_step = (
                len(core) == chain_len + 2
                and len(core) >= 4  # once the chain is used up, a 3-word "a op =" is no step
                and core[0] in DIGITS
                and core[1] in SIGNED
                and core[2] == "="
                and core[3] in DIGITS
                and all(x in SIGNED for x in core[4:])
            )
            kind = NECESSARY if is_step else REDUNDANT
            if kind == NECESSARY:
                chain_len -= 1
            counts[kind] += len(core) + (step[-1] == STEP_DELIMITER)
        return TraceAnatomy(total=len(words), **counts)

    def to_json(self) -> str:
        return json.dumps(self.fingerprint(), sort_keys=True)
