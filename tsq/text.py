"""All parsing of response text: the thinking block, the answer after it, and reasoning steps.

A reasoning response is ``<think> step DELIM step DELIM ... </think> answer``. Models may omit the
opening tag (R1-Distill's chat template writes it into the prompt) or never close the block (cut at
max_new_tokens); every function below says what it returns then.
"""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def reasoning_part(text: str, think_open: str = THINK_OPEN, think_close: str = THINK_CLOSE) -> str:
    """The thinking text: before the last `think_close` (all of it when absent), minus `think_open`."""
    head, sep, _ = text.rpartition(think_close)
    body = head if sep else text
    _, sep, after = body.partition(think_open)
    return after if sep else body


def answer_part(text: str, think_close: str = THINK_CLOSE) -> str:
    """What follows the last `think_close` (the whole text when there is none: a non-reasoning answer)."""
    _, sep, after = text.rpartition(think_close)
    return after if sep else text


def split_steps(text: str, delimiter: str, think_open: str = THINK_OPEN, think_close: str = THINK_CLOSE) -> list[str]:
    """Non-empty reasoning steps of a response, split on `delimiter` (which is dropped)."""
    if not delimiter:
        raise ValueError("step delimiter must be a non-empty string")
    parts = reasoning_part(text, think_open, think_close).split(delimiter)
    return [p.strip() for p in parts if p.strip()]


def step_edits(original: str, refined: str, delimiter: str) -> list[dict[str, str]]:
    """The reasoning steps refinement changed, in order: `{"before": step, "after": its replacement}` ("" for
    a step removed or added), aligned by difflib so unchanged steps are left out."""
    import difflib

    before, after = split_steps(original, delimiter), split_steps(refined, delimiter)
    edits = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        old, new = before[i1:i2], after[j1:j2]
        for k in range(max(len(old), len(new))):
            edits.append({"before": old[k] if k < len(old) else "", "after": new[k] if k < len(new) else ""})
    return edits


def utf8_text(text: str, what: str) -> str:
    """`text` unchanged, or a ValueError naming `what` when it cannot be written as UTF-8 (a lone surrogate from a
    JSON escape): refused where it is read, not where a program or a tokenizer later trips on it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{what} cannot be written as UTF-8 ({err.reason} at character {err.start})") from None
    return text
