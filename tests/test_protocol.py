"""The tables' protocol (analysis/protocol.py) and the verdict rule (analysis/claims.py), against hand-made cases."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from analysis import launch, results
from analysis.claims import (
    BEST_RL,
    CLAIMS,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NONINFERIOR,
    UNDEFINED,
    VERDICTS,
    Comparison,
    combine,
    verdict,
)
from analysis.figures import sweep_figure
from analysis.layouts import LAYOUTS
from analysis.protocol import difference, load_protocol, pooled, row_override, select_setting
from analysis.runs import RowResult
from analysis.tables import sweep_points
from analysis.verdicts import grid_point, size_verdict
from tsq.evaluation.intervals import Interval


def dev(rows):
    return pd.DataFrame(rows, columns=["acc", "len_t"])


def test_selection_takes_the_shortest_setting_within_the_margin_of_the_base_model():
    # base 0.95, margin 0.01: settings 0 and 2 qualify; 2 is shorter; 1 is shortest of all but too inaccurate
    settings = dev([(0.945, 30.0), (0.90, 10.0), (0.96, 25.0)])
    assert select_setting(settings, base_acc=0.95, acc_margin=0.01) == 2


def test_selection_falls_back_to_the_most_accurate_when_none_is_close_enough():
    settings = dev([(0.80, 20.0), (0.85, 40.0), (0.70, 10.0)])
    assert select_setting(settings, base_acc=0.95, acc_margin=0.01) == 1


def test_the_margin_is_inclusive():
    assert select_setting(dev([(0.94, 20.0), (0.99, 30.0)]), base_acc=0.95, acc_margin=0.01) == 0


@pytest.mark.parametrize(
    ("interval", "relation", "threshold", "want"),
    [
        (Interval(0.02, 0.01, 0.03), ">", 0.0, HOLDS),
        (Interval(0.02, -0.01, 0.03), ">", 0.0, INCONCLUSIVE),
        (Interval(-0.02, -0.03, -0.01), ">", 0.0, FAILS),
        (Interval(-0.01, -0.015, -0.005), ">", -0.02, HOLDS),  # non-inferiority: above -2 points
        (Interval(-0.03, -0.04, -0.025), ">", -0.02, FAILS),
        (Interval(-5.0, -7.0, -3.0), "<", 0.0, HOLDS),
        (Interval(5.0, 3.0, 7.0), "<", 0.0, FAILS),
    ],
)
def test_verdict_of_one_comparison(interval, relation, threshold, want):
    assert verdict(interval, relation, threshold) == want


@pytest.mark.parametrize(
    ("value", "low", "high", "paper", "want"),
    [
        (-4.0, -6.0, -2.0, -4.9, "the paper's size reproduces"),
        (1.6, -2.7, 6.0, -0.8, "covers the paper's size and no effect alike"),  # Table 4's DPO alone, stop 34
        (-0.3, -0.5, -0.1, -4.9, "smaller than the paper's"),
        (35.3, 30.0, 40.0, 28.1, "larger than the paper's"),
        (3.0, 1.0, 5.0, -0.8, "opposite in sign to the paper's"),
        (0.2, -0.5, 0.9, 0.0, "the paper's size reproduces"),  # a paper's null effect, covered
    ],
)
def test_whether_an_effect_has_the_papers_size(value, low, high, paper, want):
    assert size_verdict(value, low, high, paper) == want


def test_a_claim_holds_only_when_every_part_holds_and_fails_when_any_part_fails():
    assert combine([HOLDS, HOLDS]) == HOLDS
    assert combine([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([INCONCLUSIVE, FAILS, HOLDS]) == FAILS
    assert combine([FAILS, UNDEFINED]) == UNDEFINED  # a comparison that cannot be made decides nothing


def test_the_best_rl_row_is_chosen_on_dev_among_the_rl_rows_with_a_length_reward():
    from analysis.verdicts import resolve_row

    rl_rows = [r for r in LAYOUTS["ts_table1"].labels if LAYOUTS["ts_table1"].kind_of(r) == "rl"]

    def searched(acc: float, len_t: float) -> dict:
        return {"setting": {"rl.lr": 1e-5}, "dev": [{"setting": {"rl.lr": 1e-5}, "acc": acc, "len_t": len_t}]}

    selected = {row: searched(0.5, 30.0) for row in rl_rows}
    selected["grpo_dler"] = searched(0.7, 25.0)
    selected["grpo_dot"] = searched(0.7, 20.0)  # as accurate, shorter: the tie goes to it
    selected["tokensqueeze"] = searched(0.9, 10.0)  # not an RL row
    selected["grpo"] = searched(0.95, 30.0)  # plain GRPO, the reference: no length reward
    assert resolve_row("ts_table1", BEST_RL, selected) == "grpo_dot"
    assert resolve_row("ts_table1", "kimi_dpo", selected) == "kimi_dpo"
    del selected["grpo_kimi"]  # one RL row not searched yet: no choice
    assert resolve_row("ts_table1", BEST_RL, selected) is None


def test_every_claim_names_rows_that_its_experiment_has():
    for claim in CLAIMS:
        assert claim.parts and claim.paper
        for part in claim.parts:
            for experiment, row in (part.row, part.versus):
                assert experiment in results.EXPERIMENTS, claim.id
                if row == BEST_RL:  # a placeholder for one of the experiment's RL rows
                    assert any(LAYOUTS[experiment].kind_of(r) == "rl" for r in LAYOUTS[experiment].labels), claim.id
                    continue
                assert row == "base" or row in LAYOUTS[experiment].labels, (claim.id, row)
            assert part.threshold == NONINFERIOR or isinstance(part.threshold, float)
    with pytest.raises(ValueError, match="relation must be > or <"):
        Comparison("acc", ("a", "b"), ("a", "c"), ">=")


def samples(problem_correct: dict[str, list[bool]], tokens: int = 10) -> pd.DataFrame:
    rows = [(p, c, tokens) for p, flags in problem_correct.items() for c in flags]
    return pd.DataFrame(rows, columns=["problem_id", "correct", "n_tokens"])


def test_pooled_seeds_and_paired_difference_by_hand():
    seed0 = samples({"p1": [True, True], "p2": [False, True]})
    seed1 = samples({"p1": [True, False], "p2": [True, True]})
    both = pooled([seed0, seed1])
    assert len(both) == 8 and both["correct"].mean() == 6 / 8
    worse = samples({"p1": [False, False, True, True], "p2": [False, True, True, True]})  # 5 of 8
    diff = difference(both, worse, "acc", n_boot=200)
    assert diff.estimate == pytest.approx(6 / 8 - 5 / 8)
    with pytest.raises(ValueError, match="different problems"):
        pooled([seed0, samples({"p3": [True]})])


def test_sweep_points_are_in_numeric_order_with_the_pooled_values_and_only_for_numeric_rows(tmp_path):
    def row(flags: dict[str, list[bool]], tokens: int) -> RowResult:
        result = RowResult("row")
        result._pooled["trained"] = samples(flags, tokens)  # the pooled samples a row's runs would give
        return result

    rows = {
        "1.0": row({"p1": [True, False], "p2": [True, True]}, 30),  # 3 of 4 correct
        "0.2": row({"p1": [True, True], "p2": [True, True]}, 20),
        "0.05": row({"p1": [False, False], "p2": [True, False]}, 10),
    }
    protocol = load_protocol()
    points = sweep_points(rows, protocol)
    assert points["value"].tolist() == [0.05, 0.2, 1.0]  # numeric order, not the rows' order
    assert points["acc"].tolist() == pytest.approx([1 / 4, 1.0, 3 / 4])
    assert points["len_t"].tolist() == pytest.approx([10, 20, 30])
    assert (points["acc_low"] <= points["acc"]).all() and (points["acc"] <= points["acc_high"]).all()
    base = RowResult("Baseline")
    base._pooled["base"] = samples({"p1": [True, False], "p2": [True, True]}, 40)
    paths = sweep_figure(points, base.samples("base"), "alpha", tmp_path, "sweep")
    assert {p.suffix for p in paths} == {".png", ".pdf"} and all(p.stat().st_size for p in paths)
    assert sweep_points({"qdyn": rows["0.2"], "shortest": rows["1.0"]}, protocol).empty


def test_row_override_for_choices_and_swept_keys():
    assert row_override("choice.selector", "qdyn") == "selector=qdyn"
    assert row_override("override.selector.alpha", "0.2") == "selector.alpha=0.2"
    with pytest.raises(ValueError, match="choice.<group> or override.<key>"):
        row_override("selector", "qdyn")


def test_the_shipped_protocol_and_its_phases(tmp_path):
    protocol = load_protocol()
    lr = protocol.search["preference"]["train.lr"]
    assert len(lr) >= 6 and min(lr) == 5e-6 and all(b / a > 1.5 for a, b in zip(lr, lr[1:], strict=False))  # log-spaced
    assert len(protocol.seeds) >= 5 and protocol.search_seed not in protocol.seeds and protocol.noninferiority == 0.01
    searches = launch.search_phases("ts_table2", protocol, tmp_path)
    # one multirun per setting of the grid (a phase that fits a session), over every row, at the search seed, on dev
    assert [[o for o in p.overrides if o.startswith("train.lr=")] for p in searches] == [[f"train.lr={v}"] for v in lr]
    for search in searches:
        assert "eval.split=dev" in search.overrides and f"seed={protocol.search_seed}" in search.overrides
        assert (
            set(protocol.dev_overrides) <= set(search.overrides)
            and "selector=shortest,qfix,qdyn_extra_neg,qdyn" in search.overrides
        )
    assert len({p.sweep_dir for p in searches}) == len(lr)
    assert searches[0].id(tmp_path) == f"ts_table2/search/train.lr{lr[0]}"
    selected = {"shortest": {"setting": {"train.lr": lr[0]}}, "qfix": {"setting": {"train.lr": lr[1]}},
                "qdyn": {"setting": {"train.lr": lr[0]}}}  # fmt: skip
    phases = launch.test_phases("ts_table2", selected, protocol, tmp_path)
    # one multirun per selected setting and test seed, over the rows that chose it, on the default (test) split
    runs = sorted((p.overrides[1], p.overrides[-1]) for p in phases)
    rows = ["selector=qfix", "selector=shortest,qdyn"]
    assert runs == sorted((r, f"seed={s}") for r in rows for s in protocol.seeds)
    assert not any("eval.split" in o for p in phases for o in p.overrides)
    assert len({p.sweep_dir for p in phases}) == len(phases)
    # Table 1 mixes kinds: its preference rows search train.lr, its mixtures tldr.lr, its RL rows rl.lr (the same
    # values), each in its own multiruns
    by_kind: dict[str, list[tuple[str, ...]]] = {}
    for phase in launch.search_phases("ts_table1", protocol, tmp_path):
        by_kind.setdefault(phase.sweep_dir.parent.name, []).append(phase.overrides)
    assert sorted(by_kind) == ["preference", "rl", "tldr"] and all(len(v) == len(lr) for v in by_kind.values())
    assert protocol.search["rl"]["rl.lr"] == lr == protocol.search["tldr"]["tldr.lr"]
    rl_methods = "grpo,grpo_kimi,grpo_dler,grpo_thinkprune,grpo_shorterbetter,grpo_dot"
    assert all(f"method={rl_methods}" in o and f"rl.lr={v}" in o for o, v in zip(by_kind["rl"], lr, strict=True))
    tldr = by_kind["tldr"]
    assert all("method=static_mixture,tldr" in o and f"tldr.lr={v}" in o for o, v in zip(tldr, lr, strict=True))
    assert not any(o.startswith("train.lr=") for overrides in tldr for o in overrides)
    mixed = {"tldr": {"setting": {"tldr.lr": lr[0]}}, "tokensqueeze": {"setting": {"train.lr": lr[0]}}}
    folders = [p.sweep_dir for p in launch.test_phases("ts_table1", mixed, protocol, tmp_path)]
    # one lr value, two keys: two multiruns per seed, none sharing a folder
    assert len(set(folders)) == len(folders) == 2 * len(protocol.seeds)


def test_a_search_seed_among_the_test_seeds_is_refused(tmp_path):
    path = tmp_path / "protocol.yaml"
    path.write_text(
        "search: {preference: {train.lr: [1.0e-3]}, tldr: {tldr.lr: [1.0e-3]}, rl: {rl.lr: [1.0e-3]}}\n"
        "seed_key: seed\nsearch_seed: 1\n"
        "seeds: [0, 1]\nacc_margin: 0.01\nnoninferiority: 0.01\n"
    )
    with pytest.raises(ValueError, match="protocol.yaml: search_seed 1 is one of the test seeds"):
        load_protocol(path)
    path.write_text(path.read_text().replace("seeds: [0, 1]", "seeds: [0]"))
    with pytest.raises(ValueError, match=re.escape(f"{path}: seeds must be at least 2 distinct")):  # the file read
        load_protocol(path)


def test_wall_times_take_the_computing_run_of_each_command_and_sum_them(tmp_path):
    lines = [
        {"experiment": "e", "phase": "search", "command": "a", "wall_s": 100.0, "returncode": 0},
        {"experiment": "e", "phase": "search", "command": "a", "wall_s": 5.0, "returncode": 0},  # cache hits
        {"experiment": "e", "phase": "test", "command": "b", "wall_s": 40.0, "returncode": 0},
        {"experiment": "e", "phase": "test", "command": "c", "wall_s": 60.0, "returncode": 1},  # failed: not counted
    ]
    (tmp_path / "ledger.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    table = launch.wall_times(tmp_path).set_index("phase")
    assert table.loc["search", "computing (s)"] == 100.0 and table.loc["search", "latest call (s)"] == 5.0
    assert table.loc["", "computing (s)"] == 140.0


def smoke_protocol(smoke_run, tmp_path, experiment: str, preference_lrs: list[str], seeds: list[int], *extra: str):
    """The `python -m analysis.results` arguments for one experiment on debug=smoke under a small protocol (the
    preference grid given, one learning rate for TL;DR and RL rows, dev 1 sample a problem), the smoke run's base
    model copied into its cache; and the RESULTS.md it writes."""
    import shutil

    folder, _ = smoke_run
    shutil.copytree(folder / "cache" / "base_model", tmp_path / "cache" / "base_model")  # its pretraining, reused
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(
        f"search: {{preference: {{train.lr: [{', '.join(preference_lrs)}]}}, tldr: {{tldr.lr: [1.0e-3]}}, "
        "rl: {rl.lr: [1.0e-3]}}\n"
        f"seed_key: seed\nsearch_seed: 100\nseeds: {seeds}\ndev_overrides: [eval.n_samples=1]\n"
        "acc_margin: 0.01\nnoninferiority: 0.01\nn_boot: 200\nlevel: 0.95\n"
    )
    out = tmp_path / "RESULTS.md"
    command = [
        "-m", "analysis.results", "--experiments", experiment, "--root", str(tmp_path / "logs"),
        "--out", str(out), "--protocol", str(protocol), "--evidence", str(tmp_path / "evidence"), "debug=smoke",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *extra,
    ]  # fmt: skip
    return out, command


def test_the_protocol_end_to_end_on_the_smoke_world(smoke_run, tmp_path):
    """`python -m analysis.results` for one table on debug=smoke: search on dev, selection, every seed of the
    selected settings on test, RESULTS.md with intervals and verdicts; a second call starts no phase."""
    from helpers import start

    out, command = smoke_protocol(smoke_run, tmp_path, "ts_table3", ["1.0e-3", "2.0e-3"], [0, 1], "train.max_steps=3")
    done = start(*command)
    assert done.returncode == 0, done.stderr[-3000:]
    ledger = launch.ledger(tmp_path / "logs")
    phases = [e["phase"] for e in ledger]  # one search per learning rate, then a test per setting and seed
    assert phases[:2] == ["search", "search"] and set(phases[2:]) == {"test"} and len(phases) > 2
    # every row's selected setting ran with both seeds on the test split, each with 3 optimizer steps
    tests = list((tmp_path / "logs" / "ts_table3" / "test").rglob("metrics.json"))
    assert len(tests) == 3 * 2
    for path in tests:
        payload = json.loads(path.read_text())
        assert payload["evaluations"]["trained"]["split"] == "test" and payload["training"]["steps"] == 3
        assert payload["forced_budget"]  # the experiment's forced budgets were evaluated on test
    text = out.read_text()
    for label in LAYOUTS["ts_table3"].labels.values():
        assert f"| {label} " in text
    for experiment in results.EXPERIMENTS:  # a call for one experiment keeps every other experiment's section
        assert f"(`{experiment}`)" in text
    verdicts = {c.id: line for c in CLAIMS for line in text.splitlines() if line.startswith(f"| {c.id}:")}
    for claim_id, line in verdicts.items():
        if claim_id.startswith("T3-"):
            # a computed verdict; undefined where a tiny smoke row answered nothing right at a seed
            assert any(f"**{v}**" in line for v in VERDICTS), line
        else:
            assert "not run yet" in line
    assert text.count("| yes ") == 3  # one selected setting per row in the dev table
    assert "Acc s0" in text and "Acc s1" in text  # every row's per-seed values
    figures = tmp_path / "experiments" / "figures"
    assert (figures / "ts_table3_budget.png").stat().st_size and "\\toprule" in (figures / "ts_table3.tex").read_text()
    assert (figures / "ts_table3_frontier.png").stat().st_size
    # every search run used the search seed and the dev overrides; every test run one of the test seeds
    for path in (tmp_path / "logs" / "ts_table3" / "search").rglob("metrics.json"):
        overrides = json.loads(path.read_text())["run"]["overrides"]
        assert "seed=100" in overrides and "eval.n_samples=1" in overrides
    again = start(*command)
    assert again.returncode == 0 and len(launch.ledger(tmp_path / "logs")) == len(ledger)  # nothing re-run
    # every phase packed its evidence; a machine without the runs (a new root) restores them all and writes the
    # same section and verdicts without running anything
    packed = sorted(p.relative_to(tmp_path / "evidence").as_posix() for p in (tmp_path / "evidence").rglob("*.tar.gz"))
    swept = [Path(e["command"].split("hydra.sweep.dir=")[1]).relative_to(tmp_path / "logs") for e in ledger]
    assert packed == sorted(f"{folder.as_posix()}.tar.gz" for folder in swept)
    elsewhere = [*command]
    elsewhere[elsewhere.index("--root") + 1] = str(tmp_path / "elsewhere")
    elsewhere[elsewhere.index("--out") + 1] = str(tmp_path / "RESULTS_elsewhere.md")
    restored = start(*elsewhere)
    assert restored.returncode == 0, restored.stderr[-3000:]
    entries = launch.ledger(tmp_path / "elsewhere")
    assert len(entries) == len(ledger) and all(e["restored_from"] for e in entries)
    assert [e["wall_s"] for e in entries] == [e["wall_s"] for e in ledger]  # the original runs' times
    again_text = (tmp_path / "RESULTS_elsewhere.md").read_text()
    section = text.split("(`ts_table3`)")[1].split("\n## ")[0]
    assert section == again_text.split("(`ts_table3`)")[1].split("\n## ")[0]
    mine = [line for claim, line in verdicts.items() if claim.startswith("T3-")]
    assert mine == [line for line in again_text.splitlines() if line.startswith("| T3-")]


@pytest.mark.slow
def test_the_protocol_writes_tldrs_section_on_the_smoke_world(smoke_run, tmp_path):
    """TL;DR Table 2 through `python -m analysis.results` on debug=smoke (one learning rate, two test seeds): its
    per-level table, the kept checkpoints with each run's seed and weights' history, and its claims judged."""
    from helpers import start

    out, command = smoke_protocol(smoke_run, tmp_path, "tldr_table2", ["1.0e-3"], [3, 4])
    done = start(*command, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    section = text[text.index("(`tldr_table2`)") :]
    assert "Per level" in section and "Kept checkpoints" in section
    table = section[section.index("Kept checkpoints") :].split("\n\n")[1].splitlines()
    header, rows = [c.strip() for c in table[0].split("|")], [[c.strip() for c in r.split("|")] for r in table[2:]]
    kept = pd.DataFrame([r[1:-1] for r in rows], columns=header[1:-1])
    # one kept checkpoint per row and test seed, with its weights' history; the seed read from the run's overrides
    labels = list(LAYOUTS["tldr_table2"].labels.values())
    expected = sorted((label, seed) for label in labels for seed in ("3", "4"))
    assert sorted(zip(kept["row"], kept["seed"], strict=True)) == expected
    assert kept["System-1 weight by step"].str.match(r"\d+: \d\.\d\d").all()
    verdicts = [line for line in text.splitlines() if line.startswith("| TLDR-")]
    assert verdicts and all(any(f"**{v}**" in line for v in VERDICTS) for line in verdicts)


def test_rows_of_every_kind_meet_at_equal_learning_rates():
    # the protocol's grid is one learning rate grid, whichever trainer reads it
    assert grid_point({"train.lr": 5e-6}) == grid_point({"rl.lr": 5e-6}) == grid_point({"tldr.lr": 5e-6})
    assert grid_point({"train.lr": 5e-6}) != grid_point({"train.lr": 1.25e-5})
    assert grid_point({"train.lr": 5e-6, "train.beta": 0.1}) == (("beta", 0.1), ("lr", 5e-6))


def test_an_accuracy_claim_between_trained_rows_is_judged_at_every_common_learning_rate():
    """Two rows' dev runs at three learning rates: row a answers every problem right at 1e-5 (b half of them), both
    answer the same at 1e-4, and only a searched 1e-3. The accuracy claim a > b holds at 1e-5 and not at 1e-4, and
    1e-3 is not a common setting."""
    from dataclasses import replace

    from analysis.claims import Claim, Comparison
    from analysis.runs import Run
    from analysis.verdicts import equal_settings

    def dev_run(correct: list[bool], lr: float) -> dict:
        samples = pd.DataFrame(
            {"problem_id": [f"p{i}" for i in range(len(correct))], "correct": correct, "n_tokens": 10}
        )
        return {"setting": {"train.lr": lr}, "run": Run(None, {}, "row", {"trained": samples})}

    right, half = [True] * 40, [True, False] * 20
    selected = {
        "a": {"dev": [dev_run(right, 1e-5), dev_run(right, 1e-4), dev_run(right, 1e-3)]},
        "b": {"dev": [dev_run(half, 1e-5), dev_run(right, 1e-4)]},
    }
    results = {"exp": ({}, None, selected)}
    protocol = replace(load_protocol(), n_boot=500)
    claim = Claim("X", "test", "a is more accurate than b", "", (Comparison("acc", ("exp", "a"), ("exp", "b"), ">"),))
    line = equal_settings(claim, results, protocol)
    assert line.startswith("at equal settings on dev: holds at 1 of 2 (")
    assert f"1e-05: {HOLDS}" in line and f"0.0001: {INCONCLUSIVE}" in line and "0.001" not in line


def test_a_claim_against_the_base_model_is_judged_at_every_setting_the_trained_row_searched():
    """Each dev run evaluates the base model too (half its 40 problems right). The trained row answers every problem
    right at 1e-5 and none at 1e-4: "more accurate than the base" holds at 1e-5 (+50 pt) and does not at 1e-4
    (-50 pt), and "keeps the base's accuracy within 1 point" (base - row < 1 pt) the same way round."""
    from dataclasses import replace

    from analysis.claims import Claim, Comparison
    from analysis.runs import Run
    from analysis.verdicts import equal_settings

    def frame(correct: list[bool]) -> pd.DataFrame:
        return pd.DataFrame({"problem_id": [f"p{i}" for i in range(len(correct))], "correct": correct, "n_tokens": 10})

    def dev_run(correct: list[bool], lr: float) -> dict:
        frames = {"trained": frame(correct), "base": frame([True, False] * 20)}
        return {"setting": {"train.lr": lr}, "run": Run(None, {}, "row", frames)}

    selected = {"a": {"dev": [dev_run([True] * 40, 1e-5), dev_run([False] * 40, 1e-4)]}}
    results = {"exp": ({}, None, selected)}
    protocol = replace(load_protocol(), n_boot=500)
    better = Claim("Y", "test", "", "", (Comparison("acc", ("exp", "a"), ("exp", "base"), ">"),))
    line = equal_settings(better, results, protocol)
    assert line == f"at each searched setting on dev: holds at 1 of 2 (1e-05: {HOLDS}, 0.0001: {FAILS})"
    keeps = Claim("Z", "test", "", "", (Comparison("acc", ("exp", "base"), ("exp", "a"), "<", 0.01),))
    line = equal_settings(keeps, results, protocol)
    assert line == f"at each searched setting on dev: holds at 1 of 2 (1e-05: {HOLDS}, 0.0001: {FAILS})"


def test_a_step_length_claim_is_undefined_at_a_setting_where_the_correct_responses_have_no_step():
    """StepLen averages over the steps of correct responses: a row whose only correct response has no reasoning
    step has none to average (Len-T it has), so the claim is undefined at that setting instead of failing the
    page (the smoke world's dev runs did this)."""
    from dataclasses import replace

    from analysis.claims import Claim, Comparison
    from analysis.runs import Run
    from analysis.verdicts import UNDEFINED, averaged, equal_settings

    def dev_run(steps: list[int], lr: float) -> dict:
        samples = pd.DataFrame(
            {
                "problem_id": ["p0", "p1", "p2"],
                "correct": [True, False, True],
                "n_tokens": [4, 11, 6],
                "n_steps": steps,
                "step_tokens": [2 * n for n in steps],
            }
        )
        return {"setting": {"train.lr": lr}, "run": Run(None, {}, "row", {"trained": samples})}

    stepless, stepped = dev_run([0, 1, 0], 1e-5), dev_run([1, 0, 2], 1e-5)
    assert not averaged(stepless["run"].frame("trained"), "step_len")
    assert averaged(stepless["run"].frame("trained"), "len_t") and averaged(stepped["run"].frame("trained"), "step_len")
    results = {"exp": ({}, None, {"a": {"dev": [stepless]}, "b": {"dev": [stepped]}})}
    claim = Claim("X", "test", "", "", (Comparison("step_len", ("exp", "a"), ("exp", "b"), "<"),))
    line = equal_settings(claim, results, replace(load_protocol(), n_boot=200))
    assert line == f"at equal settings on dev: holds at 0 of 1 (1e-05: {UNDEFINED})"


def test_a_test_claim_on_a_length_a_seed_cannot_average_is_undefined_not_inconclusive():
    """Test rows at two seeds: at seed 1 row a answers nothing right, so its Len-T at that seed does not exist and
    the seed-aware interval has no spread to estimate; the claim's verdict says so instead of "inconclusive"."""
    from dataclasses import replace

    from analysis.claims import Claim, Comparison
    from analysis.runs import Run
    from analysis.verdicts import UNDEFINED, claim_rows

    def run(correct: list[bool]) -> Run:
        samples = pd.DataFrame({"problem_id": ["p0", "p1", "p2"], "correct": correct, "n_tokens": [4, 8, 6]})
        return Run(None, {}, "row", {"trained": samples})

    a = RowResult("A", [run([True, True, False]), run([False, False, False])], (0, 1))
    b = RowResult("B", [run([True, True, True]), run([True, False, True])], (0, 1))
    results = {"exp": ({"a": a, "b": b}, None, {"a": {}, "b": {}})}
    protocol = replace(load_protocol(), n_boot=200)
    shorter = Claim("X", "test", "", "", (Comparison("len_t", ("exp", "a"), ("exp", "b"), "<"),))
    assert claim_rows(shorter, results, protocol).verdict == UNDEFINED
    # Acc is defined at every seed: a verdict as usual (a is less accurate at both seeds: 67 - 100, 0 - 67 points)
    accurate = Claim("Y", "test", "", "", (Comparison("acc", ("exp", "a"), ("exp", "b"), ">"),))
    assert claim_rows(accurate, results, protocol).verdict in (FAILS, INCONCLUSIVE)


def test_a_costly_table_runs_the_protocols_first_test_seeds(tmp_path):
    protocol = load_protocol()
    assert protocol.with_seeds(None) is protocol
    assert protocol.with_seeds(3).seeds == protocol.seeds[:3] and protocol.with_seeds(3).search == protocol.search
    assert protocol.with_seeds(len(protocol.seeds) + 1) is protocol  # a smaller protocol runs all of its seeds
    with pytest.raises(ValueError, match="table.seeds"):
        protocol.with_seeds(1)
    # the SmolLM2 table runs 3: its test multirun and its section say so (the page is written with no run at all)
    assert LAYOUTS["ts_smollm2"].seeds == 3
    table = protocol.with_seeds(3)
    phases = launch.test_phases("ts_smollm2", {"tokensqueeze": {"setting": {"train.lr": 5e-6}}}, table, tmp_path)
    assert [p.overrides[-1] for p in phases] == [f"seed={s}" for s in protocol.seeds[:3]]
    out = tmp_path / "RESULTS.md"
    results.write_results(["ts_smollm2", "ts_table2"], protocol, tmp_path / "logs", out)
    section = out.read_text().split("(`ts_smollm2`)")[1].split("\n## ")[0]
    assert f"first 3 test seeds ({list(protocol.seeds[:3])}" in section
    assert "first 3" not in out.read_text().split("(`ts_table2`)")[1]


def test_a_search_in_progress_shows_its_dev_values_and_selects_nothing_until_its_grid_is_complete(tmp_path):
    """SmolLM2's TokenSqueeze row searched at 2 of its 6 learning rates: its section lists both settings' dev values
    and selects none; with all 6 it selects by the rule (base dev Acc 80%: within 1 point, 79% to 81% qualify, the
    shortest of them is the 4th setting) and the progress note is gone."""
    from tsq.stages.run_metrics import RunMetrics

    protocol = load_protocol()
    lrs = [setting["train.lr"] for setting in protocol.grid("preference")]
    accs, lens = [0.2, 0.81, 0.5, 0.79, 0.795, 0.1], [10.0, 30.0, 5.0, 20.0, 25.0, 1.0]

    def search_run(i: int) -> None:
        rows = [
            {"role": "base", "level": "all", "acc": 0.8, "len_t": 50.0},
            {"role": "trained", "level": "all", "acc": accs[i], "len_t": lens[i]},
        ]
        run = {"choices": {"method": "tokensqueeze"}, "overrides": [f"train.lr={lrs[i]}", "seed=100"]}
        RunMetrics(rows=rows, run=run).write(tmp_path / "logs" / "ts_smollm2" / "search" / f"lr{i}" / "0")

    def dev_rows(text: str) -> list[list[str]]:
        return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if "train.lr=" in line]

    def section() -> str:
        out = tmp_path / "RESULTS.md"
        results.write_results(["ts_smollm2"], protocol, tmp_path / "logs", out)
        return out.read_text().split("(`ts_smollm2`)")[1].split("\n## ")[0]

    for i in (0, 1):
        search_run(i)
    text = section()
    assert "Dev search in progress (TokenSqueeze: 2 of 6 settings; base model dev Acc 80.00%)" in text
    assert "Not run yet" not in text  # the row in progress is not also called not run
    cells = dev_rows(text)
    assert [(c[1], float(c[2]), float(c[3]), c[4]) for c in cells] == [
        (f"train.lr={lrs[0]}", 20.0, 10.0, ""),
        (f"train.lr={lrs[1]}", 81.0, 30.0, ""),
    ]
    assert "Dev selection" not in text
    for i in range(2, 6):
        search_run(i)
    text = section()
    assert "in progress" not in text and "Dev selection" in text
    cells = dev_rows(text)
    assert [c[1] for c in cells if c[4] == "yes"] == [f"train.lr={lrs[3]}"] and len(cells) == 6


def test_a_test_in_progress_shows_each_finished_seed_and_no_pooled_cell_or_verdict(tmp_path):
    """SmolLM2's selected setting has finished test seeds 0 and 1 of its 3: its section lists those seeds' test Acc
    and Len-T (base and trained, from the graded samples: hand-computed below) and no pooled table, and its claims
    say which seeds are done instead of a verdict. With seed 2 as well, the row is complete."""
    from analysis.page import claim_experiments
    from analysis.runs import dev_search, selected_settings, test_results
    from tsq.stages.run_metrics import RunMetrics
    from tsq.stages.samples import SAMPLES_FILE

    protocol = load_protocol()
    lrs = [setting["train.lr"] for setting in protocol.grid("preference")]
    logs = tmp_path / "logs" / "ts_smollm2"
    for i, lr in enumerate(lrs):  # a complete search; the rule selects lrs[0], the only one within 1 point
        rows = [
            {"role": "base", "level": "all", "acc": 0.8, "len_t": 50.0},
            {"role": "trained", "level": "all", "acc": 0.8 if i == 0 else 0.1, "len_t": 40.0},
        ]
        run = {"choices": {"method": "tokensqueeze"}, "overrides": [f"train.lr={lr}", "seed=100"]}
        RunMetrics(rows=rows, run=run).write(logs / "search" / f"lr{i}" / "0")

    def graded(right: list[bool], tokens: list[int]) -> pd.DataFrame:
        # two problems, two samples each
        return pd.DataFrame(
            {"problem_id": ["a", "a", "b", "b"], "level": "1", "correct": right, "n_tokens": tokens, "text": ""}
        )

    # per seed: (base samples, trained samples); hand-computed Acc and Len-T (mean tokens of the correct ones)
    samples = {
        0: (graded([True, True, True, False], [10, 20, 30, 99]), graded([True, False, False, False], [8, 1, 1, 1])),
        1: (graded([True, False, True, False], [10, 1, 50, 1]), graded([True, True, False, True], [4, 6, 1, 11])),
        2: (graded([True] * 4, [10] * 4), graded([True] * 4, [5] * 4)),
    }
    expected = {  # seed: base Acc, base Len-T, trained Acc, trained Len-T
        0: (75.0, 20.0, 25.0, 8.0),
        1: (50.0, 30.0, 75.0, 7.0),
    }

    def test_run(seed: int) -> None:
        folder = logs / "test" / f"seed{seed}" / "0"
        evaluations = {}
        for role, frame in zip(("base", "trained"), samples[seed], strict=True):
            (folder / role).mkdir(parents=True)
            frame.to_json(folder / role / SAMPLES_FILE, orient="records", lines=True)
            evaluations[role] = {"split": "test", "path": str(folder / role)}
        run = {"choices": {"method": "tokensqueeze"}, "overrides": [f"train.lr={lrs[0]}", f"seed={seed}"]}
        RunMetrics(run=run, evaluations=evaluations).write(folder)

    def page() -> tuple[str, list[str]]:
        out = tmp_path / "RESULTS.md"
        results.write_results(["ts_smollm2"], protocol, tmp_path / "logs", out)
        text = out.read_text()
        smol_claims = [c.id for c in CLAIMS if claim_experiments(c) == {"ts_smollm2"}]
        verdicts = [line for line in text.splitlines() for c in smol_claims if line.startswith(f"| {c}:")]
        return text.split("(`ts_smollm2`)")[1].split("\n## ")[0], verdicts

    test_run(0)
    test_run(1)
    section, verdicts = page()
    assert "Test in progress (TokenSqueeze: seeds 0, 1 of 0, 1, 2)" in section
    assert "Not run yet" not in section
    table = section[section.index("Test in progress") :].split("\n\n")[1].splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    cells = {
        r[0]: dict(zip(header[1:], r[1:], strict=True))
        for r in ([c.strip() for c in line.strip("|").split("|")] for line in table[2:])
    }
    assert header[1:] == ["Acc s0", "Acc s1", "Len-T s0", "Len-T s1"]
    for seed, (base_acc, base_len, acc, len_t) in expected.items():
        for row, values in (("Baseline", (base_acc, base_len)), ("TokenSqueeze", (acc, len_t))):
            assert (float(cells[row][f"Acc s{seed}"]), float(cells[row][f"Len-T s{seed}"])) == values
    assert "Per seed (test" not in section  # no pooled table
    assert verdicts and all("test in progress (TokenSqueeze: seeds 0, 1 of 0, 1, 2)" in v for v in verdicts)
    assert all("**" not in v for v in verdicts)
    # with seed 2 the row is complete: it leaves the rows in progress for the pooled table (tested end to end in
    # test_the_protocol_end_to_end_on_the_smoke_world)
    test_run(2)
    table = protocol.with_seeds(3)
    selected = selected_settings("ts_smollm2", table, *dev_search("ts_smollm2", table, tmp_path / "logs"))
    rows, base, testing = test_results("ts_smollm2", selected, table, tmp_path / "logs")
    assert not testing and rows["tokensqueeze"].seeds == base.seeds == (0, 1, 2)


def test_phases_run_at_once_record_each_ledger_entry_and_a_failure_ends_no_other(tmp_path):
    """`--jobs 2`: two phases overlap in time, each gets its ledger entry, and a failing phase is raised only after
    the other has finished (its work is not lost)."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Scripted(launch.Phase):
        script: str = ""

        @property
        def command(self) -> list[str]:
            return ["python", "-c", self.script]

    def phase(name: str, code: int) -> Scripted:
        marks = tmp_path / name
        script = (
            f"import time, pathlib; p = pathlib.Path({str(marks)!r}); p.mkdir(); "
            "(p / 'start').write_text(str(time.time())); "
            f"time.sleep(1.5); (p / 'end').write_text(str(time.time())); raise SystemExit({code})"
        )
        return Scripted("search", "exp", (), tmp_path / "logs" / name, script)

    with pytest.raises(RuntimeError, match=r"exp search failed \(exit 3\)"):
        launch.run_phases([phase("a", 3), phase("b", 0)], tmp_path / "logs", jobs=2)
    times = {n: [float((tmp_path / n / m).read_text()) for m in ("start", "end")] for n in ("a", "b")}
    assert times["a"][0] < times["b"][1] and times["b"][0] < times["a"][1]  # they overlapped
    entries = launch.ledger(tmp_path / "logs")
    assert sorted(e["returncode"] for e in entries) == [0, 3]
    with pytest.raises(ValueError, match="--jobs"):
        launch.run_phases([], tmp_path / "logs", jobs=0)


def test_a_page_written_without_an_experiments_runs_keeps_what_the_earlier_page_showed(tmp_path):
    """RESULTS.md written where ts_table2 has no run and no evidence: its section, its claims' verdict rows and its
    wall times are the earlier page's, marked as carried over; an experiment whose earlier section said nothing
    more than a fresh one is written fresh, and a claim that is not on the earlier page stays not run."""
    from analysis.page import CARRIED, write_results

    protocol, out = load_protocol(), tmp_path / "RESULTS.md"
    write_results(["ts_table2", "ts_smollm2"], protocol, tmp_path / "logs", out)  # nothing run: every part fresh
    fresh = out.read_text()
    smollm2 = fresh[fresh.index("## ", fresh.index("## Verdicts") + 3) :].split("## How this file")[0]
    smollm2 = smollm2[smollm2.index("\n## ") + 1 :]  # the fresh ts_smollm2 section (after ts_table2's)
    verdict = (
        "| T2-qdyn-vs-qfix: Q-DYN beats Q-FIX | paper | Acc qdyn - qfix = 1.00 [0.50, 1.50] pt | **holds** | x | y |"
    )
    earlier = "\n".join(
        [
            "# Results (generated)", "", "protocol", "", "## Verdicts", "",
            "| claim | paper | here (test, seeds pooled) | verdict | effect vs the paper's | at equal settings (dev) |",
            "|:--|:--|:--|:--|:--|:--|", verdict, "",
            f"## {LAYOUTS['ts_table2'].caption} (`ts_table2`)", "",
            "| Row | Acc |", "|:--|--:|", "| Q-DYN | 99.0 |", "",
            smollm2.rstrip("\n"), "",
            "## How this file was made", "",
            "| experiment | phase | computing (s) | latest call (s) |", "|:--|:--|--:|--:|",
            "| ts_table2 | search | 100.0 | 100.0 |", "| ts_table2 | test | 20.0 | 20.0 |",
            "| all |  | 120.0 | 120.0 |",
            "", "Wall times ...", "",
        ]
    )  # fmt: skip
    out.write_text(earlier)
    write_results(["ts_table2", "ts_smollm2"], protocol, tmp_path / "logs", out)
    text = out.read_text()
    table2 = text.split("(`ts_table2`)")[1].split("\n## ")[0]
    assert CARRIED in table2 and "| Q-DYN | 99.0 |" in table2
    assert CARRIED not in text.split("(`ts_smollm2`)")[1].split("\n## ")[0]
    lines = text.splitlines()
    assert verdict in lines  # byte for byte, and named as carried under the table
    carried = "Carried over from the previous RESULTS.md, unchanged (no run or evidence of their experiments here): "
    assert f"{carried}T2-qdyn-vs-qfix." in lines
    assert any(line.startswith("| T2-qdyn-vs-shortest:") and "not run yet" in line for line in lines)
    times = text.split("## How this file was made")[1]
    assert "| ts_table2" in times and any(line.startswith("| all") and "120" in line for line in times.splitlines())
    write_results(["ts_table2", "ts_smollm2"], protocol, tmp_path / "logs", out)
    assert out.read_text().count(CARRIED) == 1  # carried again, marked once
