"""One exception family for unlearn_guard.

Every error raised on bad input names the argument (or file), the value received and what was
expected, so that a user never has to read a stack trace from inside torch. All of them derive
from `UnlearnGuardError`, which derives from `ValueError` so that generic input handling still
catches them.
"""

from __future__ import annotations


class UnlearnGuardError(ValueError):
    """Base class of every error unlearn_guard raises on purpose."""


class InputError(UnlearnGuardError):
    """Bad user input: images, prompts, folders, arguments or config values."""


class ImageLoadError(InputError):
    """An image file or object could not be read or converted."""


class ModelError(UnlearnGuardError):
    """A model, its parts or its weights are inconsistent or cannot be loaded."""


class StateDictMismatchError(ModelError):
    """A state dict's keys do not match the module it is loaded into."""


class NonFiniteError(UnlearnGuardError):
    """NaN or Inf appeared in a tensor; the message says where (image, timestep, stage)."""


class InsufficientDataError(InputError):
    """Too few samples for a statistic (d_N needs at least 2 images in E and in R)."""
