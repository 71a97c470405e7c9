"""Verdicts: each claim of analysis/claims.py judged on the test rows (a paired bootstrap of each difference against
its threshold), and a layout's dev choice between rows (`analysis.layouts.DevChoice`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from analysis.claims import Claim, combine, threshold_of, verdict
from analysis.layouts import DevChoice
from analysis.protocol import Protocol, difference, select_setting
from analysis.runs import RowResult
from analysis.tables import BASE, fmt_interval, number

CONF = Path(__file__).resolve().parents[1] / "conf"
METRIC_NAMES = {"acc": "Acc", "len_t": "Len-T", "len_a": "Len-A", "step_len": "StepLen"}


def claim_rows(
    claim: Claim, results: dict[str, tuple[dict[str, RowResult], RowResult | None]], protocol: Protocol
) -> tuple[str, list[str]] | None:
    """The claim's verdict and each comparison's measured difference, or None when a row has not run."""
    parts, verdicts = [], []
    for comparison in claim.parts:
        frames = []
        for experiment, row in (comparison.row, comparison.versus):
            rows, base = results.get(experiment, ({}, None))
            if row == BASE:
                frames.append(base.samples("base") if base else None)
            else:
                frames.append(rows[row].samples() if row in rows else None)
        if any(f is None for f in frames):
            return None
        interval = difference(frames[0], frames[1], comparison.metric, protocol.n_boot, protocol.level)
        threshold = threshold_of(comparison, protocol.noninferiority)
        scale = 100 if comparison.metric == "acc" else 1
        unit = " pt" if comparison.metric == "acc" else " tokens"
        parts.append(
            f"{METRIC_NAMES[comparison.metric]} {comparison.row[1]} - {comparison.versus[1]} = "
            f"{fmt_interval(interval, scale, 2)}{unit} (claimed {comparison.relation} {scale * threshold:g})"
        )
        verdicts.append(verdict(interval, comparison.relation, threshold))
    return combine(verdicts), parts


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
