"""Trains a policy with `train_policy` under the trainer arguments given, for tests/test_distributed.py.

    python tests/ddp_train.py SETTINGS.json

A script, not a test: Lightning's DDP launcher starts rank 1 by running this same command again. Rank 0
writes the per-step loss (averaged over the processes, as logged) and the policy's path to `out`.
"""

import json
import sys
from pathlib import Path

import lightning as L
from helpers import pairs_artifact, run_context

from tsq.cache import ArtifactStore
from tsq.models.base import ModelHandle
from tsq.stages.policy import train_policy
from tsq.training.losses import PreferenceLoss
from tsq.training.settings import TrainSettings


class LossCurve(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(trainer.callback_metrics["loss"]))


def main(settings_file: str) -> None:
    job = json.loads(open(settings_file).read())
    curve = LossCurve()
    policy = train_policy(
        run_context(None, ArtifactStore(job["cache"]), trainer=job["trainer"]),
        ModelHandle(name="micro", path=job["model"], key="micro"),
        pairs_artifact(Path(job["pairs"])),
        PreferenceLoss(**job.get("loss", {})),
        TrainSettings(**job["train"]),
        callbacks=[curve],
    )
    if L.fabric.utilities.rank_zero.rank_zero_only.rank == 0:
        with open(job["out"], "w") as fh:
            json.dump({"losses": curve.losses, "policy": str(policy.path)}, fh)


if __name__ == "__main__":
    main(sys.argv[1])
