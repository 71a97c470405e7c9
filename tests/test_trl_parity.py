"""Parity with TRL's DPOTrainer on the same model, data and reference log-probs.

TRL computes the loss from its own forward pass and collation; tsq from `sequence_logps` and the
pure losses. `dpo` = TRL `sigmoid`, `sft` (sft_norm=token) = TRL `sft`, `dpo_sft` = both at 0.5/0.5.
"""

import math

import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from helpers import tiny_llama  # noqa: E402

from benchmarks.bench_train_vs_trl import tsq_loss_on_trl_batch  # noqa: E402
from tsq.training.losses import PreferenceLoss  # noqa: E402

PAIRS = [
    {
        "prompt": "3 +4 = ?",
        "chosen": "<think> 3 +4 = 7 ; </think> 7",
        "rejected": "<think> ok so 3 +4 = 8 ; check 3 +4 = 8 ; </think> 8",
    },
    {
        "prompt": "1 -5 +2 = ?",
        "chosen": "<think> 1 -5 = 6 +2 ; 6 +2 = 8 ; </think> 8",
        "rejected": "<think> </think> 2",
    },
    {
        "prompt": "9 +9 = ?",
        "chosen": "<think> </think> 8",
        "rejected": "<think> well 9 +9 = 7 ; again 7 ; hmm 7 ; </think> 7",
    },
]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    torch.manual_seed(0)
    model, tok = tiny_llama(hidden=32, layers=2, heads=4, max_positions=128)
    tok.padding_side = "right"
    return model, tok


def trl_loss_and_batch(model, tok, tmp_path, loss_type, loss_weights):
    config = trl.DPOConfig(
        output_dir=str(tmp_path),
        loss_type=loss_type,
        loss_weights=loss_weights,
        beta=0.1,
        per_device_train_batch_size=len(PAIRS),
        precompute_ref_log_probs=True,
        gradient_checkpointing=False,
        use_cpu=True,
        bf16=False,
        report_to="none",
        max_length=128,
    )
    trainer = trl.DPOTrainer(
        model=model, args=config, train_dataset=datasets.Dataset.from_list(PAIRS), processing_class=tok
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert "ref_chosen_logps" in batch  # precomputed with the unperturbed model
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the policy away from the reference, so DPO margins are not zero
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    model.eval()
    with torch.no_grad():
        loss = trainer._compute_loss(model, batch, return_outputs=False)
    return float(loss), batch


def tsq_loss(model, batch, loss: PreferenceLoss) -> float:
    with torch.no_grad():
        return float(tsq_loss_on_trl_batch(model, batch, loss))


@pytest.mark.parametrize(
    "loss_type, weights, ours",
    [
        (["sigmoid"], None, PreferenceLoss(kind="dpo", eta=1.0, beta=0.1)),
        (["sft"], None, PreferenceLoss(kind="none", eta=0.0, sft_norm="token")),
        (["sigmoid", "sft"], [0.5, 0.5], PreferenceLoss(kind="dpo", eta=0.5, beta=0.1, sft_norm="token")),
    ],
)
def test_losses_match_trl(model_and_tokenizer, tmp_path, loss_type, weights, ours):
    model, tok = model_and_tokenizer
    theirs, batch = trl_loss_and_batch(model, tok, tmp_path, loss_type, weights)
    assert tsq_loss(model, batch, ours) == pytest.approx(theirs, rel=1e-5, abs=1e-6)
    if loss_type == ["sigmoid"]:
        assert abs(theirs - math.log(2)) > 1e-3  # margins are not zero: the comparison has teeth
