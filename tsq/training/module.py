"""The Lightning module of preference training: the policy, its loss and TRL-named metrics per step."""

from __future__ import annotations

import random
from pathlib import Path

import lightning as L
import torch

from tsq.training.lm import warmup_cosine
from tsq.training.logps import sequence_logps
from tsq.training.losses import PreferenceLoss
from tsq.training.settings import TrainSettings


class PreferenceModule(L.LightningModule):
    """The policy under training; reference log-probs come with the batch (precomputed)."""

    def __init__(
        self,
        policy,
        loss: PreferenceLoss,
        settings: TrainSettings,
        total_steps: int,
        pad_id: int,
        reference=None,
        adapters=None,
    ) -> None:
        """`reference`: a frozen model that scores every batch (online reference); `adapters`: the peft
        model whose adapters `policy` carries (LoRA), whose disabled adapters give the online reference."""
        super().__init__()
        self.policy, self.loss_fn, self.settings = policy, loss, settings
        self.total_steps, self.pad_id = total_steps, pad_id
        self.reference = reference.eval().requires_grad_(False) if reference is not None else None
        self.adapters = adapters

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, metrics = self.compute(batch)
        if not torch.isfinite(loss):
            # Stop before the optimizer step and before any checkpoint holds the broken state.
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at step {self.global_step} (loss={self.loss_fn.name}); "
                "nothing from this step was saved"
            )
        n = len(batch["prompt"])
        # TRL's metric names, so dashboards compare side by side
        # averaged over data-parallel processes: the logged curve is the global batch's, as with one process
        sync = self.trainer.world_size > 1
        self.log_dict({k: v for k, v in metrics.items() if k != "loss"}, batch_size=n, sync_dist=sync)
        self.log("loss", metrics["loss"], batch_size=n, prog_bar=True, sync_dist=sync)
        return loss

    def compute(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The batch loss and TRL-named metrics."""
        n = len(batch["prompt"])
        with_rejected = self.loss_fn.needs_rejected
        prompts = batch["prompt"] * (2 if with_rejected else 1)
        completions = batch["chosen"] + (batch["rejected"] if with_rejected else [])
        logps = self.logps(self.policy, prompts, completions)
        chosen = logps[:n]
        rejected = logps[n:] if with_rejected else torch.zeros_like(chosen)
        if self.settings.reference == "online" and self.loss_fn.needs_reference:
            with torch.no_grad():
                if self.adapters is not None:
                    with self.adapters.disable_adapter():
                        ref = self.logps(self.policy, prompts, completions)
                else:
                    ref = self.logps(self.reference, prompts, completions)
            ref_c, ref_r = ref[:n], ref[n:]
        else:
            ref_c, ref_r = batch["ref_chosen"].to(chosen), batch["ref_rejected"].to(chosen)
        len_c, len_r = batch["chosen_len"].to(chosen.device), batch["rejected_len"].to(chosen.device)
        loss = self.loss_fn(chosen, rejected, ref_c, ref_r, len_c, len_r).mean()
        beta = self.loss_fn.beta
        metrics = {"loss": loss.detach(), "logps/chosen": chosen.mean(), "len/chosen": len_c.float().mean()}
        if with_rejected:
            reward_c, reward_r = beta * (chosen - ref_c).detach(), beta * (rejected - ref_r).detach()
            metrics.update(
                {
                    "rewards/chosen": reward_c.mean(),
                    "rewards/rejected": reward_r.mean(),
                    "rewards/margins": (reward_c - reward_r).mean(),
                    "rewards/accuracies": (reward_c > reward_r).float().mean(),
                    "logps/rejected": rejected.mean(),
                    "len/rejected": len_r.float().mean(),
                }
            )
        return loss, metrics

    def logps(self, model: torch.nn.Module, prompts: list, completions: list) -> torch.Tensor:
        return sequence_logps(
            model,
            prompts,
            completions,
            self.settings.batching,
            self.settings.rows_per_forward,
            pad_id=self.pad_id,
            chunk_tokens=self.settings.logit_chunk_tokens,
            checkpoint_forwards=self.settings.checkpoint_forwards,
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the RNG streams a resumed run must continue (dropout, LoRA dropout); data order is the loader's
        checkpoint["rng_states"] = {"torch": torch.get_rng_state(), "python": random.getstate()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_states" in checkpoint:
            torch.set_rng_state(checkpoint["rng_states"]["torch"])
            random.setstate(checkpoint["rng_states"]["python"])

    def configure_optimizers(self):
        trainable = [p for p in self.policy.parameters() if p.requires_grad]  # LoRA: the adapters only
        opt = torch.optim.AdamW(trainable, lr=self.settings.lr, weight_decay=self.settings.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, self.settings.warmup_steps, self.total_steps)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def changed_tensors(base_dir: Path, state: dict[str, torch.Tensor]) -> tuple[int, int, float]:
    """(tensors that differ, tensors compared, largest absolute change) between the base model's
    safetensors files and a trained state dict, read one tensor at a time (no second model in memory)."""
    from safetensors import safe_open

    changed, compared, largest = 0, 0, 0.0
    for file in sorted(Path(base_dir).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if name not in state:
                    continue
                base = fh.get_tensor(name)
                trained = state[name].detach().to("cpu", base.dtype)
                compared += 1
                if not torch.equal(base, trained):
                    changed += 1
                    largest = max(largest, float((trained.float() - base.float()).abs().max()))
    return changed, compared, largest
