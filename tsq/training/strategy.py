"""Lightning strategies for `trainer=fsdp` / `trainer=deepspeed`, built around the policy being trained.

FSDP wraps (and, with gradient checkpointing, checkpoints) each transformer block: the block classes are
the model's own `_no_split_modules` (LlamaDecoderLayer, Qwen2DecoderLayer, ...), so one config serves
every architecture. Reference log-probs are precomputed (`train.reference=precomputed`), so no
reference model is resident on any rank.
"""

from __future__ import annotations

import torch
from torch import nn


def block_classes(model: nn.Module) -> set[type[nn.Module]]:
    """The classes of the model's transformer blocks (from `_no_split_modules`)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    found = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not found:
        raise ValueError(f"{type(model).__name__} names no transformer block class (_no_split_modules={names})")
    return found


def build_strategy(config, model: nn.Module, gradient_checkpointing: bool = False):
    """`trainer.strategy`: a Lightning name ("auto", "ddp", ...) passes through; a mapping with `name: fsdp`
    or `name: deepspeed` becomes that strategy object, its other keys its arguments."""
    if config is None or isinstance(config, str):
        return config or "auto"
    options = dict(config)
    name = options.pop("name", None)
    if name == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        blocks = block_classes(model)
        if gradient_checkpointing:
            options.setdefault("activation_checkpointing_policy", blocks)
        return FSDPStrategy(auto_wrap_policy=blocks, **options)
    if name == "deepspeed":
        from lightning.pytorch.strategies import DeepSpeedStrategy

        return DeepSpeedStrategy(**options)
    raise ValueError(
        f"trainer.strategy.name must be fsdp or deepspeed (or give a Lightning strategy name), got {name!r}"
    )


def world_size(trainer_config: dict) -> int:
    """Processes a Lightning Trainer with these arguments trains in (`devices` x `num_nodes`)."""
    devices = trainer_config.get("devices", "auto")
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif devices in ("auto", -1, "-1"):
        gpu = trainer_config.get("accelerator") in ("gpu", "cuda") and torch.cuda.is_available()
        count = torch.cuda.device_count() if gpu else 1
    else:
        count = int(devices)
    return count * int(trainer_config.get("num_nodes", 1))
