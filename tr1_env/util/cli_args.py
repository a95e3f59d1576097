"""Dataclass configs mirrored 1:1 as argparse flags (``field(metadata={"help": ...})`` becomes ``--flag``)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def _base(tp) -> tuple[Any, bool]:
    """Strip ``Optional``; return (type, is_optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, prefix: str = "", skip: tuple[str, ...] = (),
                       group: argparse._ActionsContainer | None = None) -> None:
    """One flag per field (but ``skip``): ``snake_case`` -> ``--snake-case``; bools get ``--x/--no-x``;
    tuples take several values; a field whose metadata has ``const`` takes an optional value (bare: ``const``).
    A field that is itself a dataclass is a group of settings: its fields are flags as if they were the outer
    class's own (same names, no prefix added), listed under the field's name in ``--help``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, _ = _base(hints[f.name])
        if dataclasses.is_dataclass(tp):
            section = parser.add_argument_group(f.name, f.metadata.get("help"))
            add_dataclass_args(parser, tp, prefix, skip, section)
            continue
        flag = "--" + prefix + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        kw: dict[str, Any] = {"dest": prefix.replace("-", "_") + f.name, "help": f"{help_} (default: {default})"
                              if not required else help_}
        target = group if group is not None else parser
        if tp is bool:
            target.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, **kw)
            continue
        if typing.get_origin(tp) is tuple:
            inner = typing.get_args(tp)[0]
            kw.update(nargs="+", type=inner if inner in (int, float, str) else str)
        elif tp in (int, float, str):
            kw["type"] = tp
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if "const" in f.metadata:  # a bare --flag means this value (--anonymize = --anonymize strict)
            kw.update(nargs="?", const=f.metadata["const"])
        target.add_argument(flag, required=required, default=default, **kw)


def flat_dict(instance) -> dict[str, Any]:
    """The settings of a dataclass by flag name, a group's fields inlined where the group is: the layout of a
    config file that predates the groups."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        out.update(flat_dict(value) if dataclasses.is_dataclass(value) else {f.name: value})
    return out


def replaced(instance: T, settings: dict[str, Any]) -> T:
    """``instance`` with ``settings`` changed, named as their flags are (a group may also be given whole): each
    group takes its own fields' names; a name no field has is a TypeError."""
    changes, left = {}, dict(settings)
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        group = dataclasses.is_dataclass(value)
        if f.name in left and (not group or isinstance(left[f.name], type(value))):
            changes[f.name] = left.pop(f.name)
        elif group and (mine := {k: left.pop(k) for k in list(left) if k in flat_dict(value)}):
            changes[f.name] = replaced(value, mine)
    if left:
        raise TypeError(f"{type(instance).__name__} has no setting {', '.join(sorted(left))}")
    return dataclasses.replace(instance, **changes)


def from_args(cls: type[T], ns: argparse.Namespace, prefix: str = "", skip: tuple[str, ...] = ()) -> T:
    """Build the dataclass back from parsed flags (tuples restored from lists, groups rebuilt as their dataclass;
    ``skip`` keeps its defaults)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = _base(hints[f.name])[0]
        if dataclasses.is_dataclass(tp):
            values[f.name] = from_args(tp, ns, prefix, skip)
            continue
        v = getattr(ns, prefix.replace("-", "_") + f.name)
        if isinstance(v, list) and typing.get_origin(tp) is tuple:
            v = tuple(v)
        values[f.name] = v
    return cls(**values)
