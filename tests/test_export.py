"""The pairs' export for other trainers (tsq/stages/pairs_export.py): rows, conversations, LLaMA-Factory, TRL."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tsq.data.benchmarks import BenchmarkSource
from tsq.data.synthetic import SyntheticWorld
from tsq.data.templates import PromptTemplate
from tsq.stages.pairs_export import export_rows, llama_factory_entry


def test_synthetic_rows_keep_the_question_and_the_exact_texts():
    world = SyntheticWorld()
    problem = world.split("train")[0]
    row = {"prompt": problem.prompt, "chosen": "<think> a ; </think> 1", "rejected": "<think> b ; c ; </think> 2",
           "chosen_len": 5, "rejected_len": 7, "problem_id": problem.id, "level": problem.level}  # fmt: skip
    [out] = export_rows(world, {problem.id: problem}, [row], "pairs.jsonl")
    assert out["prompt"] == [{"role": "user", "content": problem.prompt}] and out["question"] == problem.prompt
    assert out["chosen"] == [{"role": "assistant", "content": row["chosen"]}]
    assert out["rejected_message"] == {"role": "assistant", "content": row["rejected"]}
    texts = (out["prompt_text"], out["chosen_text"], out["rejected_text"])
    assert texts == (row["prompt"], row["chosen"], row["rejected"])
    assert (out["chosen_len"], out["problem_id"], out["level"]) == (5, problem.id, problem.level)

    with pytest.raises(ValueError, match=r"pairs.jsonl, row 1: the pair's prompt is not problem"):
        export_rows(world, {problem.id: problem}, [{**row, "prompt": "1 +1 = ?"}], "pairs.jsonl")
    with pytest.raises(ValueError, match=r"pairs.jsonl, row 1: problem 'nope' is not in"):
        export_rows(world, {problem.id: problem}, [{**row, "problem_id": "nope"}], "pairs.jsonl")


CHAT = (
    "{% for m in messages %}<{{ m.role }}> {{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.mark.parametrize("template_adds_think", [False, True])
def test_benchmark_conversation_renders_back_to_the_prompt(micro_model_dir, template_adds_think):
    """The chat template applied to the exported messages, plus the response prefix, is the sampled prompt;
    the prefix is "<think>\\n" only where the chat template does not already end with it (R1-Distill's does)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    # (jinja drops a template's final newline, so the "<think>\n" goes inside the generation-prompt block)
    tok.chat_template = CHAT.replace("<assistant>", "<assistant><think>\n") if template_adds_think else CHAT
    template = PromptTemplate(name="r1", user="{question}\nPlease reason step by step.", generation_prefix="<think>\n")
    source = BenchmarkSource(name="gsm8k", splits={"test": [{"benchmark": "gsm8k"}]}, template=template)
    bound = replace(source)
    bound.tokenizer = tok
    problem = bound.split("test")[0]
    chat = bound.conversation(problem)
    assert chat.question == source.items["test"][0].question
    assert chat.messages == [{"role": "user", "content": chat.question + "\nPlease reason step by step."}]
    rendered = tok.apply_chat_template(chat.messages, tokenize=False, add_generation_prompt=True)
    assert rendered + chat.response_prefix == problem.prompt
    assert chat.response_prefix == ("" if template_adds_think else "<think>\n")


@pytest.mark.slow
def test_the_export_of_a_smoke_run_loads_everywhere_and_trains_trl_dpo(smoke_run, tmp_path, caplog):
    """A smoke run's export: the saved dataset and the parquet file hold the pairs file's rows, LLaMA-Factory's
    entry names existing columns, and TRL's DPOTrainer takes two optimizer steps on it with the smoke base
    model (standard format from the text columns, as the export's card says: the tiny model has no chat
    template, and its word-level tokenizer needs the space between prompt and completion)."""
    import datasets
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, _ = smoke_run
    payload = json.loads((folder / "a" / "metrics.json").read_text())
    export = Path(payload["construction"]["export_path"])
    pairs = [json.loads(line) for line in Path(payload["construction"]["pairs_path"]).read_text().splitlines()]
    saved = datasets.load_from_disk(str(export / "dataset"))
    parquet = datasets.load_dataset("parquet", data_files=str(export / "pairs.parquet"), split="train")
    assert len(saved) == len(parquet) == len(pairs) == payload["construction"]["pairs"]
    assert saved["chosen_text"] == parquet["chosen_text"] == [p["chosen"] for p in pairs]
    assert saved["prompt_text"] == [p["prompt"] for p in pairs]
    assert [m[0]["content"] for m in saved["rejected"]] == [p["rejected"] for p in pairs]
    info = json.loads((export / "dataset_info.json").read_text())
    assert info == llama_factory_entry()
    entry = info["tsq_pairs"]
    assert (export / entry["file_name"]).is_file() and set(entry["columns"].values()) <= set(parquet.column_names)
    assert all(m["role"] == "assistant" for m in parquet["chosen_message"])

    model_dir = Path(next(a["path"] for a in payload["artifacts"] if a["stage"] == "base_model"))
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    standard = saved.select_columns(["prompt_text", "chosen_text", "rejected_text"]).rename_columns(
        {"prompt_text": "prompt", "chosen_text": "chosen", "rejected_text": "rejected"}
    )
    standard = standard.map(lambda row: {"prompt": row["prompt"] + " "})
    config = trl.DPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
                           use_cpu=True, bf16=False, report_to="none", save_strategy="no", max_length=256,
                           logging_steps=1)  # fmt: skip
    trainer = trl.DPOTrainer(model=model, args=config, train_dataset=standard, processing_class=tok)
    trainer.train()
    assert "is not a prefix" not in caplog.text  # TRL trains on the token sequence tsq trained on
    assert trainer.state.global_step == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
