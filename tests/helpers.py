"""Small real models for tests: a random-init Llama over the synthetic world's word vocabulary, and
a few seconds of Lightning training on fixed (prompt, response) pairs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader
from transformers import LlamaConfig, LlamaForCausalLM

from tsq.cache import Artifact, ArtifactStore
from tsq.data.synthetic import vocabulary
from tsq.models.tiny import build_word_tokenizer
from tsq.stages.context import RunContext, SamplerChoice
from tsq.stages.pairs import Pairs
from tsq.training.lm import CausalLMModule, collate_pairs, encode_pairs


def tiny_llama(hidden: int = 32, layers: int = 2, heads: int = 2, max_positions: int = 64):
    """(model, tokenizer): a randomly initialised Llama and the world's word-level tokenizer."""
    tok = build_word_tokenizer(vocabulary())
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    return LlamaForCausalLM(config), tok


def train_and_save(
    model, tok, prompts: list[str], responses: list[str], steps: int, lr: float, batch_size: int, out: Path
) -> Path:
    """Fit the model on the pairs with the project's CausalLMModule and save it as an HF directory."""
    examples = encode_pairs(tok, prompts, responses)
    loader = DataLoader(
        examples, batch_size=batch_size, shuffle=True, collate_fn=lambda b: collate_pairs(b, tok.pad_token_id)
    )
    module = CausalLMModule(model, lr=lr, weight_decay=0.0, warmup_steps=5, total_steps=steps)
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides: list[str], return_hydra_config: bool = False):
    """The app's config composed from `conf/` with these overrides, as `run.py` would (no job started)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=overrides, return_hydra_config=return_hydra_config)


class SharedSamplerChoice(SamplerChoice):
    """A sampler choice over one sampler that tests share: releasing it forgets it without closing it."""

    def release(self) -> None:
        self._live.clear()


def run_context(world, store: ArtifactStore, sampler=None, trainer: dict | None = None) -> RunContext:
    """A RunContext whose sampler factory returns `sampler` (already loaded) for any model directory."""
    choice = SharedSamplerChoice(lambda **_: sampler, {"test_sampler": type(sampler).__name__})
    return RunContext(world=world, store=store, sampler=choice, trainer=trainer or {"accelerator": "cpu", "devices": 1})


def pairs_artifact(path: Path, key: str = "p") -> Pairs:
    """A pairs file (named pairs.jsonl) as the pairs stage's result the training stage takes (no statistics)."""
    assert path.name == "pairs.jsonl", path
    return Pairs(Artifact("pairs", key, path.parent, built=False), {})


# Preference pairs in the synthetic world's words (the micro models' tokenizers know them): a short correct
# chosen trace against a longer, wrong rejected one.
PAIRS = [
    {
        "prompt": "3 +4 = ?",
        "chosen": "<think> 3 +4 = 7 ; </think> 7",
        "rejected": "<think> ok so 3 +4 = 8 ; check 3 +4 = 8 ; </think> 8",
    },
    {
        "prompt": "1 -5 = ?",
        "chosen": "<think> 1 -5 = 6 ; </think> 6",
        "rejected": "<think> well 1 -5 = 2 ; again 2 ; hmm 2 ; </think> 2",
    },
    {
        "prompt": "9 +9 = ?",
        "chosen": "<think> 9 +9 = 8 ; </think> 8",
        "rejected": "<think> now 9 +9 = 7 ; check 9 +9 = 7 ; </think> 7",
    },
    {
        "prompt": "2 +2 = ?",
        "chosen": "<think> 2 +2 = 4 ; </think> 4",
        "rejected": "<think> so 2 +2 = 5 ; again 5 ; </think> 5",
    },
]


ROOT = Path(__file__).resolve().parents[1]
# Set by tests/conftest.py for the test being run: whether it is marked slow (only slow tests start processes).
CURRENT_TEST = {"slow": True}


def start(
    *command: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: int = 900,
) -> subprocess.CompletedProcess:
    """The one way tests start a tsq process: `python <command>` (a script path relative to the repository, such as
    `run.py` or `benchmarks/bench_refine.py`, or `-m <module>`), its output captured. A process start costs about
    18 s of imports on a 2-core machine, so only tests marked `slow` may start one (the fast tier starts none)."""
    if not CURRENT_TEST["slow"]:
        raise RuntimeError("a test that starts a process must be marked @pytest.mark.slow (the fast tier starts none)")
    first = command[0] if command[0] == "-m" else str(ROOT / command[0])
    return subprocess.run(
        [sys.executable, first, *command[1:]],
        cwd=cwd or ROOT,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_py(tmp_path: Path, *overrides: str, run_dir: str = "run", timeout: int = 600) -> subprocess.CompletedProcess:
    """`python run.py <overrides>` with its cache in `tmp_path/cache` and its output in `tmp_path/<run_dir>`."""
    return start(
        "run.py",
        f"hydra.run.dir={tmp_path / run_dir}",
        *overrides,
        cwd=tmp_path,
        env={"TSQ_CACHE_DIR": str(tmp_path / "cache")},
        timeout=timeout,
    )
