import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tsq.training.lm import (
    IGNORE_INDEX,
    LengthBucketBatchSampler,
    collate_pairs,
    token_nll_sum,
    warmup_cosine,
)


def test_collate_masks_prompt_and_padding():
    batch = collate_pairs([([5, 6], [7, 2]), ([5], [8, 9, 2])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 2], [5, 8, 9, 2]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 7, 2], [IGNORE_INDEX, 8, 9, 2]]
    short = collate_pairs([([5], [2]), ([5], [8, 9, 2])], pad_id=0)
    assert short["input_ids"][0].tolist() == [5, 2, 0, 0] and short["attention_mask"][0].tolist() == [1, 1, 0, 0]
    assert short["labels"][0].tolist() == [IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX]


def test_nll_sum_over_count_equals_transformers_mean_loss():
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=11,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    batch = collate_pairs([([1, 2, 3], [4, 5]), ([1], [6, 7, 8, 9])], pad_id=0)
    out = model(**batch)
    nll, count = token_nll_sum(out.logits, batch["labels"])
    assert count == 6  # response tokens only
    assert (nll / count).item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_length_buckets_cover_every_index_once_with_similar_lengths():
    lengths = [i % 97 for i in range(1000)]
    sampler = LengthBucketBatchSampler(lengths, batch_size=10, seed=0, window=4)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000)) and len(batches) == len(sampler)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 40  # a random batch of 10 spans ~80 of the 0..96 range
    assert list(LengthBucketBatchSampler(lengths, 10, seed=0, window=4)) == batches  # seeded


def test_warmup_cosine_by_hand():
    assert warmup_cosine(0, warmup=10, total=110) == pytest.approx(0.1)
    assert warmup_cosine(9, warmup=10, total=110) == pytest.approx(1.0)
    assert warmup_cosine(60, warmup=10, total=110) == pytest.approx(0.5)
    assert warmup_cosine(110, warmup=10, total=110) == pytest.approx(0.0)


def test_pretraining_logs_its_progress_and_spans_whole_epochs(tmp_path, caplog, monkeypatch):
    """Where no progress bar is drawn (a log file), pretraining still reports step, loss and time left at every
    tenth of the run; and the Trainer is told how many epochs the steps span (no "Epoch 0/-2")."""
    import logging

    import lightning as L
    from helpers import compose_config
    from hydra.utils import instantiate

    from tsq.cache import ArtifactStore
    from tsq.stages.base_model import base_model

    cfg = compose_config(["debug=smoke", "model.pretrain.steps=30"])
    fits = []
    original = L.Trainer.fit

    def recording_fit(trainer, *args, **kwargs):  # the real fit, with the Trainer's settings recorded
        fits.append((trainer.max_epochs, trainer.max_steps))
        return original(trainer, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "fit", recording_fit)
    with caplog.at_level(logging.INFO, logger="tsq.progress"):
        base_model(instantiate(cfg.data), ArtifactStore(tmp_path), instantiate(cfg.model))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pretraining: step")]
    assert [line.split(" (")[0] for line in lines] == [f"pretraining: step {s}/30" for s in range(3, 31, 3)]
    assert "about 0 s left" in lines[-1] and "loss " in lines[0] and "loss n/a" not in lines[0]
    ((epochs, steps),) = fits
    assert steps == 30 and epochs >= 1  # -1 (unset) is what the bar printed as "Epoch 0/-2"
