"""Config values checked against the types their classes declare, before anything is built.

A command-line override arrives as whatever YAML makes of it (`eval.n_samples=abc` is the string
"abc"); without this check it would surface later as a TypeError inside some comparison, naming no
key. Each config group is checked against its `_target_` class (dataclass fields, nested ones too, or
the annotated parameters of `__init__`), and a wrong type is a ValueError naming the full key, the
expected type and the value.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

SIMPLE = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _matches(value: Any, annotation: Any) -> bool | None:
    """Whether `value` fits `annotation`; None when the annotation is not one this check understands."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_matches(value, arg) for arg in typing.get_args(annotation)]
        return None if all(v is None for v in verdicts) else any(v for v in verdicts)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        integral_float = isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53
        return (isinstance(value, int) and not isinstance(value, bool)) or integral_float
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple) or annotation in (list, tuple):
        return isinstance(value, (list, tuple, ListConfig))
    if origin is dict or annotation is dict:
        return isinstance(value, (dict, DictConfig))
    return None


def _describe(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    words = [SIMPLE.get(a, getattr(a, "__name__", str(a))) for a in args]
    optional = type(None) in typing.get_args(annotation)
    return " or ".join(words) + (" (or null)" if optional else "")


def declared_types(cls: type) -> dict[str, Any]:
    """Field types of a dataclass, else the annotated parameters of the class's `__init__`."""
    try:
        if dataclasses.is_dataclass(cls):
            hints = typing.get_type_hints(cls)
            return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name in hints}
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):  # an annotation that names something not importable here
        return {}
    return {name: hint for name, hint in hints.items() if name != "return"}


def check_fields(cls: type, node: Any, where: str) -> None:
    """Raise ValueError for the first value of `node` (a mapping of settings) whose type does not fit the
    declared type of the same field or parameter of `cls`; `where` is the node's config key."""
    if not isinstance(node, (dict, DictConfig)):
        return
    for name, annotation in declared_types(cls).items():
        if name not in node:
            continue
        value = node[name]
        key = f"{where}.{name}"
        if dataclasses.is_dataclass(annotation):
            check_fields(annotation, value, key)
            continue
        if isinstance(value, DictConfig | ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
        check_value(value, annotation, key)
        if _wants_int(annotation) and isinstance(value, float):
            value = int(value)  # `eval.n_samples=16.0` is 16; a float left in would fail later in range() or torch
            node[name] = value
        if (name == "seed" or name.endswith("_seed")) and isinstance(value, int) and not 0 <= value < SEED_LIMIT:
            raise ValueError(f"{key} must be a whole number from 0 to 2**32 - 1, got {value}")


SEED_LIMIT = 2**32  # numpy's and Python's random seeding accept this range; torch's more


def _wants_int(annotation: Any) -> bool:
    """Whether an int fits `annotation` and a float alone does not (int, or int | None)."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    return annotation is int or (int in args and float not in args)


def check_value(value: Any, annotation: Any, key: str) -> None:
    """`value` against `annotation`, and the items of a `list[X]` / values of a `dict[K, V]` against theirs."""
    if _matches(value, annotation) is False:
        raise ValueError(f"{key} must be {_describe(annotation)}, got {value!r}")
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            if typing.get_origin(arm) in (list, tuple, dict) and _matches(value, arm):
                check_value(value, arm, key)
        return
    if origin in (list, tuple) and len(args) == 1 and isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_value(item, args[0], f"{key}[{i}]")
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        for k, item in value.items():
            check_value(item, args[1], f"{key}.{k}")


def check_group(cfg: DictConfig, group: str) -> None:
    """Check the config group `group` of `cfg` against the declared types of its `_target_` class."""
    node = cfg.get(group)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    try:
        cls = get_class(node["_target_"])
    except (ImportError, AttributeError, ValueError):
        return  # instantiation reports an unknown target with its own message
    check_fields(cls, node, group)
