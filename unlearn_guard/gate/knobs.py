"""`--set key=value`: change any ProbeConfig field from the command line, found by reflection;
`--adv-set key=value` does the same for the adversarial-prompt attack's `AdversarialPromptConfig`.

Keys are dotted paths through the nested dataclasses (`inversion.num_steps=20`,
`inversion.regularization.enabled=false`, `distance=w1`, `batch_size=none`). The value is parsed
against the field's type annotation (bool, int, float, str, Literal choices, Optional, tuples),
so a field added to a config later is settable with no change here. The dataclasses'
own validation then checks the value; every problem is an InputError naming flag, key and value.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal, Union

from ..attacks.adversarial_config import AdversarialPromptConfig
from ..config import ProbeConfig
from ..errors import InputError

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_NONE = ("none", "null")
_NOT_SETTABLE = {"preset": "choose it with --preset", "progress": "use --quiet"}
# The gate sets these itself: the seed is every attack's (--seed), images are kept for --thumbnails.
_ADVERSARIAL_NOT_SETTABLE = {"preset": "choose it with --adv-preset", "seed": "use --seed (the seed of every attack)",
                             "keep_images": "the gate keeps the judged images for --thumbnails"}


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


def coerce(raw: str, annotation: Any, key: str, flag: str = "--set") -> Any:
    """`raw` (command-line text) as a value of type `annotation`; InputError naming flag and key otherwise."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    fail = InputError(f"{flag} {key}={raw}: expected {describe(annotation)}")
    text = raw.strip()
    if origin in (Union, types.UnionType):
        if type(None) in args and text.lower() in _NONE:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(raw, option, key, flag)
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
        return tuple(coerce(item, element_types[min(i, len(element_types) - 1)], key, flag)
                     for i, item in enumerate(items))
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


def _set_path(obj: Any, path: list[str], raw: str, key: str, flag: str,
              not_settable: dict[str, str] | None) -> Any:
    """`obj` with the field at `path` set from `raw`; `not_settable` (top level only) names the
    fields the flag refuses and what to use instead."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    name = path[0]
    if name not in fields:
        raise InputError(f"{flag} {key}: {type(obj).__name__} has no field {name!r}; known fields: {', '.join(sorted(fields))}")
    if not_settable and name in not_settable:
        raise InputError(f"{flag} {key}: not settable here; {not_settable[name]}")
    current = getattr(obj, name)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise InputError(f"{flag} {key}: {name!r} is a single value, not a group of fields")
        value = _set_path(current, path[1:], raw, key, flag, None)
    else:
        if dataclasses.is_dataclass(current):
            inner = ", ".join(f.name for f in dataclasses.fields(current))
            raise InputError(f"{flag} {key}: {name!r} is a group; set one of its fields ({inner}), e.g. {key}.<field>=...")
        value = coerce(raw, typing.get_type_hints(type(obj))[name], key, flag)
    try:
        if not_settable is not None:  # the top level: the config's own replace relabels the preset "custom"
            return obj.replace(**{name: value})
        return dataclasses.replace(obj, **{name: value})
    except InputError as error:
        raise InputError(f"{flag} {key}={raw}: {error}") from None
    except (TypeError, ValueError) as error:
        raise InputError(f"{flag} {key}={raw}: {error}") from None


def _apply(config: Any, assignments: list[str] | None, flag: str, not_settable: dict[str, str], example: str) -> Any:
    for text in assignments or []:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"{flag}: got {text!r}; expected key=value, e.g. {example}")
        config = _set_path(config, key.split("."), raw, key, flag, not_settable)
    return config


def apply_settings(config: ProbeConfig, assignments: list[str] | None) -> ProbeConfig:
    """`config` with every `key=value` of `assignments` (`--set`) applied in order."""
    return _apply(config, assignments, "--set", _NOT_SETTABLE, "inversion.num_steps=20 or distance=w1")


def apply_adversarial_settings(config: AdversarialPromptConfig, assignments: list[str] | None) -> AdversarialPromptConfig:
    """`config` with every `key=value` of `assignments` (`--adv-set`) applied in order."""
    return _apply(config, assignments, "--adv-set", _ADVERSARIAL_NOT_SETTABLE, "timesteps=50,150 or steps_per_timestep=5")


def settable_keys(config: ProbeConfig | AdversarialPromptConfig | None = None) -> list[str]:
    """Every dotted key `--set` (or, for an AdversarialPromptConfig, `--adv-set`) accepts."""
    config = config or ProbeConfig()
    refused = _ADVERSARIAL_NOT_SETTABLE if isinstance(config, AdversarialPromptConfig) else _NOT_SETTABLE

    def walk(obj: Any, prefix: str) -> list[str]:
        keys = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                keys += walk(value, f"{prefix}{f.name}.")
            elif not (obj is config and f.name in refused):
                keys.append(prefix + f.name)
        return keys

    return walk(config, "")
