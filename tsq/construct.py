"""TokenSqueeze data construction: samples -> selection -> refinement of chosen traces -> pairs.

Stages and their artifacts (all content-addressed, each keyed on its inputs' keys):
* `samples/<key>`   N graded responses per training problem (tsq.sampling.stage.SamplingStage);
* `refined/<key>`   the refined text of every positive that has at least one negative;
* `pairs/<key>`     `pairs.jsonl` in TRL's preference format (prompt, chosen, rejected) plus lengths
                    and ids, and `stats.json` (pass-rate histogram, positives, pairs, drops, refinement).
A sweep over the loss therefore samples and refines once; a sweep over the pair cap refines once.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tsq.cache import ArtifactStore, json_ready, stage_key
from tsq.refinement.kl import StepRefiner
from tsq.selection import Selector, build_pairs, pass_rate, rejected_for

log = logging.getLogger(__name__)

PAIR_FIELDS = ("prompt", "chosen", "rejected", "chosen_len", "rejected_len", "problem_id")
PASS_RATE_BINS = [0.0, 1e-9, 0.25, 0.5, 0.75, 1.0 - 1e-9, 1.0]
PASS_RATE_LABELS = ["0", "(0,.25]", "(.25,.5]", "(.5,.75]", "(.75,1)", "1"]


@dataclass
class PairSettings:
    """`pairs=`: at most `max_pairs` pairs per problem (or per positive), seeded subsampling."""

    max_pairs: int = 64
    per: str = "problem"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_pairs <= 0:
            raise ValueError(f"pairs.max_pairs must be > 0, got {self.max_pairs}")
        if self.per not in ("problem", "positive"):
            raise ValueError(f"pairs.per must be 'problem' or 'positive', got {self.per!r}")


@dataclass
class ConstructionResult:
    pairs_path: Path
    stats: dict
    samples_key: str
    pairs_key: str


def _problem_seed(seed: int, problem_id: str) -> int:
    return seed * 1_000_003 + zlib.crc32(problem_id.encode())


def select_all(frame: pd.DataFrame, selector: Selector) -> dict[str, tuple[pd.DataFrame, object]]:
    """Per problem: its samples (in sample order) and the selector's Selection."""
    out = {}
    for pid, group in frame.groupby("problem_id", sort=True):
        group = group.sort_values("sample").reset_index(drop=True)
        out[pid] = (group, selector.select(group["n_tokens"].tolist(), group["correct"].tolist()))
    return out


def positives_with_negatives(selected) -> list[tuple[str, int]]:
    """(problem_id, row) of every positive that some negative could pair with: refining others is waste."""
    keep = []
    for pid, (group, selection) in selected.items():
        lengths, correct = group["n_tokens"].tolist(), group["correct"].tolist()
        keep += [(pid, p) for p in selection.positives if rejected_for(lengths, correct, selection, p)]
    return keep


def construct(
    world,
    handle,
    make_sampler,
    store: ArtifactStore,
    sampler_config: dict,
    sampling,
    selector: Selector,
    refiner: StepRefiner,
    pair_settings: PairSettings,
    selector_config: dict,
    refiner_config: dict,
) -> ConstructionResult:
    frame, samples_key = sampling.run(handle, world, make_sampler, store, sampler_config)
    problems = {p.id: p for p in sampling.problems(world)}
    selected = select_all(frame, selector)
    todo = positives_with_negatives(selected)

    refined_key = stage_key(
        "refined", 2, {"selector": selector_config, "refiner": refiner_config}, {"samples": samples_key}
    )
    refined_path = store.path("refined", refined_key) / "refined.jsonl"
    if store.exists("refined", refined_key):
        log.info("stage refined: cache hit %s", refined_key)
    else:
        log.info(
            "stage refined: cache miss %s, refining %d chosen traces with refiner=%s",
            refined_key,
            len(todo),
            refiner.name,
        )
        texts = [selected[pid][0].loc[row, "text"] for pid, row in todo]
        sampler = make_sampler(model_path=handle.path) if refiner.accept != "none" else None  # the policy
        if sampler is None:
            results = [None] * len(todo)
        else:
            results = refiner.refine(sampler, [problems[pid].prompt for pid, _ in todo], texts, world.step_delimiter)
        with store.build("refined", refined_key, {"samples": samples_key, "refiner": refiner.name}) as tmp:
            with open(tmp / "refined.jsonl", "w", encoding="utf-8") as fh:
                for (pid, row), text, res in zip(todo, texts, results, strict=True):
                    group = selected[pid][0]
                    record = {"problem_id": pid, "sample": int(group.loc[row, "sample"]), "original": text}
                    if res is None:
                        steps = int(group.loc[row, "n_steps"])
                        tokens = int(group.loc[row, "step_tokens"])
                        record.update(
                            text=text,
                            n_tokens=int(group.loc[row, "n_tokens"]),
                            steps_before=steps,
                            steps_after=steps,
                            step_tokens_before=tokens,
                            step_tokens_after=tokens,
                            steps_scored=0,
                            steps_accepted=0,
                            accepted_kl=[],
                            candidates=0,
                            candidates_cut=0,
                        )
                    else:
                        record.update(
                            text=res.text,
                            n_tokens=len(res.token_ids),
                            steps_before=res.steps_before,
                            steps_after=res.steps_after,
                            step_tokens_before=res.step_tokens_before,
                            step_tokens_after=res.step_tokens_after,
                            steps_scored=res.steps_scored,
                            steps_accepted=res.steps_accepted,
                            accepted_kl=res.accepted_kl,
                            candidates=res.candidates,
                            candidates_cut=res.candidates_cut,
                        )
                    fh.write(json.dumps(record) + "\n")
    refined = {(r["problem_id"], r["sample"]): r for r in map(json.loads, refined_path.read_text().splitlines())}

    pairs_key = stage_key("pairs", 1, asdict(pair_settings), {"refined": refined_key})
    pairs_dir = store.path("pairs", pairs_key)
    if store.exists("pairs", pairs_key):
        log.info("stage pairs: cache hit %s", pairs_key)
        return ConstructionResult(
            pairs_dir / "pairs.jsonl", json.loads((pairs_dir / "stats.json").read_text()), samples_key, pairs_key
        )

    rows = []
    for pid, (group, selection) in selected.items():
        lengths, correct = group["n_tokens"].tolist(), group["correct"].tolist()
        pairs = build_pairs(
            lengths,
            correct,
            selection,
            pair_settings.max_pairs,
            pair_settings.per,
            _problem_seed(pair_settings.seed, pid),
        )
        for pair in pairs:
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
    with store.build("pairs", pairs_key, {"refined": refined_key}) as tmp:
        with open(tmp / "pairs.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
    return ConstructionResult(pairs_dir / "pairs.jsonl", stats, samples_key, pairs_key)


def construction_stats(frame: pd.DataFrame, selected, refined: dict, rows: list[dict]) -> dict:
    """What the stages did: pass rates, positives, pairs, dropped problems, refinement acceptance."""
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
