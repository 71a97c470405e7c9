import os
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory) -> Path:
    """A real 2-layer Llama + word tokenizer, trained through Lightning for a few seconds to answer
    every prompt with ``<think> 3 ; </think> 3`` and then EOS, so greedy decoding is predictable."""
    import lightning as L
    from torch.utils.data import DataLoader
    from transformers import LlamaConfig, LlamaForCausalLM

    from tsq.data.synthetic import vocabulary
    from tsq.models.tiny import build_word_tokenizer
    from tsq.training.lm import CausalLMModule, collate_pairs, encode_pairs

    L.seed_everything(0, verbose=False)
    tok = build_word_tokenizer(vocabulary())
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=64,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
        )
    )
    rng = random.Random(0)
    prompts = [" ".join(rng.choice(["1", "2", "+3", "-4"]) for _ in range(rng.randint(1, 6))) for _ in range(64)]
    examples = encode_pairs(tok, prompts, ["<think> 3 ; </think> 3"] * len(prompts))
    loader = DataLoader(examples, batch_size=16, shuffle=True, collate_fn=lambda b: collate_pairs(b, tok.pad_token_id))
    module = CausalLMModule(model, lr=1e-2, weight_decay=0.0, warmup_steps=5, total_steps=120)
    trainer = L.Trainer(
        max_steps=120,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    out = tmp_path_factory.mktemp("micro_model")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def copy_model_dir(tmp_path_factory) -> Path:
    """A real tiny Llama trained to answer ``<think> d ; </think> d`` for a random digit d: its answer
    depends on its reasoning step, so swapping the step moves the continuation's distribution."""
    import lightning as L
    from torch.utils.data import DataLoader
    from transformers import LlamaConfig, LlamaForCausalLM

    from tsq.data.synthetic import vocabulary
    from tsq.models.tiny import build_word_tokenizer
    from tsq.training.lm import CausalLMModule, collate_pairs, encode_pairs

    L.seed_everything(1, verbose=False)
    tok = build_word_tokenizer(vocabulary())
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=64,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
        )
    )
    rng = random.Random(1)
    digits = [str(rng.randrange(10)) for _ in range(512)]
    examples = encode_pairs(tok, ["1 +2 = ?"] * len(digits), [f"<think> {d} ; </think> {d}" for d in digits])
    loader = DataLoader(examples, batch_size=32, shuffle=True, collate_fn=lambda b: collate_pairs(b, tok.pad_token_id))
    module = CausalLMModule(model, lr=3e-3, weight_decay=0.0, warmup_steps=5, total_steps=300)
    trainer = L.Trainer(
        max_steps=300,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    out = tmp_path_factory.mktemp("copy_model")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
