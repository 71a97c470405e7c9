"""RESULTS.md: every experiment's section (its table with intervals, figures, the dev selection), the verdicts of
every claim, the commands that made it and their wall times. Generated only; nothing else writes it, and it
writes nothing else but its figures."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.claims import CLAIMS
from analysis.figures import budget_figure, forced_figure, frontier_figure, k_figure, sweep_figure
from analysis.launch import search_phases, test_phases, wall_times
from analysis.layouts import LAYOUTS
from analysis.protocol import Protocol
from analysis.runs import RowResult, dev_search, selected_settings, test_results
from analysis.tables import (
    dev_table,
    k_table,
    md,
    per_level_table,
    per_seed_table,
    result_table,
    sweep_points,
    tldr_checkpoints,
    to_latex,
)
from analysis.verdicts import claim_rows, dev_choice_note
from tsq.cache import atomic_write_text
from tsq.stages.run_metrics import METRICS_FILE


def experiment_section(
    experiment: str,
    rows: dict[str, RowResult],
    base: RowResult | None,
    selected: dict,
    searching: dict,
    testing: dict[str, tuple[RowResult, RowResult]],
    base_dev_acc,
    protocol,
    out,
) -> list[str]:
    """One experiment's part of the page (`out`: the page's path; figures and the LaTeX table go beside it).
    `searching`: the rows whose dev search has begun but not finished, with the settings run so far; `testing`: the
    rows whose test has finished some seeds but not all, with the base model's row at those seeds."""
    layout = LAYOUTS[experiment]
    figures = out.parent / "experiments" / "figures"
    text = [f"## {layout.caption or experiment} (`{experiment}`)", ""]
    if layout.seeds is not None:
        text += [
            f"This table runs the protocol's first {layout.seeds} test seeds ({list(protocol.seeds)}; `table.seeds`).",
            "",
        ]
    # a row in progress has its own paragraph below
    missing = [layout.labels[r] for r in layout.labels if r not in rows and r not in testing and r not in searching]
    if missing:
        text += [f"Not run yet (no complete search or test): {', '.join(missing)}.", ""]
    if rows and base:
        table = result_table(experiment, rows, base, selected, protocol)
        atomic_write_text(figures / f"{experiment}.tex", to_latex(table, layout.caption, f"tab:{experiment}"))
        text += [md(table), ""]
        if "NoStep" in layout.columns:
            text += [
                "No step: the share of test responses (seeds pooled) whose reasoning has no step (an answer with no "
                "working), and the accuracy of those responses.",
                "",
            ]
        text += [
            f"Per seed (test; seeds {', '.join(map(str, protocol.seeds))}):",
            "",
            md(per_seed_table(rows, base, protocol.seeds)),
            "",
        ]
        series = [("Baseline", base.samples("base"), "--"), *((r.label, r.samples(), "-") for r in rows.values())]
        b_max = int(max(c["budget"] for c in base.runs[0].record.curves))
        budget = budget_figure(series, b_max, figures, f"{experiment}_budget")[0]
        text += [f"![accuracy within a token budget]({budget.relative_to(out.parent)})", ""]
        forced = [("Baseline", base.forced("base"), "--o"), *((r.label, r.forced(), "-o") for r in rows.values())]
        for path in forced_figure(forced, figures, f"{experiment}_forced")[:1]:
            text += [f"![forced-budget accuracy]({path.relative_to(out.parent)})", ""]
        points = sweep_points(rows, protocol)
        if len(points):
            key = layout.group.rsplit(".", 1)[-1]
            sweep = sweep_figure(points, base.samples("base"), key, figures, f"{experiment}_sweep")[0]
            text += [
                f"![test Acc and Len-T against the swept value]({sweep.relative_to(out.parent)})",
                "",
                "Each point is its row's setting selected on dev (the table's setting column), so the swept value "
                "and the selected setting can change together.",
                "",
            ]
        if layout.protocol_kind == "tldr":
            text += ["Per level (levels stand for TL;DR's datasets; Len = Len-A), pooled over seeds:", ""]
            text += [md(per_level_table(rows, base)), ""]
            text += ["Kept checkpoints (dev evaluation every `tldr.update_every` steps):", ""]
            text += [md(tldr_checkpoints(rows, protocol.seed_key), index=False), ""]
        k = k_table([(run.record, result.label) for result in rows.values() for run in result.runs])
        if len(k.columns) and layout.protocol_kind == "preference":
            text += ["Positives chosen per problem (k): problems per k, the mean over the row's seeds.", "", md(k), ""]
            kfig = k_figure(k, figures, f"{experiment}_k")[0]
            text += [f"![k per problem]({kfig.relative_to(out.parent)})", ""]
    if testing:
        text += [
            f"Test in progress ({test_progress(testing, protocol)}). Pooled cells, intervals and verdicts wait for "
            "every seed; the finished seeds' test values:",
            "",
        ]
        by_seeds: dict[tuple[int, ...], list[tuple[str, RowResult, RowResult]]] = {}
        for row, (result, base_at_seeds) in testing.items():
            by_seeds.setdefault(result.seeds, []).append((row, result, base_at_seeds))
        for seeds, group in by_seeds.items():
            table = per_seed_table({row: result for row, result, _ in group}, group[0][2], seeds)
            text += [md(table), ""]
    dev_acc = f"{100 * base_dev_acc:.2f}%" if base_dev_acc is not None else "?"
    if searching:
        progress = "; ".join(
            f"{layout.labels[row]}: {len(choice['dev'])} of {len(protocol.grid(layout.kind_of(row)))} settings"
            for row, choice in searching.items()
        )
        text += [
            f"Dev search in progress ({progress}; base model dev Acc {dev_acc}). A row's setting is selected only "
            "once every setting of its grid has run, so these rows have none selected and no test result yet:",
            "",
            md(dev_table(experiment, searching), index=False),
            "",
        ]
    if selected:
        text += [
            f"Dev selection (base model dev Acc {dev_acc}; rule: shortest dev Len-T within "
            f"{100 * protocol.acc_margin:g} point of it, else most accurate):",
            "",
            md(dev_table(experiment, selected), index=False),
            "",
        ]
        if base_dev_acc is not None:
            frontier = frontier_figure(selected, layout.labels, base_dev_acc, figures, f"{experiment}_frontier")[0]
            text += [f"![dev accuracy against dev Len-T over the grid]({frontier.relative_to(out.parent)})", ""]
        if layout.dev_choice is not None and base_dev_acc is not None:
            note = dev_choice_note(layout.dev_choice, selected, base_dev_acc, protocol)
            text += [note, ""] if note else []
    return text


def test_progress(testing: dict[str, tuple[RowResult, RowResult]], protocol: Protocol) -> str:
    """Which test seeds each row in progress has finished, e.g. "TokenSqueeze: seeds 0, 1 of 0, 1, 2"."""
    every = ", ".join(map(str, protocol.seeds))
    return "; ".join(
        f"{result.label}: seed{'s' if len(result.seeds) > 1 else ''} {', '.join(map(str, result.seeds))} of {every}"
        for result, _ in testing.values()
    )


def protocol_paragraph(protocol: Protocol) -> str:
    grids = "; ".join(f"{k}: {', '.join(f'{key} {v}' for key, v in g.items())}" for k, g in protocol.search.items())
    return (
        "Generated by `python -m analysis.results` from the runs below `logs/protocol/`; do not edit by hand. "
        "The protocol (conf/protocol.yaml, fixed before the runs): every row of a table trains the same number of "
        f"optimizer steps; every row searches the same grid ({grids}) at search seed {protocol.search_seed}, "
        f"evaluated on the dev split ({', '.join(protocol.dev_overrides) or 'test settings'}); one rule selects each "
        f"row's setting on dev (the shortest dev Len-T within {100 * protocol.acc_margin:g} point of the base model's "
        f"dev Acc); the selected setting runs with seeds {list(protocol.seeds)} (a table whose section says so: the "
        "first of them), each a new draw of everything below "
        "the base model (training samples, pairs, refinement, data order, evaluation samples), and is evaluated once "
        f"on the test split. A cell is the value pooled over seeds with its {100 * protocol.level:g}% interval over "
        "seeds and problems (tsq.evaluation.intervals.seed_aware_interval; coverage simulated in "
        'tests/test_intervals.py); a claim compares two rows paired by seed. "Keeps accuracy" means the Acc '
        f"difference's interval lies above -{100 * protocol.noninferiority:g} point. A claim between two trained "
        "rows is also judged at every learning rate both rows searched (train.lr, rl.lr and tldr.lr share one grid), "
        "and a claim against the base model at every learning rate the trained row searched, on the dev search (one "
        "seed; intervals over problems only). "
        "Each comparison's effect stands beside the paper's (7B MATH500; TL;DR: its averages). AUC is post hoc "
        "(accuracy within B tokens, integrated to the generation cap). Verdict rule: analysis/claims.py."
    )


CARRIED = (
    "Carried over from the previous RESULTS.md: no run of this experiment is on the machine that wrote this file, "
    "and no evidence archive of it was restored (`--evidence`), so its section and verdicts are the earlier ones, "
    "unchanged."
)


@dataclass
class PreviousPage:
    """What an earlier RESULTS.md said, by experiment (its section, its wall-time rows) and by claim (its verdict
    row), so that a page written where some experiments' runs are missing keeps what they showed."""

    sections: dict[str, str]
    verdicts: dict[str, str]
    wall_rows: dict[str, list[list[str]]]

    @classmethod
    def read(cls, path: Path) -> PreviousPage:
        if not path.exists():
            return cls({}, {}, {})
        text = path.read_text(encoding="utf-8")
        sections, wall_rows = {}, {}
        for part in text.split("\n## ")[1:]:
            header = part.splitlines()[0]
            for experiment in LAYOUTS:
                if header.endswith(f"(`{experiment}`)"):
                    sections[experiment] = "## " + part.rstrip("\n") + "\n"
            if header == "How this file was made":
                for line in part.split("\n\n")[1].splitlines()[2:]:
                    cells = [c.strip() for c in line.strip().strip("|").split("|")]
                    if cells and cells[0] in LAYOUTS:
                        wall_rows.setdefault(cells[0], []).append(cells)
        verdicts = {
            claim.id: line for claim in CLAIMS for line in text.splitlines() if line.startswith(f"| {claim.id}:")
        }
        return cls(sections, verdicts, wall_rows)


def carried_verdicts_line(claim_ids: list[str]) -> str:
    """Which verdict rows are an earlier page's (so written by an earlier version of the verdict code: a column it
    did not fill stays empty)."""
    return (
        "Carried over from the previous RESULTS.md, unchanged (no run or evidence of their experiments here): "
        f"{', '.join(claim_ids)}."
    )


def has_runs(experiment: str, root: Path) -> bool:
    return any((root / experiment).rglob(METRICS_FILE))


def claim_experiments(claim) -> set[str]:
    return {side[0] for part in claim.parts for side in (part.row, part.versus)}


def not_yet(claim, in_progress: dict[str, str]) -> str:
    """A claim without a verdict: "not run yet", or which test seeds its experiments have finished."""
    progress = [in_progress[e] for e in sorted(claim_experiments(claim)) if in_progress.get(e)]
    return f"test in progress ({'; '.join(progress)})" if progress else "not run yet"


def with_carried_rows(times: pd.DataFrame, carried: list[list[str]]) -> pd.DataFrame:
    """The ledger's wall-time table with an earlier page's rows of carried experiments, and the total again."""
    if not carried:
        return times
    columns = ["experiment", "phase", "computing (s)", "latest call (s)"]
    rows = times[times["experiment"] != "all"] if len(times) else pd.DataFrame(columns=columns)
    earlier = pd.DataFrame([[e, p, float(c), float(lc)] for e, p, c, lc in carried], columns=columns)
    rows = pd.concat([rows, earlier], ignore_index=True)
    rows.loc[len(rows)] = ["all", "", rows["computing (s)"].sum(), rows["latest call (s)"].sum()]
    return rows


def write_results(experiments: Iterable[str], protocol: Protocol, root: Path, out: Path, extra: tuple[str, ...] = ()):
    """RESULTS.md (at `out`) from the runs below `root`; figures go to `experiments/figures/` beside it. An
    experiment without any run below `root` keeps its section, verdict rows and wall times from the RESULTS.md
    already at `out` (marked as carried over), so a page written on a machine that ran one experiment does not
    erase what the others showed."""
    previous = PreviousPage.read(out)
    sections, results, commands, carried, in_progress = [], {}, [], set(), {}
    for experiment in experiments:
        table = protocol.with_seeds(LAYOUTS[experiment].seeds)  # (a costly table may run fewer test seeds)
        searched, base_dev_acc = dev_search(experiment, table, root)
        selected = selected_settings(experiment, table, searched, base_dev_acc)
        searching = {r: {"setting": None, "dev": found} for r, found in searched.items() if found and r not in selected}
        rows, base, testing = test_results(experiment, selected, table, root)
        results[experiment] = (rows, base, selected)
        in_progress[experiment] = test_progress(testing, table) if testing else ""
        commands += search_phases(experiment, table, root, extra)
        commands += test_phases(experiment, selected, table, root, extra)
        section = experiment_section(experiment, rows, base, selected, searching, testing, base_dev_acc, table, out)
        text = "\n".join(section)
        earlier = previous.sections.get(experiment)
        if earlier is not None and not has_runs(experiment, root) and earlier.rstrip() != text.rstrip():
            carried.add(experiment)
            if CARRIED not in earlier:
                header, rest = earlier.split("\n", 1)
                earlier = f"{header}\n\n{CARRIED}\n{rest}"
            text = earlier
        sections.append(text)
    verdict_rows, carried_claims = [], {}
    for claim in CLAIMS:
        if claim_experiments(claim) <= carried and claim.id in previous.verdicts:
            carried_claims[claim.id] = previous.verdicts[claim.id]
        measured = claim_rows(claim, results, protocol)
        verdict_rows.append(
            {
                "claim": f"{claim.id}: {claim.statement}",
                "paper": claim.paper,
                "here (test, seeds pooled)": (
                    "<br>".join(measured.measured) if measured else not_yet(claim, in_progress)
                ),
                "verdict": f"**{measured.verdict}**" if measured else "–",
                "effect vs the paper's": "<br>".join(measured.effects) if measured else "",
                "at equal settings (dev)": measured.equal_settings if measured else "",
            }
        )
    verdict_table = [
        carried_claims.get(line.removeprefix("| ").split(":", 1)[0], line)
        for line in md(pd.DataFrame(verdict_rows), index=False).splitlines()
    ]
    times = with_carried_rows(wall_times(root), [r for e in sorted(carried) for r in previous.wall_rows.get(e, [])])
    page = [
        "# Results (generated)",
        "",
        protocol_paragraph(protocol),
        "",
        "## Verdicts",
        "",
        *verdict_table,
        "",
        *([carried_verdicts_line(sorted(carried_claims)), ""] if carried_claims else []),
        *sections,
        "## How this file was made",
        "",
        md(times, index=False) if len(times) else "No phase has run yet.",
        "",
        "Wall times of finished calls, from logs/protocol/ledger.jsonl (computing: the longest call of each "
        "command; latest call: its last, mostly cache hits; a phase restored from its evidence archive keeps the "
        "time of the call that ran it). Phases run at once (`--jobs`) overlap, so the total is core time, not "
        "elapsed time. Not counted: calls that were interrupted (the stages they finished were cache hits for the "
        "next call) and stages cached before a phase's first call (such as the base model). A carried-over "
        "experiment's rows are the earlier page's.",
        "",
        "Commands (each a Hydra multirun; `python -m analysis.results` runs them in this order):",
        "",
        "```",
        *[shlex.join(p.command) for p in commands],
        "```",
        "",
    ]
    return atomic_write_text(out, "\n".join(page))
