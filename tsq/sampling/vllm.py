"""`sampler=vllm`: in-process `vllm.LLM` with prefix caching and tensor parallelism, for GPU nodes.

Kept thin on purpose: vLLM cannot run on CPU-only machines, so everything that can be checked without it
(the request settings and the mapping of vLLM's outputs onto `Completion`) lives in the two pure functions
below and is tested; the class only calls vLLM. KL scoring in refinement needs full next-token
distributions, which vLLM does not return, so `.model` loads the HF model next to it on first use.
"""

from __future__ import annotations

from pathlib import Path

from tsq.sampling.base import Completion, SamplingParams


def vllm_request(params: SamplingParams, stop: list[str] | None = None) -> dict:
    """Keyword arguments of `vllm.SamplingParams` equal to tsq's settings (stop strings kept in the output,
    special tokens kept in the text, as the HF backend does)."""
    request = {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_new_tokens,
        "seed": params.seed,
        "skip_special_tokens": False,
    }
    if stop:
        request |= {"stop": list(stop), "include_stop_str_in_output": True}
    return request


def to_completion(text: str, token_ids, finish_reason: str | None, stop_reason, eos_token_id: int | None) -> Completion:
    """One vLLM `CompletionOutput` as a `Completion`: vLLM reports EOS and stop strings both as "stop"
    (stop_reason None for EOS); an EOS token is not part of the completion."""
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
    return Completion(text=text, token_ids=tuple(ids), finish_reason=reason)


class VLLMSampler:
    """The `Sampler` interface over `vllm.LLM` (see conf/sampler/vllm.yaml for the settings)."""

    def __init__(
        self,
        model_path: str | Path,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        dtype: str = "bfloat16",
        max_model_len: int | None = None,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        trust_remote_code: bool = False,
        progress: bool = True,
        revision: str | None = None,
    ) -> None:
        try:
            from vllm import LLM
        except ImportError:
            raise ImportError("sampler=vllm needs a GPU machine and `pip install 'tsq[vllm]'`") from None
        self.model_path, self.progress, self.trust_remote_code = str(model_path), progress, trust_remote_code
        self.revision = revision
        self.llm = LLM(
            model=self.model_path,
            revision=revision,
            tokenizer_revision=revision,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            seed=seed,
            trust_remote_code=trust_remote_code,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._hf_model = None

    @property
    def model(self):
        """The HF model (on the GPU when there is one) for KL scoring."""
        if self._hf_model is None:
            import torch
            from transformers import AutoModelForCausalLM

            device = "cuda" if torch.cuda.is_available() else "cpu"
            self._hf_model = AutoModelForCausalLM.from_pretrained(
                self.model_path, dtype=torch.bfloat16, trust_remote_code=self.trust_remote_code, revision=self.revision
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
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        if not prompt_ids:
            return []
        request = VLLMSamplingParams(**vllm_request(params, stop))
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids], request, use_tqdm=self.progress
        )
        eos = self.tokenizer.eos_token_id
        return [
            [to_completion(o.text, o.token_ids, o.finish_reason, o.stop_reason, eos) for o in out.outputs]
            for out in outputs
        ]
