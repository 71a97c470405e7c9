"""`data/template=`: how a benchmark problem becomes the text a chat model is conditioned on.

The messages go through the tokenizer's own chat template (`apply_chat_template`), so one config works
for R1-Distill (`<｜User｜>…<｜Assistant｜>`), Qwen2.5-Instruct and SmolLM2 (ChatML) alike. Placeholders are
filled with `str.replace`, not `str.format`, so the `\\boxed{}` braces in an instruction stay literal
(the TL;DR code's `{{}}` bug, experiments/paper_notes.md §2.3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

from dataclasses import dataclass

from tsq.text import THINK_OPEN


@dataclass
class PromptTemplate:
    """`system`: an optional system message. `user`: the math user message ({question}). `code_stdin` /
    `code_functional`: the code user message for stdin programs and for starter code ({question},
    {starter_code}). `generation_prefix`: text the assistant turn starts with (e.g. "<think>\\n"), added
    unless the chat template already ends with it. `use_chat_template: false` renders plain text instead."""

    name: str
    user: str = "{question}"
    system: str | None = None
    code_stdin: str = (
        "{question}\n\nRead the inputs from stdin, solve the problem and write the answer to stdout. "
        "Put your Python 3 program in one ```python code block."
    )
    code_functional: str = (
        "{question}\n\nComplete the following starter code and put the whole solution in one ```python code block."
        "\n```python\n{starter_code}\n```"
    )
    generation_prefix: str = ""
    use_chat_template: bool = True
    # A reasoning template: the reply thinks first and closes its thinking block before the answer. A response
    # whose block never closed is graded wrong (its text is unfinished reasoning, whatever `\boxed{}` it holds),
    # as lighteval and lm-evaluation-harness do. None: a reasoning template when generation_prefix opens <think>.
    thinking: bool | None = None

    def __post_init__(self) -> None:
        for key in ("user", "code_stdin", "code_functional"):
            if "{question}" not in getattr(self, key):
                raise ValueError(f"data.template.{key} must contain {{question}}, got {getattr(self, key)!r}")

    @property
    def reasoning(self) -> bool:
        return self.thinking if self.thinking is not None else THINK_OPEN in self.generation_prefix

    def user_message(self, question: str, kind: str = "math", starter_code: str = "") -> str:
        if kind == "code":
            body = self.code_functional if starter_code.strip() else self.code_stdin
            return body.replace("{question}", question).replace("{starter_code}", starter_code)
        return self.user.replace("{question}", question)

    def messages(self, question: str, kind: str = "math", starter_code: str = "") -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": self.user_message(question, kind, starter_code)}]

    def render(
        self, tokenizer: PreTrainedTokenizerBase, question: str, kind: str = "math", starter_code: str = ""
    ) -> str:
        """The full prompt text, special tokens included (so it is tokenised with add_special_tokens=False)."""
        text = self._messages_text(tokenizer, self.messages(question, kind, starter_code))
        return text + self.added_prefix(text)

    def added_prefix(self, text: str) -> str:
        """The generation prefix this template appends to a rendered chat `text` ("" where the chat template
        already ends with it): in a conversation, the start of the assistant's reply."""
        return self.generation_prefix if self.generation_prefix and not text.endswith(self.generation_prefix) else ""

    def response_prefix(self, tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
        """What `render` adds after the chat template's own rendering of `messages`."""
        return self.added_prefix(self._messages_text(tokenizer, messages))

    def _messages_text(self, tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
        if not self.use_chat_template:
            return "\n\n".join(m["content"] for m in messages) + "\n\n"
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"data.template={self.name}: the tokenizer has no chat template; "
                "set data.template.use_chat_template=false to use plain text"
            )
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
