"""Stage `pairs`: the preference pairs of data construction, `pairs.jsonl` in TRL's preference format (prompt,
chosen, rejected) plus lengths and ids, and `stats.json` (pass-rate histogram, positives, pairs, drops,
refinement); keyed on the refined traces and the `pairs=` settings (a sweep over the pair cap refines once)."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tsq.cache import Artifact, Build, Stage, json_ready
from tsq.data.base import Problem
from tsq.selection import Pair, Selection, build_pairs, pass_rate
from tsq.stages.context import RunContext
from tsq.stages.refined import read_refined
from tsq.stages.samples import GradedSamples
from tsq.training.pairs_data import PAIRS_FILE

PAIRS = Stage("pairs", 3)  # 3: positives_per_problem in stats.json
# the fields every row of the pairs file has (TRL's preference format, lengths and the problem's id), among others
PAIR_FIELDS = ("prompt", "chosen", "rejected", "chosen_len", "rejected_len", "problem_id")
PASS_RATE_BINS = [0.0, 1e-9, 0.25, 0.5, 0.75, 1.0 - 1e-9, 1.0]
PASS_RATE_LABELS = ["0", "(0,.25]", "(.25,.5]", "(.5,.75]", "(.75,1)", "1"]


@dataclass
class PairSettings:
    """`pairs=`: at most `max_pairs` pairs per problem (or per positive), seeded subsampling."""

    max_pairs: int = 64
    per: str = "problem"
    seed: int = 0

    def key_material(self) -> dict:
        return asdict(self)

    def pairs_of(self, problem_id: str, group: pd.DataFrame, selection: Selection) -> list[Pair]:
        """One problem's pairs from its samples (in sample order) and its selection, subsampled with the problem's
        own seed."""
        lengths, correct = group["n_tokens"].tolist(), group["correct"].tolist()
        return build_pairs(lengths, correct, selection, self.max_pairs, self.per, _problem_seed(self.seed, problem_id))

    def __post_init__(self) -> None:
        if self.max_pairs <= 0:
            raise ValueError(f"pairs.max_pairs must be > 0, got {self.max_pairs}")
        if self.per not in ("problem", "positive"):
            raise ValueError(f"pairs.per must be 'problem' or 'positive', got {self.per!r}")


@dataclass(frozen=True)
class Pairs:
    """What the `pairs` stage returns: its artifact and its statistics (`stats.json`)."""

    artifact: Artifact
    stats: dict

    @property
    def key(self) -> str:
        return self.artifact.key

    @property
    def path(self) -> Path:
        """The pairs file (`pairs.jsonl`)."""
        return self.artifact.path / PAIRS_FILE


def _problem_seed(seed: int, problem_id: str) -> int:
    return seed * 1_000_003 + zlib.crc32(problem_id.encode())


def pairs_key_parts(pair_settings: PairSettings, refined_key: str) -> tuple[dict, dict]:
    return pair_settings.key_material(), {"refined": refined_key}


def pairs(
    ctx: RunContext,
    samples: GradedSamples,
    selected: dict[str, tuple[pd.DataFrame, Selection]],
    refined_traces: Artifact,
    problems: dict[str, Problem],
    pair_settings: PairSettings,
) -> Pairs:
    """Pair each selected positive (its refined text) with negatives of its problem (cached)."""
    frame = samples.frame
    refined = {(r["problem_id"], r["sample"]): r for r in read_refined(refined_traces)}

    def pair_up(job: Build) -> None:
        rows = []
        for pid, (group, selection) in selected.items():
            lengths, correct = group["n_tokens"].tolist(), group["correct"].tolist()
            for pair in pair_settings.pairs_of(pid, group, selection):
                chosen = refined[(pid, int(group.loc[pair.chosen, "sample"]))]
                rows.append(
                    {
                        "prompt": problems[pid].prompt,
                        "chosen": chosen["text"],
                        "rejected": group.loc[pair.rejected, "text"],
                        "chosen_len": chosen["n_tokens"],
                        "rejected_len": int(lengths[pair.rejected]),
                        "problem_id": pid,
                        "level": problems[pid].level,
                        "chosen_sample": int(group.loc[pair.chosen, "sample"]),
                        "rejected_sample": int(group.loc[pair.rejected, "sample"]),
                        "rejected_correct": bool(correct[pair.rejected]),
                        "chosen_original_len": int(lengths[pair.chosen]),
                    }
                )
        stats = construction_stats(frame, selected, refined, rows)
        with open(job.dir / PAIRS_FILE, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        (job.dir / "stats.json").write_text(json.dumps(stats, indent=2))

    artifact = ctx.store.cached(
        PAIRS,
        *pairs_key_parts(pair_settings, refined_traces.key),
        pair_up,
        doing="building pairs",
        description={"refined": refined_traces.key},
    )
    return Pairs(artifact, json.loads((artifact.path / "stats.json").read_text()))


def construction_stats(frame: pd.DataFrame, selected, refined: dict, rows: list[dict]) -> dict:
    """What construction did: pass rates, positives, pairs, dropped problems, refinement acceptance."""
    rates = pd.Series({pid: pass_rate(g["correct"].tolist()) for pid, (g, _) in selected.items()})
    hist = pd.cut(rates, PASS_RATE_BINS, labels=PASS_RATE_LABELS, include_lowest=True).value_counts(sort=False)
    paired = Counter(r["problem_id"] for r in rows)
    used = {(r["problem_id"], r["chosen_sample"]) for r in rows}
    ref = [refined[k] for k in used]
    steps_before = sum(r["steps_before"] for r in ref)
    steps_after = sum(r["steps_after"] for r in ref)
    kls = [kl for r in ref for kl in r["accepted_kl"] if kl == kl]  # NaN (rewrite) is no KL
    return json_ready(
        {
            "problems": len(selected),
            "samples": len(frame),
            "sample_acc": float(frame["correct"].mean()),
            "pass_rate_histogram": {str(k): int(v) for k, v in hist.items()},
            "dropped_all_wrong": int((rates == 0).sum()),
            "dropped_all_right": int((rates == 1).sum()),
            "dropped_no_longer_negative": int(sum(1 for pid in selected if pid not in paired and 0 < rates[pid] < 1)),
            "problems_with_pairs": len(paired),
            "positives": sum(len(s.positives) for _, s in selected.values()),
            # k, the positives the selector chose per problem -> problems (0: no correct response)
            "positives_per_problem": {
                str(k): n for k, n in sorted(Counter(len(s.positives) for _, s in selected.values()).items())
            },
            "positives_in_pairs": len(used),
            "pairs": len(rows),
            "pairs_with_correct_rejected": sum(r["rejected_correct"] for r in rows),
            "chosen_len_mean": float(np.mean([r["chosen_len"] for r in rows])) if rows else float("nan"),
            "chosen_original_len_mean": float(np.mean([r["chosen_original_len"] for r in rows]))
            if rows
            else float("nan"),
            "rejected_len_mean": float(np.mean([r["rejected_len"] for r in rows])) if rows else float("nan"),
            "refine_steps_before": steps_before,
            "refine_steps_scored": sum(r["steps_scored"] for r in ref),
            "refine_steps_accepted": sum(r["steps_accepted"] for r in ref),
            "refine_acceptance": (sum(r["steps_accepted"] for r in ref) / steps_before) if steps_before else 0.0,
            "refine_accepted_kl_mean": float(np.mean(kls)) if kls else float("nan"),
            # sampled steps discarded for reaching refiner.max_step_tokens (also logged as a warning)
            "refine_candidates": sum(r["candidates"] for r in ref),
            "refine_candidates_cut_at_max_step_tokens": sum(r["candidates_cut"] for r in ref),
            "steps_before": steps_before / len(ref) if ref else float("nan"),
            "steps_after": steps_after / len(ref) if ref else float("nan"),
            "step_len_before": sum(r["step_tokens_before"] for r in ref) / steps_before
            if steps_before
            else float("nan"),
            "step_len_after": sum(r["step_tokens_after"] for r in ref) / steps_after if steps_after else float("nan"),
        }
    )
