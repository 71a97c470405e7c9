"""The paper tables' layouts, read from the `table:` node of each experiment config (the one place they live)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "conf" / "experiment"


@dataclass(frozen=True)
class DevChoice:
    """A choice between rows that the protocol's rule makes on dev, each row at its selected setting, checked
    against the shipped default: e.g. Table 4's sign of DPO-L's length term (rows `tokensqueeze` s = -1 and
    `tokensqueeze_plus` s = +1 against `length_sign` of conf/loss/dpol.yaml)."""

    name: str
    rows: dict[str, int | float | str]  # row -> the value it stands for
    default_file: str  # a config file below conf/
    default_key: str


# what `table.columns` can name: Acc, Len (Len-T, Len-A) and AUC are in every table; Steps and StepLen (over correct
# responses) and NoStep (the share of responses with no reasoning step, and their accuracy) only where listed
COLUMNS = ("Acc", "Len", "AUC", "Steps", "StepLen", "NoStep")


@dataclass(frozen=True)
class Layout:
    """One paper table: which config group is swept, row labels in order, and its columns."""

    group: str  # the swept choice of a run: "choice.<group>" or "override.<key>"
    labels: dict[str, str]
    columns: tuple[str, ...] = ("Acc", "Len", "AUC")
    caption: str = ""
    kind: str = "tokensqueeze"  # or "tldr": accuracy and Len-A per level, averages and A.C.R.
    dev_choice: DevChoice | None = None
    # rows trained otherwise than the table's kind says (Table 1's TL;DR rows among preference methods): row -> kind
    row_kinds: dict[str, str] | None = None
    # how many of the protocol's test seeds (the first ones) the table runs; None: all (a costly table may run fewer)
    seeds: int | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(COLUMNS))
        if unknown:
            raise ValueError(f"table.columns: unknown {unknown}; known: {', '.join(COLUMNS)}")

    @property
    def protocol_kind(self) -> str:
        """Which of the protocol's grids the table's rows use: `tldr` or `preference`."""
        return "tldr" if self.kind == "tldr" else "preference"

    def kind_of(self, row: str) -> str:
        """The protocol kind (grid) of one row."""
        return (self.row_kinds or {}).get(row, self.protocol_kind)

    def rows_of_kind(self) -> dict[str, list[str]]:
        """The rows of each protocol kind, in the table's order."""
        out: dict[str, list[str]] = {}
        for row in self.labels:
            out.setdefault(self.kind_of(row), []).append(row)
        return out


def load_layouts(folder: Path = EXPERIMENTS_DIR) -> dict[str, Layout]:
    """Every experiment's table layout, by experiment name."""
    from omegaconf import OmegaConf

    layouts = {}
    for path in sorted(folder.glob("*.yaml")):
        node = OmegaConf.load(path).get("table")
        if node is None:
            continue
        spec = OmegaConf.to_container(node)
        try:
            choice = spec.pop("dev_choice", None)
            layouts[path.stem] = Layout(
                **{**spec, "columns": tuple(spec.get("columns", Layout.columns))},
                dev_choice=DevChoice(**choice) if choice else None,
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: bad table layout ({err})") from err
    return layouts


LAYOUTS = load_layouts()
