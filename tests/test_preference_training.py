import json
import os
import signal
import time

import lightning as L
import pytest
import torch
from helpers import PAIRS, pairs_artifact, run_context
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer

from tsq.cache import ArtifactStore
from tsq.models.base import ModelHandle
from tsq.stages.policy import train_policy
from tsq.training.logps import sequence_logps
from tsq.training.losses import PreferenceLoss
from tsq.training.module import PreferenceModule
from tsq.training.pairs_data import collate, read_pairs, tokenize_pairs
from tsq.training.settings import TrainSettings


def write_pairs(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "1", "chosen": "x"}, "row 2: missing field 'rejected'"),
        ({"prompt": "1", "chosen": "  ", "rejected": "y"}, "row 2: field 'chosen' is empty"),
    ],
)
def test_bad_pairs_file_names_file_and_row(tmp_path, row, message):
    path = write_pairs(tmp_path / "pairs.jsonl", [PAIRS[0], row])
    with pytest.raises(ValueError, match=message) as err:
        read_pairs(path)
    assert str(path) in str(err.value)


def batch_for(model_dir, rows, ref=0.0):
    tok = AutoTokenizer.from_pretrained(model_dir)
    data = tokenize_pairs(tok, rows, 128)
    for d in data:
        d["ref_chosen"], d["ref_rejected"] = ref, ref
    return tok, data


def module_loss(module, batch) -> float:
    with torch.no_grad():
        return float(module.compute(batch)[0])


def test_one_training_step_lowers_the_loss(micro_model_dir):
    tok, data = batch_for(micro_model_dir, PAIRS, ref=-20.0)
    policy = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    settings = TrainSettings(epochs=1, batch_size=len(data), lr=1e-3, warmup_steps=1)
    module = PreferenceModule(policy, PreferenceLoss(), settings, total_steps=1, pad_id=tok.pad_token_id)
    batch = collate(data)
    before = module_loss(module, batch)
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=len(data), collate_fn=collate))
    assert module_loss(module, batch) < before


def test_non_finite_loss_stops_training_before_a_checkpoint(micro_model_dir, tmp_path):
    tok, data = batch_for(micro_model_dir, PAIRS, ref=float("inf"))  # margin -inf: loss +inf
    policy = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    module = PreferenceModule(policy, PreferenceLoss(kind="dpo", eta=1.0), TrainSettings(), 4, tok.pad_token_id)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1)
    trainer = L.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        callbacks=[checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        trainer.fit(module, DataLoader(data, batch_size=2, collate_fn=collate))
    assert list(tmp_path.glob("*.ckpt")) == []


class Crash(RuntimeError):
    pass


class StopAt(Callback):
    """Kill the run (an exception, as a crash would) when `step` is reached; record the first step."""

    def __init__(self, step: int | None) -> None:
        self.step, self.first = step, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.first is None:
            self.first = trainer.global_step
        if self.step is not None and trainer.global_step == self.step:
            raise Crash(f"killed at step {self.step}")


def resumable_training(micro_model_dir, tmp_path, settings: TrainSettings):
    """`train(store, callbacks)` on 16 micro pairs (batch 2: 8 steps an epoch), and the weights of one
    uninterrupted run, which a killed and resumed run must end with bit for bit."""
    from safetensors.torch import load_file

    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS * 4)
    handle = ModelHandle(name="micro", path=micro_model_dir, key="micro")
    trainer_cfg = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}

    def train(store, callbacks):
        return train_policy(run_context(None, store, trainer=trainer_cfg), handle, pairs_artifact(pairs),
                            PreferenceLoss(), settings, callbacks=callbacks)  # fmt: skip

    whole = load_file(train(ArtifactStore(tmp_path / "whole"), []).path / "model.safetensors")
    return train, whole


def same_weights(policy, expected: dict) -> bool:
    from safetensors.torch import load_file

    got = load_file(policy.path / "model.safetensors")
    return expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


def test_killed_training_resumes_to_the_weights_of_an_uninterrupted_run(micro_model_dir, tmp_path):
    """Killed mid-epoch (step 7 of 8 in epoch 1, last checkpoint at step 6) and started again: the resumed run
    trains on the remaining batches of that epoch in the same order, with the optimizer, scheduler and RNG
    of step 6, and ends with exactly the uninterrupted run's weights."""
    train, whole = resumable_training(micro_model_dir, tmp_path, TrainSettings(epochs=2, batch_size=2,
                                                                               checkpoint_every=3))  # fmt: skip
    store = ArtifactStore(tmp_path / "cache")
    with pytest.raises(Crash):
        train(store, [StopAt(step=7)])
    assert not store.exists("policy", next(iter((tmp_path / "cache" / "policy").glob("*.partial"))).stem)
    resumed = StopAt(step=None)
    policy = train(store, [resumed])
    assert resumed.first == 6  # the checkpoint written after step 6, not a fresh start
    assert json.loads((policy.path / "train_summary.json").read_text())["steps"] == 16
    assert same_weights(policy, whole)  # bit for bit


def test_online_reference_gives_the_same_loss_as_precomputed(micro_model_dir):
    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    data = tokenize_pairs(tok, PAIRS, 128)
    ref_model = AutoModelForCausalLM.from_pretrained(micro_model_dir).eval()
    prompts = [d["prompt"] for d in data] * 2
    completions = [d["chosen"] for d in data] + [d["rejected"] for d in data]
    with torch.no_grad():
        ref = sequence_logps(ref_model, prompts, completions)
    for i, d in enumerate(data):
        d["ref_chosen"], d["ref_rejected"] = float(ref[i]), float(ref[len(data) + i])
    policy = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    loss = PreferenceLoss()
    pre = PreferenceModule(policy, loss, TrainSettings(), 1, tok.pad_token_id)
    online = PreferenceModule(policy, loss, TrainSettings(reference="online"), 1, tok.pad_token_id, reference=ref_model)
    batch = collate(data)
    assert module_loss(online, batch) == pytest.approx(module_loss(pre, batch), rel=1e-5)


def lengths(tok, row) -> tuple[int, int]:
    """Tokens of prompt + chosen + EOS and of prompt + rejected + EOS, counted here by hand."""
    p = len(tok(row["prompt"], add_special_tokens=False)["input_ids"])
    c = len(tok(row["chosen"], add_special_tokens=False)["input_ids"])
    r = len(tok(row["rejected"], add_special_tokens=False)["input_ids"])
    return p + c + 1, p + r + 1


def test_over_length_pairs_are_an_error_naming_the_setting_and_the_count(micro_model_dir):
    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    sizes = [max(lengths(tok, row)) for row in PAIRS]
    limit = sorted(sizes)[1]  # the two shortest fit
    over = sum(s > limit for s in sizes)
    with pytest.raises(ValueError, match=rf"{over} of 4 pairs are longer than train.max_length={limit}"):
        tokenize_pairs(tok, PAIRS, limit)
    kept = tokenize_pairs(tok, PAIRS, limit, overlength="drop")
    assert [d["index"] for d in kept] == [i for i, s in enumerate(sizes) if s <= limit]


def test_truncation_keeps_the_start_and_counts_kept_tokens(micro_model_dir):
    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    row = PAIRS[1]
    p = len(tok(row["prompt"], add_special_tokens=False)["input_ids"])
    (d,) = tokenize_pairs(tok, [row], p + 5, overlength="truncate")
    rejected = tok(row["rejected"], add_special_tokens=False)["input_ids"]
    assert d["rejected"] == rejected[:5] and d["rejected_len"] == 5 and d["truncated"]
    (full,) = tokenize_pairs(tok, [row], 128)
    # the length is what the loss scores: the completion's tokens and its EOS (tsq's one length convention)
    assert full["rejected"][-1] == tok.eos_token_id and full["rejected_len"] == len(rejected) + 1
    assert not full["truncated"]


def test_a_run_with_no_pair_left_fails_before_any_compute(micro_model_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    store = ArtifactStore(tmp_path / "cache")
    handle = ModelHandle(name="micro", path=micro_model_dir, key="micro")
    settings = TrainSettings(max_length=3, overlength="drop")
    with pytest.raises(ValueError, match=r"0 optimizer steps: 0 of 4 pairs .*train.max_length=3"):
        train_policy(
            run_context(None, store, trainer={"accelerator": "cpu"}),
            handle,
            pairs_artifact(pairs),
            PreferenceLoss(),
            settings,
        )
    assert not (tmp_path / "cache" / "ref_logps").exists()  # nothing was computed, nothing empty cached


def test_a_policy_equal_to_the_base_model_is_not_saved(micro_model_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    store = ArtifactStore(tmp_path / "cache")
    handle = ModelHandle(name="micro", path=micro_model_dir, key="micro")
    settings = TrainSettings(epochs=1, batch_size=2, lr=1e-30, warmup_steps=1)  # updates below float32 resolution
    trainer_cfg = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}
    with pytest.raises(RuntimeError, match=r"training changed none of the \d+ weight tensors"):
        train_policy(
            run_context(None, store, trainer=trainer_cfg), handle, pairs_artifact(pairs), PreferenceLoss(), settings
        )
    assert list((tmp_path / "cache" / "policy").glob("*/train_summary.json")) == []


@pytest.mark.parametrize(
    ("pairs", "batch", "global_batch", "world", "epochs", "want"),
    [
        (16, 2, None, 1, 2, 16),  # 8 batches an epoch, one step each
        (16, 2, 8, 1, 2, 4),  # 4 micro-batches per step
        (18, 2, 8, 1, 1, 3),  # 9 micro-batches: 2 full accumulations and the epoch's remainder
        (16, 2, 8, 2, 1, 2),  # 2 processes read 8 pairs each: 4 micro-batches, 2 per step
        (0, 2, None, 1, 3, 0),
    ],
)
def test_optimizer_steps_by_hand(pairs, batch, global_batch, world, epochs, want):
    settings = TrainSettings(batch_size=batch, global_batch_size=global_batch, epochs=epochs)
    assert settings.optimizer_steps(pairs, world) == want


def test_global_batch_must_divide_into_micro_batches():
    with pytest.raises(ValueError, match="train.global_batch_size=10 must be a multiple of train.batch_size=4"):
        TrainSettings(batch_size=4, global_batch_size=10)
    with pytest.raises(ValueError, match="not a multiple of train.batch_size=4 x 3 processes"):
        TrainSettings(batch_size=4, global_batch_size=8).accumulation(3)
    with pytest.raises(ValueError, match="train.epochs must be a whole number > 0, got 1.5"):
        TrainSettings(epochs=1.5)


def test_accumulated_training_takes_the_planned_steps_and_records_what_it_did(micro_model_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS * 3)  # 12 pairs
    store = ArtifactStore(tmp_path / "cache")
    handle = ModelHandle(name="micro", path=micro_model_dir, key="micro")
    settings = TrainSettings(epochs=2, batch_size=2, global_batch_size=4, lr=1e-3)
    trainer_cfg = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}
    policy = train_policy(
        run_context(None, store, trainer=trainer_cfg), handle, pairs_artifact(pairs), PreferenceLoss(), settings
    )
    summary = json.loads((policy.path / "train_summary.json").read_text())
    assert summary["steps"] == 6 and summary["accumulate_grad_batches"] == 2  # 6 micro-batches / 2, x 2 epochs
    assert summary["pairs"] == summary["pairs_in_file"] == 12 and summary["pairs_dropped"] == 0
    assert summary["tensors_changed"] == summary["tensors_compared"] > 0


@pytest.mark.parametrize(
    ("copies", "max_steps", "epochs"),
    [
        (1, 5, 2.5),  # 4 pairs, batch 2: 2 steps an epoch, so 5 steps are two and a half passes
        (6, 3, 0.25),  # 24 pairs: 12 steps an epoch, so 3 steps see a quarter of them
    ],
)
def test_max_steps_trains_exactly_that_budget_whatever_the_pairs(micro_model_dir, tmp_path, copies, max_steps, epochs):
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS * copies)
    store = ArtifactStore(tmp_path / "cache")
    handle = ModelHandle(name="micro", path=micro_model_dir, key="micro")
    settings = TrainSettings(epochs=4, max_steps=max_steps, batch_size=2, lr=1e-3, warmup_steps=1)
    assert settings.optimizer_steps(4 * copies, 1) == max_steps
    trainer_cfg = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}
    policy = train_policy(
        run_context(None, store, trainer=trainer_cfg), handle, pairs_artifact(pairs), PreferenceLoss(), settings
    )
    summary = json.loads((policy.path / "train_summary.json").read_text())
    assert (summary["steps"], summary["max_steps"], summary["epochs"]) == (max_steps, max_steps, epochs)
    assert summary["tensors_changed"] > 0
    # the reference log-probs were computed for the pairs this training read, no more: 5 steps of 2 read all 4
    # pairs; 3 steps of 2 read 6 of the 24
    (scored,) = (tmp_path / "cache" / "ref_logps").glob("*/ref_logps.json")
    assert len(json.loads(scored.read_text())) == min(4 * copies, max_steps * 2)


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("steps", [1, 5])
def test_rows_read_are_the_batches_the_loader_gives_each_process(world, steps, monkeypatch):
    """`rows_read` against the loader's own order: every process's batches of a training of `steps` steps, each
    accumulating 2 micro-batches of 3 pairs, over 20 pairs (part of an epoch, or an epoch and part of the next)."""
    from tsq.training.data_order import EpochPermutation, rows_read

    seen = set()
    for rank in range(world):
        monkeypatch.setattr(EpochPermutation, "rank_and_world", staticmethod(lambda rank=rank: (rank, world)))
        sampler, left = EpochPermutation(20, seed=5, batch_size=3), steps
        for epoch in range(10):
            sampler.set_epoch(epoch)
            order = list(iter(sampler))
            batches = [order[i : i + 3] for i in range(0, len(order), 3)]
            per_epoch = -(-len(batches) // 2)  # optimizer steps an epoch (a partial accumulation steps too)
            seen.update(i for batch in batches[: len(batches) if left >= per_epoch else left * 2] for i in batch)
            left -= per_epoch
            if left <= 0:
                break
    read = rows_read(20, seed=5, batch_size=3, steps=steps, accumulate=2, world=world)
    assert read == sorted(seen) and (steps > 1 or len(read) == 6 * world)  # one step: 2 x 3 pairs a process


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_max_steps_must_be_a_positive_whole_number(value):
    with pytest.raises(ValueError, match="train.max_steps must be null or a whole number > 0"):
        TrainSettings(max_steps=value)


def test_killed_right_after_an_end_of_epoch_checkpoint_resumes_exactly(micro_model_dir, tmp_path):
    """The checkpoint of step 8 is written on the last batch of epoch 0 (8 steps an epoch); after a crash before
    step 9, Lightning goes on with epoch 1, and the loader used to carry epoch 0's "8 batches already done" into
    it, skipping epoch 1's batches: every rerun then failed ("training took 8 optimizer steps, 16 were
    planned")."""
    train, whole = resumable_training(micro_model_dir, tmp_path, TrainSettings(epochs=2, batch_size=2,
                                                                               checkpoint_every=4))  # fmt: skip
    store = ArtifactStore(tmp_path / "cache")
    with pytest.raises(Crash):
        train(store, [StopAt(step=8)])
    resumed = StopAt(step=None)
    policy = train(store, [resumed])
    assert resumed.first == 8
    assert json.loads((policy.path / "train_summary.json").read_text())["steps"] == 16
    assert same_weights(policy, whole)


@pytest.mark.parametrize("damaged", [["last.ckpt"], ["last.ckpt", "epoch=0-step=6.ckpt"]])
def test_a_truncated_checkpoint_is_named_set_aside_and_the_newest_intact_one_used(
    micro_model_dir, tmp_path, caplog, damaged
):
    """A `last.ckpt` cut short (a kill or a full disk mid-write) used to kill every rerun with a zip error naming
    no file. Now it is named and moved aside, and the run resumes from the intact step checkpoint beside it,
    or starts afresh when none is intact; either way it ends with the uninterrupted run's weights."""
    train, whole = resumable_training(micro_model_dir, tmp_path, TrainSettings(epochs=2, batch_size=2,
                                                                               checkpoint_every=3))  # fmt: skip
    store = ArtifactStore(tmp_path / "cache")
    with pytest.raises(Crash):
        train(store, [StopAt(step=7)])
    scratch = next((tmp_path / "cache" / "policy").glob("*.partial"))
    assert sorted(p.name for p in scratch.glob("*.ckpt")) == ["epoch=0-step=6.ckpt", "last.ckpt"]
    assert list(scratch.glob("*.tmp")) == []  # written in place, nothing left half-way
    for name in damaged:
        (scratch / name).write_bytes((scratch / name).read_bytes()[:5000])
    resumed = StopAt(step=None)
    with caplog.at_level("WARNING"):
        policy = train(store, [resumed])
    assert resumed.first == (6 if len(damaged) == 1 else 0)
    for name in damaged:
        assert any(str(scratch / name) in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    assert same_weights(policy, whole)


class SendSigterm(Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_training_ends_the_run_with_a_failure_status(micro_model_dir, tmp_path):
    """Lightning turns a SIGTERM into a SystemExit without a code (status 0: a scheduler records success)."""
    from tsq.stages.recipe import SIGTERM_STATUS, exit_on_sigterm

    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS * 4)
    handle = ModelHandle(name="micro", path=micro_model_dir, key="micro")
    trainer_cfg = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}
    ctx = run_context(None, ArtifactStore(tmp_path / "cache"), trainer=trainer_cfg)
    with pytest.raises(SystemExit) as stop, exit_on_sigterm():
        train_policy(ctx, handle, pairs_artifact(pairs), PreferenceLoss(), TrainSettings(epochs=1, batch_size=2),
                     callbacks=[SendSigterm()])  # fmt: skip
    assert stop.value.code == SIGTERM_STATUS == 143
    assert not list((tmp_path / "cache" / "policy").glob("*/artifact.json"))  # nothing published
    with pytest.raises(SystemExit) as stop, exit_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)  # outside training: the same status
        time.sleep(5)
    assert stop.value.code == 143
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is removed afterwards
