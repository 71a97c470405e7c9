"""The tables' comparison protocol as pure functions: the search grid, the dev selection rule, pooled cells with
bootstrap intervals over problems, and paired differences. `conf/protocol.yaml` holds its settings and says the
protocol in words; `analysis/results.py` runs it; `analysis/claims.py` turns its intervals into verdicts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from tsq.evaluation.intervals import Interval, bootstrap_ratio, paired_bootstrap_ratio, per_problem_sums

PROTOCOL_FILE = Path(__file__).resolve().parents[1] / "conf" / "protocol.yaml"
KINDS = ("preference", "tldr", "rl")


@dataclass(frozen=True)
class Protocol:
    """`conf/protocol.yaml`: the grid per kind of row, seeds, the selection margin and the interval settings."""

    search: dict[str, dict[str, list]]
    seed_key: str
    search_seed: int
    seeds: tuple[int, ...]
    acc_margin: float
    noninferiority: float
    dev_overrides: tuple[str, ...] = ()
    n_boot: int = 2000
    level: float = 0.95

    def __post_init__(self) -> None:
        for kind in KINDS:
            if kind not in self.search:
                raise ValueError(f"search needs an entry for {kind!r}")
            for key, values in self.search[kind].items():
                if not isinstance(values, list) or not values:
                    raise ValueError(f"search.{kind}.{key} must be a non-empty list, got {values!r}")
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be at least 2 distinct seeds, got {list(self.seeds)}")
        if self.search_seed in self.seeds:
            raise ValueError(
                f"search_seed {self.search_seed} is one of the test seeds {list(self.seeds)}: a "
                "setting chosen on a seed's draws would be tested on the same draws"
            )
        if not 0 <= self.acc_margin < 1 or not 0 <= self.noninferiority < 1:
            raise ValueError("acc_margin and noninferiority are fractions of accuracy in [0, 1)")

    def with_seeds(self, count: int | None) -> Protocol:
        """The protocol of a table that runs at most `count` test seeds, the first ones (`table.seeds`; None: every
        seed; a protocol with fewer seeds runs them all)."""
        if count is not None and count < 2:
            raise ValueError(f"table.seeds must be at least 2 (an interval needs seed-to-seed variance), got {count}")
        return self if count is None or count >= len(self.seeds) else replace(self, seeds=self.seeds[:count])

    def grid(self, kind: str) -> list[dict[str, object]]:
        """Every setting of the kind's search grid, as {override key: value}, in a fixed order."""
        keys = sorted(self.search[kind])
        values = itertools.product(*(self.search[kind][k] for k in keys))
        return [dict(zip(keys, setting, strict=True)) for setting in values]


def load_protocol(path: str | Path = PROTOCOL_FILE) -> Protocol:
    from omegaconf import OmegaConf

    spec = OmegaConf.to_container(OmegaConf.load(path))
    try:
        dev = tuple(spec.get("dev_overrides", ()))
        return Protocol(**{**spec, "seeds": tuple(spec["seeds"]), "dev_overrides": dev})
    except (TypeError, KeyError) as err:
        raise ValueError(f"{path}: bad protocol ({err})") from err
    except ValueError as err:  # (the file that was read, which need not be conf/protocol.yaml)
        raise ValueError(f"{path}: {err}") from err


def select_setting(dev: pd.DataFrame, base_acc: float, acc_margin: float) -> object:
    """The index label of the selected setting: the shortest dev Len-T among settings whose dev Acc is at least
    `base_acc - acc_margin`, else the most accurate (ties: the earlier setting). `dev` has `acc` and `len_t`."""
    if dev.empty:
        raise ValueError("no setting to select from")
    eligible = dev[dev["acc"] >= base_acc - acc_margin]
    if len(eligible):
        return eligible["len_t"].idxmin()
    return dev["acc"].idxmax()


def pooled(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The graded samples of several evaluations (seeds) of one row, as one frame; refuses evaluations that
    cover different problems (their pooled value would not be comparable)."""
    if not frames:
        raise ValueError("no evaluation to pool")
    problems = [frozenset(f["problem_id"]) for f in frames]
    if any(p != problems[0] for p in problems):
        raise ValueError("the evaluations to pool cover different problems")
    return pd.concat(frames, ignore_index=True)


def cell(samples: pd.DataFrame, metric: str, n_boot: int = 2000, level: float = 0.95) -> Interval:
    """The pooled value of `metric` over `samples` and its bootstrap interval over problems."""
    return bootstrap_ratio(per_problem_sums(samples, metric), n_boot=n_boot, level=level)


def difference(a: pd.DataFrame, b: pd.DataFrame, metric: str, n_boot: int = 2000, level: float = 0.95) -> Interval:
    """`metric`(a) - `metric`(b) and its paired bootstrap interval (the same problems resampled for both)."""
    return paired_bootstrap_ratio(per_problem_sums(b, metric), per_problem_sums(a, metric), n_boot=n_boot, level=level)


def row_override(group: str, choice: str) -> str:
    """The command-line override that picks one row of a layout: `choice.selector` + `qdyn` -> `selector=qdyn`,
    `override.selector.alpha` + `0.2` -> `selector.alpha=0.2`."""
    where, _, key = group.partition(".")
    if where not in ("choice", "override") or not key:
        raise ValueError(f"a table's group is choice.<group> or override.<key>, got {group!r}")
    return f"{key}={choice}"
