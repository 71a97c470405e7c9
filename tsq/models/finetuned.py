"""`model=smollm2_world`: a pretrained model fine-tuned here on a synthetic world's teacher traces.

The tables run on `model=tiny`, a 0.9M-parameter Llama pretrained from scratch on the world. To see whether a
verdict is an artefact of that model, the same world can be learnt by a real pretrained model (its BPE tokenizer,
its pretrained weights): `base` is any built `model=` source (SmolLM2-135M from its GGUF file by default), trained
on the teacher's traces by the same rule and loop as the tiny model (`tsq.models.tiny`: fresh problems, never a
dev or test prompt; loss on the responses), and stored as the `base_model` artifact, keyed on the world, the base's
own key material and the fine-tuning settings.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightning as L

from tsq.cache import world_key
from tsq.data.base import ProblemSource, Teacher
from tsq.models.base import ModelHandle
from tsq.models.tiny import Pretraining, check_teacher_style, fit_on_traces, teacher_corpus
from tsq.training.lm import encode_pairs


@dataclass
class TeacherFineTunedModel:
    """A `base` model source fine-tuned on the world's teacher traces (`pretrain`: steps, batch, lr, ...)."""

    name: str
    base: Any  # a ModelSource that builds its model (Hydra instantiates it from its own `_target_`)
    pretrain: Pretraining = field(default_factory=Pretraining)
    accelerator: str = "cpu"
    trust_remote_code: bool = False
    teacher_style: str = "default"
    artifact: ClassVar[str] = "base_model"  # (tsq.stages.base_model)

    def __post_init__(self) -> None:
        if not isinstance(self.pretrain, Pretraining):
            self.pretrain = Pretraining(**dict(self.pretrain))
        check_teacher_style(self.teacher_style)
        if getattr(self.base, "artifact", None) is None:
            # (an existing directory or hub id would be read at build time, outside any key: not supported)
            raise ValueError(f"model.base must be a model source that builds its model, got {self.base!r}")

    def key_material(self) -> dict:
        return {
            "base": {"name": self.base.name, "artifact": self.base.artifact, **self.base.key_material()},
            "fine_tune": asdict(self.pretrain),
            "teacher_style": self.teacher_style,
        }

    def key_inputs(self, world: ProblemSource) -> dict[str, str]:
        if not isinstance(world, Teacher):
            raise ValueError(
                f"model={self.name} is fine-tuned on a synthetic world's teacher; data={world.name} has none"
            )
        return {"world": world_key(world), **self.base.key_inputs(world)}

    def existing(self) -> ModelHandle:
        raise TypeError(f"model={self.name} is built (fine-tuned) by the base_model stage, not found")

    def build(self, world: ProblemSource, out_dir: Path) -> None:
        """Build the base model into a scratch folder, fine-tune it on the teacher's traces, save into `out_dir`."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        start = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=out_dir.parent) as scratch:
            self.base.build(world, Path(scratch))
            kwargs = {"trust_remote_code": self.trust_remote_code}
            tokenizer = AutoTokenizer.from_pretrained(scratch, **kwargs)
            L.seed_everything(self.pretrain.seed, verbose=False)
            model = AutoModelForCausalLM.from_pretrained(scratch, **kwargs)
        tokenizer.padding_side = "left"  # (batched generation)
        examples = encode_pairs(tokenizer, *teacher_corpus(world, self.pretrain, self.teacher_style))
        fit_on_traces(model, tokenizer, examples, self.pretrain, self.accelerator, out_dir, "fine-tuning", start)
