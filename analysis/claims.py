"""Every paper claim the tables test, in one place, with the paper's numbers, and the verdict rule.

A claim is one or more comparisons of two rows (`(experiment, row)`, row `base` = the base model). A comparison
says `metric(row) - metric(versus)` is above (`>`) or below (`<`) a threshold; its verdict comes from the paired
bootstrap interval of that difference (analysis/protocol.py): **holds** when the whole interval is on the
claimed side, **does not hold** when the whole interval is on the other side, **inconclusive** when it contains
the threshold. A claim of several comparisons holds when all hold, does not hold when any does not, and is
inconclusive otherwise. "Keeps accuracy" is a non-inferiority comparison: the Acc difference is above
`-noninferiority` (conf/protocol.yaml: 1 point, the selection rule's margin), a threshold fixed before any run.
Each comparison carries the paper's effect (`paper_effect`), which the page sets beside the measured one.

Paper numbers: TokenSqueeze (arXiv 2511.13223), DeepSeek-R1-Distill-Qwen-7B, MATH500 and AIME24 (Acc %, Len-T
tokens); TL;DR (arXiv 2506.02678) Table 2, 7B, averages over five benchmarks (Acc %, Len-A tokens). Metrics are
fractions (`acc`) and tokens (`len_t`, `len_a`, `step_len`); thresholds are in the same units.
"""

from __future__ import annotations

from dataclasses import dataclass

from tsq.evaluation.intervals import Interval

NONINFERIOR = "noninferior"  # a threshold placeholder: -noninferiority from the protocol
# a row placeholder: the experiment's online-RL row with a length reward with the highest dev accuracy at its selected
# setting (ties: the shorter dev Len-T), chosen on dev like every setting (analysis.verdicts.resolve_row)
BEST_RL = "best_rl"
# plain GRPO (correctness reward only) is the RL rows' reference point, not a Long2Short method: never BEST_RL
RL_REFERENCE = "grpo"
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
UNDEFINED = "undefined (a row has no correct response, or not at two seeds; for StepLen: none with a step)"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, UNDEFINED)  # every verdict a computed claim can get


@dataclass(frozen=True)
class Comparison:
    metric: str  # acc, len_t, len_a or step_len
    row: tuple[str, str]  # (experiment, row choice); row "base" is the base model
    versus: tuple[str, str]
    relation: str  # ">" (the difference is above the threshold) or "<"
    threshold: float | str = 0.0  # or NONINFERIOR
    # the paper's effect on 7B MATH500 (TL;DR: its five-benchmark averages): Acc in points, lengths in % of `versus`
    paper_effect: float | None = None

    def __post_init__(self) -> None:
        if self.relation not in (">", "<"):
            raise ValueError(f"relation must be > or <, got {self.relation!r}")


@dataclass(frozen=True)
class Claim:
    id: str
    source: str  # paper and table
    statement: str
    paper: str  # the paper's numbers behind the claim
    parts: tuple[Comparison, ...]


def verdict(interval: Interval, relation: str, threshold: float) -> str:
    """holds / does not hold / inconclusive for `difference <relation> threshold` given its interval."""
    above, below = interval.low > threshold, interval.high < threshold
    if relation == ">":
        return HOLDS if above else FAILS if below else INCONCLUSIVE
    return HOLDS if below else FAILS if above else INCONCLUSIVE


def combine(verdicts: list[str]) -> str:
    """A claim's verdict from its comparisons' verdicts."""
    if not verdicts:
        raise ValueError("a claim needs at least one comparison")
    if UNDEFINED in verdicts:  # a comparison that cannot be made decides nothing, a failure included
        return UNDEFINED
    if FAILS in verdicts:
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE


T1, T2, T3, T4, F4, TLDR = "ts_table1", "ts_table2", "ts_table3", "ts_table4", "ts_fig4", "tldr_table2"
SMOL = "ts_smollm2"  # the headline on SmolLM2 fine-tuned on the world (conf/experiment/ts_smollm2.yaml)
ALPHAS = ("0.05", "0.1", "0.4", "0.6", "1.0")

CLAIMS: tuple[Claim, ...] = (
    Claim(
        "T1-keeps-accuracy",
        "TokenSqueeze Table 1 (the headline)",
        "TokenSqueeze keeps the base model's accuracy (within 1 point)",
        "MATH500 92.4 vs 92.8; AIME24 57.5 vs 55.5",
        (Comparison("acc", (T1, "tokensqueeze"), (T1, "base"), ">", NONINFERIOR, paper_effect=-0.4),),
    ),
    Claim(
        "T1-shortens",
        "TokenSqueeze Table 1 (the headline)",
        "TokenSqueeze shortens the correct responses (Len-T)",
        "Len-T MATH500 1773 vs 3638 (-51.3%); AIME24 5157 vs 7543 (-31.6%)",
        (Comparison("len_t", (T1, "tokensqueeze"), (T1, "base"), "<", paper_effect=-51.3),),
    ),
    Claim(
        "SM-keeps-accuracy",
        "TokenSqueeze Table 1 (the headline), on a pretrained model",
        "On SmolLM2 fine-tuned on the world, TokenSqueeze keeps the base model's accuracy (within 1 point)",
        "MATH500 92.4 vs 92.8; AIME24 57.5 vs 55.5 (R1-Distill-Qwen-7B)",
        (Comparison("acc", (SMOL, "tokensqueeze"), (SMOL, "base"), ">", NONINFERIOR, paper_effect=-0.4),),
    ),
    Claim(
        "SM-shortens",
        "TokenSqueeze Table 1 (the headline), on a pretrained model",
        "On SmolLM2 fine-tuned on the world, TokenSqueeze shortens the correct responses (Len-T)",
        "Len-T MATH500 1773 vs 3638 (-51.3%); AIME24 5157 vs 7543 (-31.6%) (R1-Distill-Qwen-7B)",
        (Comparison("len_t", (SMOL, "tokensqueeze"), (SMOL, "base"), "<", paper_effect=-51.3),),
    ),
    Claim(
        "T1-vs-kimi",
        "TokenSqueeze Table 1",
        "TokenSqueeze is more accurate than Kimi-k1.5-style DPO",
        "MATH500 92.4 vs 88.2; AIME24 57.5 vs 51.2",
        (Comparison("acc", (T1, "tokensqueeze"), (T1, "kimi_dpo"), ">", paper_effect=4.2),),
    ),
    Claim(
        "T1-ts-vs-best-rl",
        "tsq: offline preference learning against online RL at equal steps",
        "TokenSqueeze is at least as accurate as the best RL row with a length reward (within 1 point) with shorter "
        "correct responses",
        "no paper compares them under one protocol; R1-Distill-Qwen-7B MATH500 as each paper reports it: "
        "TokenSqueeze 92.4 at 2,045 tokens, DLER 94.2 at 1,634, DOT-8K 94.3 at 1,293",
        (
            Comparison("acc", (T1, "tokensqueeze"), (T1, BEST_RL), ">", NONINFERIOR),
            Comparison("len_t", (T1, "tokensqueeze"), (T1, BEST_RL), "<"),
        ),
    ),
    Claim(
        "T1-best-rl-vs-ts",
        "tsq: offline preference learning against online RL at equal steps",
        "The best RL row with a length reward is at least as accurate as TokenSqueeze (within 1 point) with shorter "
        "correct responses",
        "as the claim above (the papers' numbers favour RL)",
        (
            Comparison("acc", (T1, BEST_RL), (T1, "tokensqueeze"), ">", NONINFERIOR),
            Comparison("len_t", (T1, BEST_RL), (T1, "tokensqueeze"), "<"),
        ),
    ),
    Claim(
        "T2-qdyn-vs-shortest",
        "TokenSqueeze Table 2",
        "Q-DYN selection is more accurate than taking only the shortest correct response",
        "MATH500 92.8 vs 90.8; AIME24 57.3 vs 53.3",
        (Comparison("acc", (T2, "qdyn"), (T2, "shortest"), ">", paper_effect=2.0),),
    ),
    Claim(
        "T2-qdyn-vs-qfix",
        "TokenSqueeze Table 2",
        "Q-DYN (difficulty-adaptive quantile) is more accurate than a fixed quantile (Q-FIX)",
        "MATH500 92.8 vs 92.2; AIME24 57.3 vs 55.0",
        (Comparison("acc", (T2, "qdyn"), (T2, "qfix"), ">", paper_effect=0.6),),
    ),
    Claim(
        "T2-extra-negatives",
        "TokenSqueeze Table 2",
        "Adding long correct responses (>= 1.5x the positive) as extra negatives costs accuracy",
        "MATH500 90.8 vs 92.8; AIME24 52.3 vs 57.3",
        (Comparison("acc", (T2, "qdyn_extra_neg"), (T2, "qdyn"), "<", paper_effect=-2.0),),
    ),
    Claim(
        "T3-kl-shorter",
        "TokenSqueeze Table 3",
        "KL refinement shortens responses beyond no refinement, keeping accuracy",
        "Len-T MATH500 1773 vs 2180, AIME24 5157 vs 6190; Acc 92.4 vs 92.8, 57.5 vs 57.3",
        (
            Comparison("len_t", (T3, "kl"), (T3, "none"), "<", paper_effect=-18.7),
            Comparison("acc", (T3, "kl"), (T3, "none"), ">", NONINFERIOR, paper_effect=-0.4),
        ),
    ),
    Claim(
        "T3-kl-steplen",
        "TokenSqueeze Table 3",
        "KL refinement shortens the steps themselves (tokens per step)",
        "StepLen MATH500 30.6 vs 35.1; AIME24 26.3 vs 29.1",
        (Comparison("step_len", (T3, "kl"), (T3, "none"), "<", paper_effect=-12.8),),
    ),
    Claim(
        "T3-rewrite-loses",
        "TokenSqueeze Table 3",
        "Unconstrained rewriting of steps loses accuracy against KL-constrained refinement",
        "MATH500 79.0 (4o-mini) and 84.3 (TokenSkip) vs 92.4; AIME24 39.1 and 54.4 vs 57.5",
        # world v2's text-only rewriter (refiner=text_rewrite); the v1 tables used the shortest resampled step
        (Comparison("acc", (T3, "text_rewrite"), (T3, "kl"), "<", paper_effect=-13.4),),
    ),
    Claim(
        "T4-dpo-alone",
        "TokenSqueeze Table 4",
        "DPO alone is less accurate than DPO-L + SFT",
        "MATH500 91.6 vs 92.4; AIME24 48.3 vs 57.5",
        (Comparison("acc", (T4, "dpo"), (T4, "tokensqueeze"), "<", paper_effect=-0.8),),
    ),
    Claim(
        "T4-sft-alone",
        "TokenSqueeze Table 4",
        "SFT on the positives alone gives longer responses than DPO-L + SFT",
        "Len-T MATH500 2271 vs 1773; AIME24 5734 vs 5157",
        (Comparison("len_t", (T4, "sft"), (T4, "tokensqueeze"), ">", paper_effect=28.1),),
    ),
    Claim(
        "T4-dpol-vs-dpo-sft",
        "TokenSqueeze Table 4",
        "DPO-L + SFT is shorter than DPO + SFT, keeping accuracy",
        "Len-T MATH500 1773 vs 1865, AIME24 5157 vs 5420; Acc 92.4 vs 92.6, 57.5 vs 57.0",
        (
            Comparison("len_t", (T4, "tokensqueeze"), (T4, "dpo_sft"), "<", paper_effect=-4.9),
            Comparison("acc", (T4, "tokensqueeze"), (T4, "dpo_sft"), ">", NONINFERIOR, paper_effect=-0.2),
        ),
    ),
    Claim(
        "F4-alpha-one-degrades",
        "TokenSqueeze Figure 4",
        "alpha = 1 degrades accuracy against alpha = 0.2",
        "no exact points in the text; alpha = 0.2 best, alpha = 0 and 1 degrade",
        (Comparison("acc", (F4, "1.0"), (F4, "0.2"), "<"),),
    ),
    Claim(
        "F4-alpha-best",
        "TokenSqueeze Figure 4",
        "alpha = 0.2 is the most accurate alpha of the sweep",
        "no exact points in the text; alpha = 0.2 best",
        tuple(Comparison("acc", (F4, "0.2"), (F4, a), ">") for a in ALPHAS),
    ),
    Claim(
        "TLDR-keeps-accuracy",
        "TL;DR Table 2",
        "Dynamic re-weighting keeps the original model's accuracy while shortening its responses",
        "Avg Acc 68.1 vs 69.3; L-Avg 2599 vs 3618",
        (
            Comparison("acc", (TLDR, "dynamic"), (TLDR, "base"), ">", NONINFERIOR, paper_effect=-1.2),
            Comparison("len_a", (TLDR, "dynamic"), (TLDR, "base"), "<", paper_effect=-28.2),
        ),
    ),
    Claim(
        "TLDR-dynamic-vs-static",
        "TL;DR Table 2",
        "Dynamic re-weighting is more accurate than the static 1:1 mixture",
        "Avg Acc 68.1 vs 64.0 (L-Avg 2599 vs 2177)",
        (Comparison("acc", (TLDR, "dynamic"), (TLDR, "static"), ">", paper_effect=4.1),),
    ),
    Claim(
        "TLDR-feedback-vs-schedule",
        "TL;DR, its reviewers' ablation",
        "Re-weighting by the dev set is more accurate than a fixed schedule of the same weights' range",
        "not in the paper (asked for by its reviewers)",
        (Comparison("acc", (TLDR, "dynamic"), (TLDR, "schedule"), ">"),),
    ),
    Claim(
        "TLDR-feedback-vs-random",
        "TL;DR, its reviewers' ablation",
        "Re-weighting by the dev set is more accurate than re-weighting at random as often",
        "not in the paper (asked for by its reviewers)",
        (Comparison("acc", (TLDR, "dynamic"), (TLDR, "random"), ">"),),
    ),
    Claim(
        "TLDR-short-only",
        "TL;DR Table 2",
        "SFT on System-1 (short) data alone loses accuracy against the original model",
        "Avg Acc 67.3 vs 69.3",
        (Comparison("acc", (TLDR, "short_only"), (TLDR, "base"), "<", paper_effect=-2.0),),
    ),
)


def threshold_of(comparison: Comparison, noninferiority: float) -> float:
    return -noninferiority if comparison.threshold == NONINFERIOR else float(comparison.threshold)
