"""`--set key=value`: change any ProbeConfig field from the command line, found by reflection.

Keys are dotted paths through the nested dataclasses (`inversion.num_steps=20`,
`inversion.regularization.enabled=false`, `distance=w1`, `batch_size=none`). The value is parsed
against the field's type annotation (bool, int, float, str, Literal choices, Optional, tuples),
so a field added to ProbeConfig later is settable with no change here. The dataclasses'
own validation then checks the value; every problem is an InputError naming key and value.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal, Union

from ..config import ProbeConfig
from ..errors import InputError

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_NONE = ("none", "null")
_NOT_SETTABLE = {"preset": "choose it with --preset", "progress": "use --quiet"}


def describe(annotation: Any) -> str:
    """A short human description of a type annotation, for error messages."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("none" if a is type(None) else describe(a) for a in args)
    if origin is tuple:
        return "a list like " + ",".join(describe(a) for a in args if a is not Ellipsis)
    return {bool: "true or false", int: "an int", float: "a number", str: "a string"}.get(annotation, str(annotation))


def coerce(raw: str, annotation: Any, key: str) -> Any:
    """`raw` (command-line text) as a value of type `annotation`; InputError naming key otherwise."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    fail = InputError(f"--set {key}={raw}: expected {describe(annotation)}")
    text = raw.strip()
    if origin in (Union, types.UnionType):
        if type(None) in args and text.lower() in _NONE:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(raw, option, key)
            except InputError:
                continue
        raise fail
    if origin is Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise fail
    if origin is tuple:
        inner = text.strip("()[] ")
        items = [part.strip() for part in inner.split(",")] if inner else []
        element_types = [a for a in args if a is not Ellipsis]
        if Ellipsis not in args and len(items) != len(element_types):
            raise fail
        return tuple(coerce(item, element_types[min(i, len(element_types) - 1)], key) for i, item in enumerate(items))
    if annotation is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise fail
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            raise fail from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise fail from None
    if annotation is str:
        return raw
    try:
        return json.loads(text)
    except ValueError:
        return raw


def _set_path(obj: Any, path: list[str], raw: str, key: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    name = path[0]
    if name not in fields:
        raise InputError(f"--set {key}: {type(obj).__name__} has no field {name!r}; known fields: {', '.join(sorted(fields))}")
    if isinstance(obj, ProbeConfig) and name in _NOT_SETTABLE:
        raise InputError(f"--set {key}: not settable here; {_NOT_SETTABLE[name]}")
    current = getattr(obj, name)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise InputError(f"--set {key}: {name!r} is a single value, not a group of fields")
        value = _set_path(current, path[1:], raw, key)
    else:
        if dataclasses.is_dataclass(current):
            inner = ", ".join(f.name for f in dataclasses.fields(current))
            raise InputError(f"--set {key}: {name!r} is a group; set one of its fields ({inner}), e.g. {key}.<field>=...")
        value = coerce(raw, typing.get_type_hints(type(obj))[name], key)
    try:
        if isinstance(obj, ProbeConfig):
            return obj.replace(**{name: value})  # relabels the preset "custom" when the science changes
        return dataclasses.replace(obj, **{name: value})
    except InputError as error:
        raise InputError(f"--set {key}={raw}: {error}") from None
    except (TypeError, ValueError) as error:
        raise InputError(f"--set {key}={raw}: {error}") from None


def apply_settings(config: ProbeConfig, assignments: list[str] | None) -> ProbeConfig:
    """`config` with every `key=value` of `assignments` applied in order."""
    for text in assignments or []:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set: got {text!r}; expected key=value, e.g. inversion.num_steps=20 or distance=w1")
        config = _set_path(config, key.split("."), raw, key)
    return config


def settable_keys(config: ProbeConfig | None = None) -> list[str]:
    """Every dotted key `--set` accepts (for --help and error messages)."""
    def walk(obj: Any, prefix: str) -> list[str]:
        keys = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                keys += walk(value, f"{prefix}{f.name}.")
            elif not (isinstance(obj, ProbeConfig) and f.name in _NOT_SETTABLE):
                keys.append(prefix + f.name)
        return keys

    return walk(config or ProbeConfig(), "")
