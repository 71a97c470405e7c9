"""The world card: what the default synthetic world's base model does on dev, per level, and what the world
decides by construction. Generated, never edited by hand:

    python -m analysis.world_card                      # writes experiments/world_card.md
    python -m analysis.world_card data.seed=1 --out /tmp/card.md

It builds (or loads from the cache) the base model and its dev evaluation exactly as `python run.py` would
(same config, same cached stages), then reads every sampled response with the world's anatomy: tokens by kind
(necessary, redundant-useful, redundant-useless, cue, noise, structure), slips, how often a check right after a
slip caught it, and the share of correct answers a check saved (a correct response that holds a fix). The same
traces are then shortened by `refiner=text_rewrite` to show which tokens a text-only compressor drops, and the
default job's chosen training traces are compared as KL refinement and as the text-only rewriter leave them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "world_card.md"

# Written before any table was rerun on world v2: which claims the world settles by its design, claim by claim.
BY_CONSTRUCTION = """\
## What this world decides by construction

Written with the world's design, before any table was rerun on it. A claim listed as *open* is one the world
can answer either way; one listed as *by construction* holds (or fails) whatever a method does.

- **Noise words are free to drop** (by construction): `so`, `ok then` and the other noise phrases are drawn
  independently of everything after them, so removing them changes no later token's distribution; a KL
  refiner should accept their removal, and its KL is near zero only up to what the model has learnt.
- **Cue words are not free to drop** (open): `wait`, `hmm wait`, `hold on` make a following check likely
  (90% after a cue, 10% without), so removing one moves the distribution of the next step; whether the KL
  refiner keeps them at the paper's epsilon, and whether dropping them costs accuracy, is measured, not given.
- **Checks are worth their tokens on hard problems only** (open, with a direction built in): slips grow with
  the square of the operands left, and a check catches a slip 80% of the time, so the accuracy a check can save
  is near zero on level 1 and sizeable on level 5 (the table below measures it). Whether a trained policy keeps
  the useful checks and drops the useless ones (adaptive depth) is what the methods are compared on.
- **`again` restatements are useless** (by construction): they restate the chain and never change it.
- **Difficulty moves the pass rate** (by construction, in direction): longer chains slip more; how steeply the
  base model's pass rate falls is measured below (the world's parameters were set before any method ran, aiming
  at about 99% on level 1 and 40-60% on level 5, and not changed for any claim).
- **Shortening can cost accuracy** (open): a compressor that drops checks and fixes (as `refiner=text_rewrite`
  does) leaves traces whose following steps continue from a value the text no longer shows; whether training on
  them hurts, and by how much, is measured in Table 3.
- **The System-1 shortcut** (by construction): a glance at the first two operands is exact on level 1 and right
  one time in ten beyond it, as in world v1.
"""


def compose_config(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("config", overrides=overrides)


def anatomy_frame(world, problems: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per sampled response: level, correct, and its anatomy's counts."""
    records = []
    for row in frame.itertuples(index=False):
        a = world.anatomy(problems[row.problem_id], row.text)
        records.append({"level": int(row.level), "correct": bool(row.correct), **vars(a)})
    return pd.DataFrame(records)


def per_level(df: pd.DataFrame) -> pd.DataFrame:
    """The card's table: per level and overall, pass rate, tokens by kind, slips, catch rate, saved answers."""

    def summary(g: pd.DataFrame) -> dict:
        correct = g[g["correct"]]
        return {
            "responses": len(g),
            "pass rate (%)": 100 * g["correct"].mean(),
            "tokens": g["total"].mean(),
            "necessary": g["necessary"].mean(),
            "redundant-useful": g["useful"].mean(),
            "redundant-useless": g["useless"].mean(),
            "cue": g["cue"].mean(),
            "noise": g["noise"].mean(),
            "structure": g["structure"].mean(),
            "slips per response": g["slips"].mean(),
            "checks per response": g["checks"].mean(),
            "slips checked": int(g["slips_checked"].sum()),
            "caught (%)": 100 * g["catches"].sum() / g["slips_checked"].sum() if g["slips_checked"].sum() else None,
            "false fixes per 100 responses": 100 * g["false_fixes"].mean(),
            "correct answers saved by a check (%)": 100 * (correct["catches"] > 0).mean() if len(correct) else None,
        }

    rows = {f"level {lvl}": summary(g) for lvl, g in df.groupby("level")}
    rows["all"] = summary(df)
    return pd.DataFrame.from_dict(rows, orient="index")


def rewrite_table(world, refiner, problems: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """Tokens by kind before and after the text-only rewriter, over the correct responses."""
    kinds = ["necessary", "useful", "useless", "cue", "noise", "structure"]
    before, after = {k: 0 for k in kinds}, {k: 0 for k in kinds}
    for row in frame[frame["correct"]].itertuples(index=False):
        problem = problems[row.problem_id]
        rewritten, _, _, _ = refiner.rewrite(row.text, world.step_delimiter)
        a, b = world.anatomy(problem, row.text), world.anatomy(problem, rewritten)
        for k in kinds:
            before[k] += getattr(a, k)
            after[k] += getattr(b, k)
    names = {"useful": "redundant-useful", "useless": "redundant-useless"}
    return pd.DataFrame(
        {
            "kind": [names.get(k, k) for k in kinds],
            "tokens before": [before[k] for k in kinds],
            "tokens after text_rewrite": [after[k] for k in kinds],
            "dropped (%)": [100 * (1 - after[k] / before[k]) if before[k] else None for k in kinds],
        }
    )


def refinement_table(world, text_refiner, problems: dict, records: list[dict]) -> pd.DataFrame:
    """Tokens by kind in the chosen training traces, after KL refinement (the run's refined artifact) and after
    the text-only rewriter on the same traces."""
    kinds = ["necessary", "useful", "useless", "cue", "noise", "structure"]
    totals = {"chosen": dict.fromkeys(kinds, 0), "kl": dict.fromkeys(kinds, 0), "text": dict.fromkeys(kinds, 0)}
    for r in records:
        problem = problems[r["problem_id"]]
        shortened = text_refiner.rewrite(r["original"], world.step_delimiter)[0]
        texts = {"chosen": r["original"], "kl": r["text"], "text": shortened}
        for name, text in texts.items():
            a = world.anatomy(problem, text)
            for k in kinds:
                totals[name][k] += getattr(a, k)
    names = {"useful": "redundant-useful", "useless": "redundant-useless"}

    def kept(name: str, k: str) -> float | None:
        return 100 * totals[name][k] / totals["chosen"][k] if totals["chosen"][k] else None

    return pd.DataFrame(
        {
            "kind": [names.get(k, k) for k in kinds],
            "tokens in the chosen traces": [totals["chosen"][k] for k in kinds],
            "kept by KL refinement (%)": [kept("kl", k) for k in kinds],
            "kept by text_rewrite (%)": [kept("text", k) for k in kinds],
        }
    )


def card(overrides: list[str]) -> str:
    from hydra.utils import instantiate

    from tsq.stages.eval import evaluation
    from tsq.stages.recipe import base_model_step, build_parts, construct_step
    from tsq.stages.refined import read_refined

    cfg = compose_config(["steps=[base_eval,construct]", "eval.split=dev", "paths.output_dir=.", *overrides])
    ctx, parts = build_parts(cfg)
    ctx, model = base_model_step(ctx, parts)
    evaluated = evaluation(ctx, model, parts.evaluator)
    frame, eval_key = evaluated.frame, evaluated.key
    world = ctx.world
    problems = {p.id: p for p in world.split("dev")}
    table = per_level(anatomy_frame(world, problems, frame))
    refiner = instantiate(compose_config(["refiner=text_rewrite"]).refiner)
    rewrite = rewrite_table(world, refiner, problems, frame)
    # the default job's construction (cached stages: a hit after `python run.py` with the same settings)
    built = construct_step(ctx, model, parts.sampling, parts.selector, parts.refiner, parts.pairs)
    train = {p.id: p for p in world.split(parts.sampling.split)}
    chosen = read_refined(built.refined)
    refined = refinement_table(world, refiner, train, chosen)
    ev = parts.evaluator
    lines = [
        f"# World card: `data={cfg.data.name}`",
        "",
        "Generated by `python -m analysis.world_card"
        + (" " + " ".join(overrides) if overrides else "")
        + "`; do not edit. The base model (`model=tiny`, cached"
        f" key `{model.key}`) on the dev split: {len(problems)} problems, {ev.n_samples} samples each at"
        f" temperature {ev.temperature} (eval key `{eval_key}`). Teacher settings: `{dict(cfg.data.teacher)}`.",
        "",
        "## The base model on dev, per level",
        "",
        "Tokens are means per response, by anatomy kind (`tsq.data.reflective.ReflectiveWorld.anatomy`). *Slips"
        " checked*: slipped steps followed directly by a check; *caught*: fixes to the right value, as a share of"
        " the slips checked; *false fixes*: checks that changed the value to a wrong one (the teacher never does;"
        " the model's own error); *saved*: correct responses that hold a fix to the right value.",
        "",
        table.to_markdown(floatfmt=".2f"),
        "",
        "## What a text-only compressor drops",
        "",
        "The base model's correct dev responses shortened by `refiner=text_rewrite` (every filler word, every"
        " check, fix and restatement step), counted by kind before and after: it drops cues and useful fixes as"
        " readily as noise and useless restatements. The KL refiner keeps or drops each by the change it makes to"
        " the model's next tokens.",
        "",
        rewrite.to_markdown(index=False, floatfmt=".1f"),
        "",
        "## KL refinement and the text-only rewriter on the same traces",
        "",
        f"The default job's chosen positives ({len(chosen)} traces of the"
        f" training split, selector `{cfg.selector._target_.rsplit('.', 1)[-1]}`, N = {parts.sampling.n}; refined"
        f" artifact `{built.refined.key}`), as KL refinement (`refiner=kl`, epsilon {cfg.refiner.epsilon}, K ="
        f" {cfg.refiner.k}) left them and as `refiner=text_rewrite` leaves them, by kind: the share of each kind's"
        " tokens each one keeps.",
        "",
        refined.to_markdown(index=False, floatfmt=".1f"),
        "",
        BY_CONSTRUCTION,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides, as for run.py")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    from tsq.cache import atomic_write_text

    text = card(args.overrides)
    atomic_write_text(args.out, text + "\n")
    print(text)
    print(f"\nwritten to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
