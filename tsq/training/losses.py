"""`loss=`: preference and SFT losses as pure functions of summed log-probs and lengths.

Inputs per pair (tensors of shape [B]): policy and reference *summed* log-probs of the chosen and
rejected completions, and their token lengths. All losses return the per-pair loss [B]; the batch
loss is its mean (as TRL does). Formulas: TokenSqueeze (arXiv 2511.13223, Sec. 3.3); the DPO and SFT
terms as TRL's DPOTrainer writes them:

* dpo (TRL `sigmoid`):  -log σ(β[(π_w - ref_w) - (π_l - ref_l)])
* sft:                  chosen NLL per token: per sequence (`sft_norm="mean"`, LLaMA-Factory's
                        `-chosen_logps_avg`), pooled over the batch (`"token"`, TRL), or summed (`"sum"`)
* dpol (DPO-L):         -log σ(β[(π_w - ref_w) - (π_l - ref_l)] + s·λ·log(ℓ_l/ℓ_w)), s = `length_sign`
                        (+1 as the only available, secondary rendering writes it; -1, the default,
                        is what the paper's prose describes: a stronger signal for larger length gaps)
* simpo:                -log σ(β(π_w/ℓ_w - π_l/ℓ_l) - γ), reference-free
* mixtures:             η·preference + (1 - η)·SFT (`dpo_sft`, `tokensqueeze` = DPO-L + SFT, η = 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tsq.cache import ConfiguredPart


def dpo_margin(
    chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor
) -> torch.Tensor:
    """(log πθ(y_w)/πref(y_w)) - (log πθ(y_l)/πref(y_l))."""
    return (chosen_logps - ref_chosen) - (rejected_logps - ref_rejected)


def sigmoid_dpo(chosen_logps, rejected_logps, ref_chosen, ref_rejected, beta: float) -> torch.Tensor:
    return -F.logsigmoid(beta * dpo_margin(chosen_logps, rejected_logps, ref_chosen, ref_rejected))


def dpo_length(
    chosen_logps, rejected_logps, ref_chosen, ref_rejected, chosen_len, rejected_len, beta: float, lam: float, sign: int
) -> torch.Tensor:
    length_term = torch.log(rejected_len.float() / chosen_len.float())
    z = beta * dpo_margin(chosen_logps, rejected_logps, ref_chosen, ref_rejected) + sign * lam * length_term
    return -F.logsigmoid(z)


def sft_nll(chosen_logps, chosen_len, norm: str = "mean") -> torch.Tensor:
    """Per-pair chosen NLL whose batch mean is: the mean of per-sequence token means (`mean`), the
    token mean pooled over the batch (`token`, TRL's `sft` loss type), or the mean summed NLL (`sum`)."""
    if norm == "mean":
        return -chosen_logps / chosen_len.float()
    if norm == "token":
        return -chosen_logps * len(chosen_len) / chosen_len.float().sum()
    if norm == "sum":
        return -chosen_logps
    raise ValueError(f"loss.sft_norm must be 'mean', 'token' or 'sum', got {norm!r}")


def simpo(chosen_logps, rejected_logps, chosen_len, rejected_len, beta: float, gamma: float) -> torch.Tensor:
    margin = chosen_logps / chosen_len.float() - rejected_logps / rejected_len.float()
    return -F.logsigmoid(beta * margin - gamma)


@dataclass
class PreferenceLoss(ConfiguredPart, part="loss/preference"):
    """One `loss=` choice. `kind` is the preference term (dpo, dpol, simpo or none); `eta` weighs it
    against the chosen-response SFT term: loss = eta * preference + (1 - eta) * sft."""

    kind: str = "dpol"
    eta: float = 0.5
    beta: float = 0.1
    lam: float = 1.0
    length_sign: int = -1
    gamma: float = 0.0
    sft_norm: str = "mean"
    name: str = "tokensqueeze"

    def __post_init__(self) -> None:
        if self.kind not in ("dpo", "dpol", "simpo", "none"):
            raise ValueError(f"loss.kind must be dpo, dpol, simpo or none, got {self.kind!r}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"loss.eta must lie in [0, 1], got {self.eta}")
        if self.kind == "none" and self.eta != 0.0:
            raise ValueError("loss.kind=none (pure SFT) needs loss.eta=0")
        if self.length_sign not in (-1, 1):
            raise ValueError(f"loss.length_sign must be +1 or -1, got {self.length_sign}")
        if self.beta <= 0:
            raise ValueError(f"loss.beta must be > 0, got {self.beta}")
        if self.sft_norm not in ("mean", "token", "sum"):
            raise ValueError(f"loss.sft_norm must be 'mean', 'token' or 'sum', got {self.sft_norm!r}")

    @property
    def needs_reference(self) -> bool:
        return self.kind in ("dpo", "dpol") and self.eta > 0

    @property
    def needs_rejected(self) -> bool:
        return self.kind != "none" and self.eta > 0

    def preference(self, chosen_logps, rejected_logps, ref_chosen, ref_rejected, chosen_len, rejected_len):
        if self.kind == "dpo":
            return sigmoid_dpo(chosen_logps, rejected_logps, ref_chosen, ref_rejected, self.beta)
        if self.kind == "dpol":
            return dpo_length(
                chosen_logps,
                rejected_logps,
                ref_chosen,
                ref_rejected,
                chosen_len,
                rejected_len,
                self.beta,
                self.lam,
                self.length_sign,
            )
        if self.kind == "simpo":
            return simpo(chosen_logps, rejected_logps, chosen_len, rejected_len, self.beta, self.gamma)
        return torch.zeros_like(chosen_logps)

    def __call__(
        self, chosen_logps, rejected_logps, ref_chosen, ref_rejected, chosen_len, rejected_len
    ) -> torch.Tensor:
        """Per-pair loss [B]."""
        total = torch.zeros_like(chosen_logps)
        if self.eta > 0:
            total = total + self.eta * self.preference(
                chosen_logps, rejected_logps, ref_chosen, ref_rejected, chosen_len, rejected_len
            )
        if self.eta < 1:
            total = total + (1 - self.eta) * sft_nll(chosen_logps, chosen_len, self.sft_norm)
        return total
