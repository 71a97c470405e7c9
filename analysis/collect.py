"""Gather every run's `metrics.json` under a folder (runs and multiruns alike) into one DataFrame.

python -m analysis.collect logs/        # prints the overall rows of every run
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def collect_metrics(root: str | Path) -> pd.DataFrame:
    """One row per metric row of every `metrics.json` below `root`, with the run folder in `run`, the
    run's config-group choices in `choice.<group>` columns, its command-line overrides in
    `override.<key>` columns and its tags (comma-joined) in `tags`."""
    frames = []
    for path in sorted(Path(root).rglob("metrics.json")):
        try:
            payload = json.loads(path.read_text())
            rows = payload["rows"]
        except (json.JSONDecodeError, KeyError) as err:
            raise ValueError(f"{path}: not a tsq metrics file ({err})") from err
        run = payload.get("run", {})
        columns = {f"choice.{k}": v for k, v in run.get("choices", {}).items()}
        columns |= {f"override.{o.split('=', 1)[0].lstrip('+~')}": o.split("=", 1)[1] for o in run.get("overrides", [])}
        columns["tags"] = ",".join(run.get("tags", []))
        frames.append(pd.DataFrame(rows).assign(run=str(path.parent), **columns))
    if not frames:
        raise FileNotFoundError(f"no metrics.json below {root}")
    return pd.concat(frames, ignore_index=True)


if __name__ == "__main__":
    frame = collect_metrics(sys.argv[1] if len(sys.argv) > 1 else "logs")
    print(frame[frame["level"] == "all"].to_string(index=False))
