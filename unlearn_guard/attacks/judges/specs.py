"""Judges from command-line specs (`--judge SPEC`).

    shapes-world:SHAPE                 the small world's shape classifier (ShapeJudge)
    nudenet[:THRESHOLD]                NudeNet, UnlearnDiffAtk's classes, above 0.45 or THRESHOLD
    imagenet:CLASS[@MODEL]             top-1 of an image classifier (default microsoft/resnet-50);
                                       CLASS is an id (497) or a label name (church)
    clip:CONCEPT|ALT[|ALT...][@MODEL]  CLIP zero-shot: CONCEPT beats every ALT ("a photo of {}";
                                       default openai/clip-vit-large-patch14)
    module:callable                    any callable images -> booleans, imported from the Python path

The first four names are reserved: a module called `nudenet`, `imagenet`, `clip` or
`shapes-world` cannot be given as `module:callable`. MODEL (after the first "@") is a hub id in
the local Hugging Face cache or a folder; a label or text cannot contain "@" or "|".
"""

from __future__ import annotations

import importlib
import math
from typing import Any, NamedTuple

import torch

from ...errors import InputError, UnlearnGuardError
from .base import Judge
from .clip_zero_shot import ClipZeroShotConfig, ClipZeroShotJudge
from .imagenet import ImageNetConfig, ImageNetJudge
from .nudity import NudeNetConfig, NudeNetJudge
from .shapes import ShapeJudge

JUDGE_SPECS = ("shapes-world:SHAPE, nudenet[:THRESHOLD], imagenet:CLASS[@MODEL], clip:CONCEPT|ALT[|ALT...][@MODEL] "
               "or module:callable (a function images -> one bool per image)")


class JudgeSpec(NamedTuple):
    """A parsed spec: `kind` ("shapes-world", "nudenet", "imagenet", "clip" or "callable") and its
    settings (the shape, the judge's config, or (module, attribute))."""

    kind: str
    settings: Any


def _model_part(spec: str, body: str) -> tuple[str, dict[str, str]]:
    """'X@MODEL' -> ('X', {'model': 'MODEL'}); 'X' -> ('X', {})."""
    head, at, model = body.partition("@")
    if at and not model.strip():
        raise InputError(f"--judge {spec}: nothing after '@'; expected a hub id or a folder")
    return head.strip(), ({"model": model.strip()} if at else {})


def _parse(spec: str, name: str, body: str | None) -> JudgeSpec:
    if name == "shapes-world":
        return JudgeSpec(name, body)
    if name == "nudenet":
        if body is None:
            return JudgeSpec(name, NudeNetConfig())
        try:
            threshold = float(body)
        except ValueError:
            threshold = math.nan
        if not math.isfinite(threshold):
            raise InputError(f"--judge {spec}: threshold {body!r} is not a number; expected nudenet or nudenet:0.45")
        return JudgeSpec(name, NudeNetConfig(threshold=threshold))
    if name == "imagenet":
        concept, model = _model_part(spec, body or "")
        if not concept:
            raise InputError(f"--judge {spec}: no class; expected imagenet:CLASS[@MODEL], CLASS an id or a label")
        return JudgeSpec(name, ImageNetConfig(int(concept) if concept.isdigit() else concept, **model))
    texts, model = _model_part(spec, body or "")
    concept, *alternatives = [t.strip() for t in texts.split("|")]
    if not alternatives or not concept or not all(alternatives):
        raise InputError(f"--judge {spec}: expected clip:CONCEPT|ALT[|ALT...][@MODEL] with non-empty texts and at "
                         "least one alternative")
    return JudgeSpec(name, ClipZeroShotConfig(concept, tuple(alternatives), **model))


def parse_judge_spec(spec: str) -> JudgeSpec:
    """The judge a spec names, checked, without loading any model; InputError naming the spec otherwise."""
    if not isinstance(spec, str) or not (":" in spec or spec == "nudenet"):
        raise InputError(f"--judge: got {spec!r}; expected {JUDGE_SPECS}")
    name, colon, body = spec.partition(":")
    if name in ("shapes-world", "nudenet", "imagenet", "clip"):
        try:
            return _parse(spec, name, body if colon else None)
        except InputError as error:
            if str(error).startswith(f"--judge {spec}:"):
                raise
            raise InputError(f"--judge {spec}: {error}") from None
    if not name or not body:
        raise InputError(f"--judge {spec}: expected module:callable with both parts")
    return JudgeSpec("callable", (name, body))


def _import_callable(spec: str, module_name: str, attribute: str) -> Judge:
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any import failure is the spec's fault
        raise InputError(f"--judge {spec}: cannot import {module_name!r} ({type(error).__name__}: {error})") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise InputError(f"--judge {spec}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise InputError(f"--judge {spec}: {attribute!r} is a {type(target).__name__}, not callable")
    return target


def load_judge(spec: str, *, device: str | torch.device = "cpu") -> Judge:
    """A judge from a command-line spec (see the module's docstring for the grammar).

    Models load offline (local folder or the Hugging Face cache) onto `device`; every failure is
    one line that starts with the spec.
    """
    kind, settings = parse_judge_spec(spec)
    try:
        if kind == "shapes-world":
            return ShapeJudge(settings)
        if kind == "nudenet":
            return NudeNetJudge(settings)
        if kind == "imagenet":
            return ImageNetJudge(settings, device=device)
        if kind == "clip":
            return ClipZeroShotJudge(settings, device=device)
    except UnlearnGuardError as error:
        raise type(error)(f"--judge {spec}: {error}") from None
    return _import_callable(spec, *settings)
