"""Entry point: `python run.py [overrides]` or `python run.py -m key=a,b ...` for a sweep."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from tsq.stages.recipe import run

    run(cfg)


if __name__ == "__main__":
    main()
