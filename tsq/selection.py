"""`selector=`: which correct responses of a problem become positives, and preference pairs.

Pure functions of one problem's sampled group (token lengths and correctness); TokenSqueeze
(arXiv 2511.13223), Sec. 3.1.
TokenSqueeze's selectors and the Kimi-k1.5 and SimPO baselines choose the k shortest correct responses as positives
(ties broken by sample order) and differ in k and in their negatives (Kimi-k1.5 adds long correct responses);
DAST pairs responses of equal correctness by its budget-aware score, so its chosen response may be incorrect.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import pandas as pd

from tsq.cache import ConfiguredPart


def pass_rate(correct: Sequence[bool]) -> float:
    return sum(map(bool, correct)) / len(correct) if len(correct) else 0.0


def qdyn_k(c: int, n: int, alpha: float) -> int:
    """k = ceil(q * c) with q = alpha * (1 - c/n); 0 when c is 0 or n (no pairs are possible)."""
    if not 0 <= c <= n or n <= 0:
        raise ValueError(f"need 0 <= c <= n and n > 0, got c={c}, n={n}")
    if c in (0, n):
        return 0
    # round() guards the ceiling against float noise such as 0.2 * 0.5 * 32 = 3.2000000000000006
    return math.ceil(round(alpha * (1 - c / n) * c, 9))


def shortest_correct(lengths: Sequence[int], correct: Sequence[bool], k: int) -> list[int]:
    """Indices of the k shortest correct responses, shortest first (stable in sample order)."""
    order = sorted((i for i, ok in enumerate(correct) if ok), key=lambda i: (lengths[i], i))
    return order[:k]


@dataclass(frozen=True)
class Selection:
    """Positives, and for each positive any extra (correct but long) negatives. With
    `incorrect_negatives=False` a positive is paired with its extra negatives only."""

    positives: list[int]
    extra_negatives: dict[int, list[int]] = field(default_factory=dict)
    incorrect_negatives: bool = True


class Selector(ConfiguredPart):
    """Base: subclasses give k for a group; `select` returns the k shortest correct as positives."""

    name: ClassVar[str] = "selector"  # a label; the registered part name and the fields are what enter cache keys

    def k(self, c: int, n: int) -> int:
        raise NotImplementedError

    def select(self, lengths: Sequence[int], correct: Sequence[bool]) -> Selection:
        if len(lengths) != len(correct):
            raise ValueError(f"{len(lengths)} lengths but {len(correct)} correctness flags")
        c, n = sum(map(bool, correct)), len(correct)
        return Selection(shortest_correct(lengths, correct, self.k(c, n) if n else 0))


@dataclass
class Shortest(Selector, part="selector/shortest"):
    """Only the shortest correct response."""

    name: ClassVar[str] = "shortest"

    def k(self, c: int, n: int) -> int:
        return 1 if c > 0 else 0


@dataclass
class QFix(Selector, part="selector/qfix"):
    """k = ceil(q * c) for a fixed quantile q. The paper does not give q; the default 0.1 is Q-DYN's
    q = 0.2 (1 - p) averaged over pass rates p uniform on [0, 1]."""

    q: float = 0.1
    name: ClassVar[str] = "qfix"

    def __post_init__(self) -> None:
        if not 0 < self.q <= 1:
            raise ValueError(f"selector.q must lie in (0, 1], got {self.q}")

    def k(self, c: int, n: int) -> int:
        return math.ceil(round(self.q * c, 9)) if c > 0 else 0


@dataclass
class QDyn(Selector, part="selector/qdyn"):
    """TokenSqueeze's adaptive depth: q = alpha (1 - p), k = ceil(q c), alpha = 0.2."""

    alpha: float = 0.2
    name: ClassVar[str] = "qdyn"

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError(f"selector.alpha must be >= 0, got {self.alpha}")

    def k(self, c: int, n: int) -> int:
        return qdyn_k(c, n, self.alpha)


def long_correct_negatives(
    lengths: Sequence[int], correct: Sequence[bool], positives: Sequence[int], ratio: float
) -> dict[int, list[int]]:
    """Kimi-k1.5's rule: for each positive, every correct response at least `ratio` times as long."""
    return {
        p: [i for i, ok in enumerate(correct) if ok and i != p and lengths[i] >= ratio * lengths[p]] for p in positives
    }


def against_longest(lengths: Sequence[int], positives: list[int], candidates: Sequence[int]) -> Selection:
    """Each positive against the longest of `candidates` (lowest index on ties) when it is longer, and no
    incorrect negatives: the SimPO baselines' one pair per problem."""
    longest = sorted(candidates, key=lambda i: (-lengths[i], i))[:1]
    negatives = {p: [i for i in longest if lengths[i] > lengths[p]] for p in positives}
    return Selection(positives, negatives, incorrect_negatives=False)


@dataclass
class LongCorrectNegatives:
    """Mixin: the parent selector's positives, plus Kimi-k1.5's extra negatives (`long_correct_negatives`)."""

    ratio: float = 1.5

    def select(self, lengths: Sequence[int], correct: Sequence[bool]) -> Selection:
        base = super().select(lengths, correct)
        return Selection(base.positives, long_correct_negatives(lengths, correct, base.positives, self.ratio))


@dataclass
class QDynExtraNeg(LongCorrectNegatives, QDyn, part="selector/qdyn_extra_neg"):
    """Q-DYN plus, as in Kimi-k1.5's DPO, every correct response at least `ratio` times as long as the
    positive as an extra negative (TokenSqueeze Table 2, "w/ extra pos")."""

    name: ClassVar[str] = "qdyn_extra_neg"


@dataclass
class KimiDPO(LongCorrectNegatives, Shortest, part="selector/kimi"):
    """Kimi-k1.5's DPO data: the shortest correct response is chosen; longer incorrect responses and
    correct ones at least `ratio` times as long are rejected (the TokenSqueeze Table 1 baseline)."""

    name: ClassVar[str] = "kimi"


@dataclass
class SkyT1Flash(Shortest, part="selector/sky_t1_flash"):
    """Sky-T1-Flash's SimPO data (NovaSky's Sky-T1-Flash release): the shortest correct response against the longest
    correct one (no incorrect negatives); a problem with one correct length gives no pair."""

    name: ClassVar[str] = "sky_t1_flash"

    def select(self, lengths: Sequence[int], correct: Sequence[bool]) -> Selection:
        positives = super().select(lengths, correct).positives
        return against_longest(lengths, positives, [i for i, ok in enumerate(correct) if ok])


@dataclass
class Overthink(Shortest, part="selector/overthink"):
    """Overthink ("Do NOT think that much for 2+3=?", SimPO-shortest as run by TL;DR): the shortest
    correct response against the longest response of the group, correct or not."""

    name: ClassVar[str] = "overthink"

    def select(self, lengths: Sequence[int], correct: Sequence[bool]) -> Selection:
        return against_longest(lengths, super().select(lengths, correct).positives, range(len(lengths)))


def token_length_budget(lengths: Sequence[int], correct: Sequence[bool], max_length: int) -> float:
    """DAST's token length budget (arXiv 2503.04472): p * L_r + (1 - p) * L_max, p the group's pass rate, L_r the mean
    length of its correct responses, L_max the generation cap; harder problems get larger budgets."""
    p = pass_rate(correct)
    right = [n for n, ok in zip(lengths, correct, strict=True) if ok]
    mean_right = sum(right) / len(right) if right else 0.0
    return p * mean_right + (1 - p) * max_length


def dast_score(length: int, correct: bool, budget: float) -> float:
    """DAST's budget-aware score, lambda = (length - budget) / budget: a correct response scores
    max(-0.5 lambda + 0.5, 0.1) (shorter is better), an incorrect one min(0.9 lambda - 0.1, -0.1) (under-thinking,
    a short wrong answer, is worst)."""
    lam = (length - budget) / budget
    return max(-0.5 * lam + 0.5, 0.1) if correct else min(0.9 * lam - 0.1, -0.1)


@dataclass
class Dast(Selector, part="selector/dast"):
    """DAST's budget preference pairs (arXiv 2503.04472): within one problem, a response is preferred to another of
    the same correctness whose DAST score is lower by more than `margin` ("dual-correct" pairs prefer the shorter
    correct response, "dual-incorrect" pairs the longer incorrect one); no correct-versus-incorrect pairs. Trained
    with SimPO (method=dast). `max_length` is L_max, the sampling cap; `margin` is tsq's choice (the paper's
    threshold is not in tsq's references)."""

    max_length: int = 256
    margin: float = 0.3
    name: ClassVar[str] = "dast"

    def __post_init__(self) -> None:
        if self.max_length <= 0 or self.margin < 0:
            raise ValueError(
                f"selector.max_length must be > 0 and selector.margin >= 0, got {self.max_length}, {self.margin}"
            )

    def select(self, lengths: Sequence[int], correct: Sequence[bool]) -> Selection:
        if len(lengths) != len(correct):
            raise ValueError(f"{len(lengths)} lengths but {len(correct)} correctness flags")
        budget = token_length_budget(lengths, correct, self.max_length)
        scores = [dast_score(n, bool(ok), budget) for n, ok in zip(lengths, correct, strict=True)]
        negatives = {
            i: [
                j
                for j in range(len(lengths))
                if bool(correct[j]) == bool(correct[i]) and scores[i] - scores[j] > self.margin
            ]
            for i in range(len(lengths))
        }
        negatives = {i: js for i, js in negatives.items() if js}
        return Selection(sorted(negatives), negatives, incorrect_negatives=False)


def rejected_for(lengths: Sequence[int], correct: Sequence[bool], selection: Selection, positive: int) -> list[int]:
    """The negatives a positive is paired with: every incorrect response longer than it (unless the
    selection says otherwise), then its extra negatives (in sample order within each kind)."""
    rejected = [
        i for i, ok in enumerate(correct) if selection.incorrect_negatives and not ok and lengths[i] > lengths[positive]
    ]
    return rejected + [i for i in selection.extra_negatives.get(positive, []) if i not in rejected]


@dataclass(frozen=True)
class Pair:
    chosen: int
    rejected: int


def build_pairs(
    lengths: Sequence[int],
    correct: Sequence[bool],
    selection: Selection,
    max_pairs: int = 64,
    per: str = "problem",
    seed: int = 0,
) -> list[Pair]:
    """Each positive against every incorrect response longer than it (and its extra negatives).

    At most `max_pairs` pairs per problem (`per="problem"`, the paper) or per positive
    (`per="positive"`), drawn by a seeded shuffle when there are more.
    """
    if max_pairs <= 0:
        raise ValueError(f"max_pairs must be > 0, got {max_pairs}")
    if per not in ("problem", "positive"):
        raise ValueError(f"pairs.per must be 'problem' or 'positive', got {per!r}")
    rng = random.Random(seed)
    groups = []
    for p in selection.positives:
        groups.append([Pair(p, r) for r in rejected_for(lengths, correct, selection, p)])
    if per == "positive":
        return [pair for g in groups for pair in (rng.sample(g, max_pairs) if len(g) > max_pairs else g)]
    pairs = [pair for g in groups for pair in g]
    return sorted(rng.sample(pairs, max_pairs), key=pairs.index) if len(pairs) > max_pairs else pairs


def select_all(frame: pd.DataFrame, selector: Selector) -> dict[str, tuple[pd.DataFrame, Selection]]:
    """Per problem of a samples frame: its samples (in sample order) and the selector's Selection."""
    out = {}
    for pid, group in frame.groupby("problem_id", sort=True):
        group = group.sort_values("sample").reset_index(drop=True)
        out[pid] = (group, selector.select(group["n_tokens"].tolist(), group["correct"].tolist()))
    return out


def positives_with_negatives(selected: dict[str, tuple[pd.DataFrame, Selection]]) -> list[tuple[str, int]]:
    """(problem_id, row) of every positive that some negative could pair with: refining others is waste."""
    keep = []
    for pid, (group, selection) in selected.items():
        lengths, correct = group["n_tokens"].tolist(), group["correct"].tolist()
        keep += [(pid, p) for p in selection.positives if rejected_for(lengths, correct, selection, p)]
    return keep
