"""Reasoning-step segmentation, shared by metrics and (later) refinement."""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def reasoning_part(text: str, think_open: str = THINK_OPEN, think_close: str = THINK_CLOSE) -> str:
    """The thinking text: before the last `think_close` (all of it when absent), minus `think_open`."""
    head, sep, _ = text.rpartition(think_close)
    body = head if sep else text
    _, sep, after = body.partition(think_open)
    return after if sep else body


def split_steps(text: str, delimiter: str, think_open: str = THINK_OPEN, think_close: str = THINK_CLOSE) -> list[str]:
    """Non-empty reasoning steps of a response, split on `delimiter` (which is dropped)."""
    if not delimiter:
        raise ValueError("step delimiter must be a non-empty string")
    parts = reasoning_part(text, think_open, think_close).split(delimiter)
    return [p.strip() for p in parts if p.strip()]
