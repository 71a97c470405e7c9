"""Verdicts: each claim of analysis/claims.py judged on the test rows (a paired bootstrap of each difference against
its threshold), and a layout's dev choice between rows (`analysis.layouts.DevChoice`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from analysis.claims import BEST_RL, HOLDS, RL_REFERENCE, UNDEFINED, Claim, Comparison, combine, threshold_of, verdict
from analysis.layouts import LAYOUTS, DevChoice
from analysis.protocol import Protocol, difference, select_setting
from analysis.runs import RowResult
from analysis.tables import BASE, fmt_interval, number
from tsq.evaluation.intervals import SeedInterval, per_problem_sums, seed_aware_interval

CONF = Path(__file__).resolve().parents[1] / "conf"
METRIC_NAMES = {"acc": "Acc", "len_t": "Len-T", "len_a": "Len-A", "step_len": "StepLen"}


@dataclass(frozen=True)
class ClaimResult:
    """A claim judged: its verdict on the test rows (seeds pooled, seed-aware intervals), each comparison's measured
    difference, its effect beside the paper's, and its verdict at every setting of the dev search (`equal_settings`)."""

    verdict: str
    measured: list[str]
    effects: list[str]
    equal_settings: str


def _effect(comparison: Comparison, interval: SeedInterval, versus_value: float) -> str:
    """The measured effect in the paper's unit (Acc: points; lengths: % of the compared row), beside the paper's."""
    if comparison.metric == "acc":
        unit, scale = " pt", 100.0
    else:
        unit, scale = "%", 100.0 / versus_value
    value, low, high = (scale * v for v in (interval.estimate, interval.low, interval.high))
    if not all(math.isfinite(v) for v in (value, low, high)):
        return UNDEFINED
    text = f"{value:+.1f}{unit} [{low:+.1f}, {high:+.1f}]"
    if comparison.paper_effect is None:
        return text + " (the paper gives no number)"
    paper = comparison.paper_effect
    return f"{text} vs paper {paper:+.1f}{unit}: {size_verdict(value, low, high, paper)}"


def size_verdict(value: float, low: float, high: float, paper: float) -> str:
    """Whether a measured effect (estimate and interval) has the paper's size: its interval covers the paper's
    effect and excludes no effect; an interval that covers both cannot tell them apart."""
    if low <= paper <= high:
        if paper != 0 and low <= 0 <= high:
            return "covers the paper's size and no effect alike"
        return "the paper's size reproduces"
    if value * paper < 0:
        return "opposite in sign to the paper's"
    return "smaller than the paper's" if abs(value) < abs(paper) else "larger than the paper's"


def resolve_row(experiment: str, row: str, selected: dict[str, dict]) -> str | None:
    """A claim's row: itself, or for `BEST_RL` the experiment's RL row with a length reward (not `RL_REFERENCE`) with
    the highest dev accuracy at its selected setting (ties: the shorter dev Len-T); None until all are searched."""
    if row != BEST_RL:
        return row
    layout = LAYOUTS[experiment]

    def dev_rank(name: str) -> tuple[float, float]:
        entry = next(e for e in selected[name]["dev"] if e["setting"] == selected[name]["setting"])
        len_t = entry["len_t"]
        return -entry["acc"], len_t if len_t is not None and math.isfinite(len_t) else math.inf

    candidates = [name for name in layout.labels if layout.kind_of(name) == "rl" and name != RL_REFERENCE]
    if not candidates or any(name not in selected for name in candidates):
        return None  # chosen among all the RL rows, once each has been searched
    return min(candidates, key=dev_rank)


def resolved(claim: Claim, results: dict[str, tuple[dict, RowResult | None, dict]]) -> Claim | None:
    """The claim with its placeholder rows resolved (`resolve_row`), or None while one cannot be."""
    parts = []
    for comparison in claim.parts:
        sides = []
        for experiment, row in (comparison.row, comparison.versus):
            name = resolve_row(experiment, row, results.get(experiment, ({}, None, {}))[2])
            if name is None:
                return None
            sides.append((experiment, name))
        parts.append(replace(comparison, row=sides[0], versus=sides[1]))
    return replace(claim, parts=tuple(parts))


def claim_rows(
    claim: Claim, results: dict[str, tuple[dict[str, RowResult], RowResult | None, dict]], protocol: Protocol
) -> ClaimResult | None:
    """The claim judged on the test rows, or None while a row it compares has not run every seed."""
    claim = resolved(claim, results)
    if claim is None:
        return None
    parts, verdicts, effects = [], [], []
    for comparison in claim.parts:
        sides = []
        for experiment, row in (comparison.row, comparison.versus):
            rows, base, _ = results.get(experiment, ({}, None, {}))
            result, role = (base, "base") if row == BASE else (rows.get(row), "trained")
            if result is None:
                return None
            sides.append((result, role))
        (row_result, row_role), (versus_result, versus_role) = sides
        interval = seed_aware_interval(
            row_result.sums(comparison.metric, row_role),
            versus_result.sums(comparison.metric, versus_role),
            n_boot=protocol.n_boot,
            level=protocol.level,
        )
        threshold = threshold_of(comparison, protocol.noninferiority)
        scale = 100 if comparison.metric == "acc" else 1
        unit = " pt" if comparison.metric == "acc" else " tokens"
        seeds = ", ".join(f"{scale * v:+.2f}" for v in interval.per_seed)
        parts.append(
            f"{METRIC_NAMES[comparison.metric]} {comparison.row[1]} - {comparison.versus[1]} = "
            f"{fmt_interval(interval, scale, 2)}{unit} (claimed {comparison.relation} {scale * threshold:g}; "
            f"per seed {seeds})"
        )
        defined = math.isfinite(interval.low) and math.isfinite(interval.high)  # (a seed with nothing to average)
        verdicts.append(verdict(interval, comparison.relation, threshold) if defined else UNDEFINED)
        num, den = versus_result.sums(comparison.metric, versus_role)
        effects.append(_effect(comparison, interval, float(num.sum() / den.sum())))
    return ClaimResult(combine(verdicts), parts, effects, equal_settings(claim, results, protocol))


def averaged(samples: pd.DataFrame, metric: str) -> bool:
    """Whether `metric` has anything to average over in `samples`: Len-T needs a correct response, StepLen a correct
    response with a reasoning step (a correct answer given with no step has none)."""
    return bool(per_problem_sums(samples, metric)["den"].sum() > 0)


def grid_point(setting: dict[str, object]) -> tuple:
    """A searched setting as a point of the protocol's grid, which is one for every kind of row: keys are compared by
    their last part, so `train.lr`, `rl.lr` and `tldr.lr` at one value are the same learning rate."""
    return tuple(sorted((key.rsplit(".", 1)[-1], value) for key, value in setting.items()))


def equal_settings(
    claim: Claim, results: dict[str, tuple[dict[str, RowResult], RowResult | None, dict]], protocol: Protocol
) -> str:
    """A claim's verdict at every setting of the dev search (one seed; an interval over problems only), e.g. "holds
    at 4 of 6 (...)": between two trained rows at every grid point both searched (`grid_point`: a preference row and
    an RL row meet at equal learning rates); against the base model at every setting the trained row searched, so a
    headline that only the selected setting makes true says so."""
    by_setting: dict[tuple, list[str]] = {}
    for comparison in claim.parts:
        for setting, a, b in dev_pairs(comparison, results):
            if not (averaged(a, comparison.metric) and averaged(b, comparison.metric)):
                by_setting.setdefault(setting, []).append(UNDEFINED)
                continue
            interval = difference(a, b, comparison.metric, protocol.n_boot, protocol.level)
            by_setting.setdefault(setting, []).append(
                verdict(interval, comparison.relation, threshold_of(comparison, protocol.noninferiority))
            )
    complete = {k: combine(v) for k, v in by_setting.items() if len(v) == len(claim.parts)}
    if not complete:
        return ""
    held = [k for k, v in complete.items() if v == HOLDS]
    shown = ", ".join(f"{', '.join(f'{x}' for _, x in k)}: {v}" for k, v in sorted(complete.items()))
    against_base = any(BASE in (c.row[1], c.versus[1]) for c in claim.parts)
    where = "at each searched setting on dev" if against_base else "at equal settings on dev"
    return f"{where}: holds at {len(held)} of {len(complete)} ({shown})"


def dev_pairs(
    comparison: Comparison, results: dict[str, tuple[dict[str, RowResult], RowResult | None, dict]]
) -> list[tuple[tuple, pd.DataFrame, pd.DataFrame]]:
    """(grid point, the row's dev samples, the versus side's dev samples) for each setting of the dev search the
    comparison can be made at. Two trained rows: each grid point both searched. Against the base model: each setting
    the trained row searched, against the base model's evaluation in that same run (one dev evaluation, whatever the
    setting)."""

    def dev(side: tuple[str, str]) -> list[dict]:
        return results.get(side[0], ({}, None, {}))[2].get(side[1], {}).get("dev", [])

    if BASE in (comparison.row[1], comparison.versus[1]):
        trained_first = comparison.versus[1] == BASE
        out = []
        for entry in dev(comparison.row if trained_first else comparison.versus):
            trained, base = entry["run"].frame("trained"), entry["run"].frame("base")
            out.append((grid_point(entry["setting"]), *((trained, base) if trained_first else (base, trained))))
        return out
    versus_at = {grid_point(e["setting"]): e for e in dev(comparison.versus)}
    return [
        (point, entry["run"].frame("trained"), versus_at[point]["run"].frame("trained"))
        for entry in dev(comparison.row)
        if (point := grid_point(entry["setting"])) in versus_at
    ]


def dev_choice_note(choice: DevChoice, selected: dict[str, dict], base_acc: float, protocol: Protocol) -> str:
    """Which row's value the protocol's rule picks on dev (each row at its selected setting), and whether the
    shipped default agrees; empty until every row of the choice has been searched."""
    found = {}
    for row, value in choice.rows.items():
        if row in selected:
            found[value] = next(e for e in selected[row]["dev"] if e["setting"] == selected[row]["setting"])
    if len(found) < len(choice.rows):
        return ""
    picked = select_setting(pd.DataFrame.from_dict(found, orient="index"), base_acc, protocol.acc_margin)
    default = OmegaConf.load(CONF / choice.default_file)[choice.default_key]
    agree = "agrees" if default == picked else f"**does not agree** (it has {default})"
    shown = "; ".join(f"{k}: dev Acc {100 * v['acc']:.2f}%, Len-T {number(v['len_t'])}" for k, v in found.items())
    return (
        f"{choice.name}, chosen by the same rule on dev: **{picked}** ({shown}); the default "
        f"(`{choice.default_key}` in conf/{choice.default_file}) {agree}."
    )
