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


class NonFiniteWeightsError(ModelError):
    """The model's own weights (or a weights file) hold NaN or Inf; the message names the tensors.

    A `ModelError`, not a `NonFiniteError`: the weights are at fault, not the images, and it is
    raised before any inversion (at load time for a file, by `probe` for a model in memory).
    """


class OutputError(UnlearnGuardError, OSError):
    """A result could not be written (unwritable or read-only folder, a file in the way, a full disk).

    Also an `OSError`, so code that handles failed writes as OSError keeps working.
    """


class NonFiniteError(UnlearnGuardError):
    """NaN or Inf appeared in a tensor; the message says where (image, timestep, stage)."""


class InsufficientDataError(InputError):
    """Too few samples for a statistic (d_N needs at least 2 images in E and in R)."""
