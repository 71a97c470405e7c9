"""What can be checked of the GPU-only parts on CPU: FSDP strategy construction, and the vLLM sampler's
request settings and output mapping (vLLM itself never runs here)."""

import pytest
from lightning.pytorch.strategies import FSDPStrategy

from tsq.sampling.base import SamplingParams
from tsq.sampling.vllm import to_completion, vllm_request
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
    assert vllm_request(params) == {
        "n": 4, "temperature": 0.6, "top_p": 0.95, "max_tokens": 32, "seed": 7, "skip_special_tokens": False,
    }  # fmt: skip
    with_stop = vllm_request(params, ["\n\n"])
    assert with_stop["stop"] == ["\n\n"] and with_stop["include_stop_str_in_output"] is True


def test_vllm_outputs_map_onto_finish_reasons():
    eos = 2
    assert to_completion("a b", [5, 6, eos], "stop", None, eos).finish_reason == "eos"
    assert to_completion("a b", [5, 6, eos], "stop", None, eos).token_ids == (5, 6)  # EOS is not kept
    step = to_completion("a\n\n", [5, 9], "stop", "\n\n", eos)
    assert step.finish_reason == "stop" and step.token_ids == (5, 9)
    assert to_completion("a", [5], "length", None, eos).finish_reason == "length"
    with pytest.raises(ValueError, match="abort"):
        to_completion("", [], "abort", None, eos)


def test_model_revision_and_remote_code_trust_reach_every_loader(tmp_path):
    """model.revision and model.trust_remote_code travel with the handle: samplers get the revision, every
    from_pretrained gets both (handle.load_kwargs), and a trained model keeps the trust but not the revision."""
    from tsq.cache import ArtifactStore
    from tsq.context import SamplerChoice
    from tsq.models.base import PretrainedModel

    handle = PretrainedModel(name="m", path="org/model", revision="abc123", trust_remote_code=True).materialize(
        None, ArtifactStore(tmp_path)
    )
    assert handle.key == "org/model@abc123"
    assert handle.load_kwargs() == {"revision": "abc123", "trust_remote_code": True}
    calls = []
    SamplerChoice(lambda **kwargs: calls.append(kwargs), {})(handle)
    assert calls == [{"model_path": handle.path, "revision": "abc123"}]
    trained = handle.derived("m+dpo", tmp_path / "policy", "k")
    assert trained.load_kwargs() == {"revision": None, "trust_remote_code": True}
