"""World v2, the default synthetic world: reflection that sometimes saves the answer, cues that steer it,
difficulty that moves the pass rate.

Problems, splits, the System-1 shortcut and the exact grader are world v1's (`tsq.data.synthetic`): a chain
``3 +4 -2 +9 = ?`` mod 10 whose level is its number of operands, solved one operation per step. What changes
is the teacher, so that the papers' trade-off exists instead of being decided in advance:

* slips grow with difficulty: a necessary step writes its value off by one (a carry error) with probability
  ``slip * (operands left in the chain - 1) ** 2``, so short chains are nearly always right and long ones often
  wrong, and the base model's pass rate falls with the level;
* reflection is sometimes useful: after a step the teacher may ``check`` it (``check 3 +4 = 7 ;``). The check
  recomputes the operation; when the step had slipped, it notices with probability ``catch`` and the trace
  writes the correction (``fix 7 -2 +9 ;``) and goes on from the right value. A check of a step that did not
  slip, and ``again`` restatements, change nothing;
* cues and noise: before a check the teacher often writes a cue (``wait``, ``hmm wait``), and a cue makes a
  check likely (``p_check_after_cue``) where it is otherwise rare (``p_check_without_cue``): a cue changes what
  comes next, so a compressor that asks the model (KL) sees it, while noise words (``so``, ``ok then``) change
  nothing and a compressor that drops every filler word drops the cues too.

Anatomy kinds of a response: necessary steps, redundant-useful (a check that found a slip and its fix),
redundant-useless (checks that found nothing, restatements), cue and noise words, and structure.
Everything is plain Python and seeded, so a world is a pure function of its config.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields, replace

from tsq.data.synthetic import (
    AGAIN,
    CHECK,
    DIGITS,
    SIGNED,
    STEP_DELIMITER,
    STRUCTURE,
    SyntheticWorld,
    apply_op,
    check_probabilities,
    thinking_steps,
)
from tsq.data.synthetic import vocabulary as vocabulary_v1
from tsq.text import THINK_CLOSE, THINK_OPEN

FIX = "fix"
CUE_PHRASES: tuple[str, ...] = ("wait", "hmm wait", "hold on")
NOISE_PHRASES: tuple[str, ...] = ("so", "ok so", "now", "well", "right", "next", "ok then")
CUE_WORDS: frozenset[str] = frozenset(w for p in CUE_PHRASES for w in p.split())
NOISE_WORDS: frozenset[str] = frozenset(w for p in NOISE_PHRASES for w in p.split())

NECESSARY, USEFUL, USELESS, CUE, NOISE = "necessary", "redundant-useful", "redundant-useless", "cue", "noise"
KINDS = (NECESSARY, USEFUL, USELESS, CUE, NOISE, STRUCTURE)


def vocabulary() -> list[str]:
    """World v1's words in v1's order, then the new ones (so ids of shared words do not move)."""
    old = vocabulary_v1()
    return old + sorted((CUE_WORDS | NOISE_WORDS | {FIX}) - set(old))


@dataclass(frozen=True)
class ReflectiveStyle:
    """How world v2's teacher writes; `concise()` writes only necessary steps and never slips."""

    p_shortcut: float = 0.1
    slip: float = 0.02  # per step: slip * (operands left - 1) ** 2, an off-by-one value
    p_cue: float = 0.45  # a cue after a necessary step
    p_check_after_cue: float = 0.9
    p_check_without_cue: float = 0.1
    catch: float = 0.8  # a check of a slipped step notices it and writes the fix
    p_again: float = 0.3
    p_noise: float = 0.6  # a noise phrase before a step

    def __post_init__(self) -> None:
        check_probabilities(self)

    @classmethod
    def concise(cls) -> ReflectiveStyle:
        return cls(**dict.fromkeys((f.name for f in fields(cls)), 0.0))

    @classmethod
    def system1(cls) -> ReflectiveStyle:
        """A fast thinker: a glance half the time, otherwise only the necessary steps (TL;DR's short model)."""
        return replace(cls.concise(), p_shortcut=0.5)

    def slip_probability(self, chain_length: int) -> float:
        return min(1.0, self.slip * (chain_length - 1) ** 2)


@dataclass(frozen=True)
class ReflectiveAnatomy:
    """Token counts of one response by kind, and what its reflection did."""

    total: int
    necessary: int
    useful: int
    useless: int
    cue: int
    noise: int
    structure: int
    slips: int  # necessary steps whose value is wrong for the state they read
    checks: int
    slips_checked: int  # slipped steps followed directly by a check
    catches: int  # checks that wrote a fix to the right value
    false_fixes: int  # checks that "fixed" the value to a wrong one (a model's own error; the teacher never does)

    @property
    def redundant(self) -> int:
        return self.useful + self.useless

    @property
    def filler(self) -> int:
        return self.cue + self.noise

    @property
    def compressible(self) -> int:
        """What a compressor that keeps the answer could drop: useless steps and noise (cues steer checks)."""
        return self.useless + self.noise


@dataclass
class ReflectiveWorld(SyntheticWorld):
    """`data=synthetic` (world v2): world v1's problems with a teacher whose reflection can save the answer."""

    teacher: ReflectiveStyle = field(default_factory=ReflectiveStyle)
    name: str = "synthetic_v2"

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, ReflectiveStyle):
            self.teacher = ReflectiveStyle(**dict(self.teacher))
        super().__post_init__()

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "version": 2}

    @staticmethod
    def vocabulary() -> list[str]:
        return vocabulary()

    # ------------------------------------------------------------------ teacher
    def teacher_trace(self, problem, rng: random.Random, style: ReflectiveStyle | None = None) -> list[tuple[str, str]]:
        """One teacher response as (word, kind) pairs; kinds are KINDS."""
        style = style or self.teacher
        out: list[tuple[str, str]] = [(THINK_OPEN, STRUCTURE)]
        if rng.random() < style.p_shortcut:
            return out + [(THINK_CLOSE, STRUCTURE), (self.shortcut_answer(problem), STRUCTURE)]

        def noise() -> list[tuple[str, str]]:
            return [(w, NOISE) for w in rng.choice(NOISE_PHRASES).split()] if rng.random() < style.p_noise else []

        state = self.chain_of(problem)
        while len(state) > 1:
            right = apply_op(state[0], state[1])
            value = right
            if rng.random() < style.slip_probability(len(state)):
                value = str((int(right) + rng.choice((1, -1))) % 10)
            new_state = [value, *state[2:]]
            out += noise() + [(w, NECESSARY) for w in [state[0], state[1], "=", *new_state, STEP_DELIMITER]]
            cue = rng.random() < style.p_cue
            if cue:
                out += [(w, CUE) for w in rng.choice(CUE_PHRASES).split()]
            if rng.random() < (style.p_check_after_cue if cue else style.p_check_without_cue):
                caught = value != right and rng.random() < style.catch
                seen = right if caught else value  # a check that misses the slip repeats it
                kind = USEFUL if caught else USELESS
                out += [(w, kind) for w in [CHECK, state[0], state[1], "=", seen, STEP_DELIMITER]]
                if caught:
                    new_state = [right, *state[2:]]
                    out += [(w, USEFUL) for w in [FIX, *new_state, STEP_DELIMITER]]
            if rng.random() < style.p_again:
                out += noise() + [(w, USELESS) for w in [AGAIN, *new_state, STEP_DELIMITER]]
            state = new_state
        return out + [(THINK_CLOSE, STRUCTURE), (state[0], STRUCTURE)]

    # ------------------------------------------------------------------ analysis
    def anatomy(self, problem, response: str) -> ReflectiveAnatomy:
        """Classify every word of a (model or teacher) response and count slips, checks and catches.

        A step is necessary when, without cue and noise words, it reads ``a op = chain`` with a chain one operand
        shorter than the state before it; it slipped when its value is not ``a op``'s. A ``check a op = v`` step
        followed by ``fix chain`` that sets the state's value to v (and changes it) is a catch when v is right
        (both steps useful) and a false fix when it is not (a model's error: both useless, and the state follows
        it); every other check, ``again`` step or stray text inside the thinking block is useless.
        """
        words, structure, steps = thinking_steps(response)
        counts = dict.fromkeys(KINDS, 0)
        counts[STRUCTURE] = structure
        state = self.chain_of(problem)
        slips = checks = slips_checked = catches = false_fixes = 0
        slipped = False  # the last necessary step slipped and no check has looked at it yet
        i = 0
        while i < len(steps):
            step = steps[i]
            counts[CUE] += sum(x in CUE_WORDS for x in step)
            counts[NOISE] += sum(x in NOISE_WORDS for x in step)
            core = [x for x in step if x not in CUE_WORDS and x not in NOISE_WORDS and x != STEP_DELIMITER]
            size = len(core) + (step[-1] == STEP_DELIMITER)
            if self._is_step(core, state):
                counts[NECESSARY] += size
                slipped = core[3] != apply_op(core[0], core[1])
                slips += slipped
                state = core[3:]
            elif core[:1] == [CHECK]:
                checks += 1
                slips_checked += slipped
                slipped = False
                following = steps[i + 1] if i + 1 < len(steps) else []
                fix = [x for x in following if x != STEP_DELIMITER]
                fixes = (
                    len(core) == 5
                    and fix[:1] == [FIX]
                    and fix[1:2] == core[4:5]
                    and fix[2:] == state[1:]
                    and fix[1] != state[0]
                )
                if fixes:
                    right = core[4] == apply_op(core[1], core[2])
                    catches += right
                    false_fixes += not right
                    counts[USEFUL if right else USELESS] += size + len(fix) + (following[-1] == STEP_DELIMITER)
                    state = fix[1:]
                    i += 1
                else:
                    counts[USELESS] += size
            else:
                counts[USELESS] += size
            i += 1
        return ReflectiveAnatomy(
            total=len(words),
            necessary=counts[NECESSARY],
            useful=counts[USEFUL],
            useless=counts[USELESS],
            cue=counts[CUE],
            noise=counts[NOISE],
            structure=counts[STRUCTURE],
            slips=slips,
            checks=checks,
            slips_checked=slips_checked,
            catches=catches,
            false_fixes=false_fixes,
        )

    @staticmethod
    def _is_step(core: list[str], state: list[str]) -> bool:
        """`a op = chain` one operand shorter than the state (what it read need not be the state's: a step after
        a dropped fix reads the corrected value the text no longer shows)."""
        return (
            len(state) > 1
            and len(core) == len(state) + 2  # a op = value, then the chain's other operands
            and core[0] in DIGITS
            and core[1] in SIGNED
            and core[2] == "="
            and core[3] in DIGITS
            and all(x in SIGNED for x in core[4:])
        )
