"""`metrics.json`: what one run measured and did, as one typed schema written and read here only.

Every field is JSON; `rows` are the metric rows of each evaluated model (`role` base or trained, one row per
benchmark and level plus `all`), `curves` their accuracy-under-budget curves. Readers (the analysis package,
the HTML report, W&B) go through `RunMetrics.read`, which names the file on a missing or malformed field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from tsq.cache import atomic_write_text, json_ready

METRICS_FILE = "metrics.json"
SCHEMA = 2  # 2: rows say `role` (base / trained); config steps are `steps`


@dataclass
class RunMetrics:
    """One run's record. `timings` are wall seconds per recipe step; `evaluations` say where each role's graded
    samples are (`split`, `path`, `forced_path`); `artifacts` lists every cached artifact the run used or built
    (stage, key, path, built)."""

    rows: list[dict] = field(default_factory=list)
    curves: list[dict] = field(default_factory=list)
    run: dict = field(default_factory=dict)  # config-group choices, overrides and tags
    timings: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, dict] = field(default_factory=dict)
    evaluations: dict[str, dict] = field(default_factory=dict)
    length_histograms: list[dict] = field(default_factory=list)
    forced_budget: list[dict] = field(default_factory=list)
    construction: dict | None = None  # the pairs stage's statistics, pairs and export paths
    training: dict | None = None  # the policy stage's train_summary.json
    tldr: dict | None = None  # the tldr_policy stage's summary
    rl: dict | None = None  # the rl_policy stage's summary, less its per-step log (kept in the artifact)
    artifacts: list[dict] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    policy_path: str | None = None
    schema: int = SCHEMA

    def role_rows(self, role: str, level: str | None = None) -> list[dict]:
        """The metric rows of one evaluated model (`base` or `trained`), of one level if given."""
        return [r for r in self.rows if r["role"] == role and (level is None or r["level"] == level)]

    def artifact_paths(self, stage: str) -> list[Path]:
        """The folders of the artifacts of `stage` this run used or built."""
        return [Path(a["path"]) for a in self.artifacts if a["stage"] == stage]

    def write(self, out_dir: str | Path) -> Path:
        """`<out_dir>/metrics.json`, written atomically."""
        payload = json_ready(asdict(self))
        return atomic_write_text(Path(out_dir) / METRICS_FILE, json.dumps(payload, indent=2) + "\n")

    @classmethod
    def read(cls, where: str | Path) -> RunMetrics:
        """The record in `where` (a run folder or its metrics.json)."""
        path = Path(where)
        if path.is_dir():
            path = path / METRICS_FILE
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable metrics.json ({err})") from err
        if not isinstance(payload, dict) or "rows" not in payload:
            raise ValueError(f"{path}: not a tsq metrics.json (no `rows`)")
        if payload.get("schema") != SCHEMA:
            raise ValueError(
                f"{path}: metrics.json schema {payload.get('schema', 1)}, this tsq reads schema {SCHEMA} (rerun the "
                "run; its cached artifacts are reused)"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise ValueError(f"{path}: unknown metrics.json fields {unknown}")
        return cls(**payload)
