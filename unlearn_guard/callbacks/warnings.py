"""`ProbeWarning` and `warn_probe`: how the callbacks report a problem without ending training.

A warning names the line of the user's code that led to it (their training loop,
`trainer.train()` or `trainer.fit()`), not a line inside unlearn_guard or the framework.
"""

from __future__ import annotations

import os
import sys
import warnings

# Frames skipped when a ProbeWarning names its caller: this package, and the frameworks whose
# loops call the adapters (so a warning points at the user's loop, trainer.train() or .fit()).
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_FRAMEWORKS = ("transformers", "lightning", "pytorch_lightning", "accelerate", "torch")


class ProbeWarning(UserWarning):
    """A probe failed during training; the monitor recorded it and training went on."""


def warn_probe(message: str) -> None:
    """`warnings.warn(message, ProbeWarning)` attributed to the first frame outside unlearn_guard
    and the training frameworks: the line of the user's code that led here."""
    prefixes = [_PACKAGE_DIR]
    for name in _FRAMEWORKS:
        file = getattr(sys.modules.get(name), "__file__", None)
        if file:
            prefixes.append(os.path.dirname(os.path.abspath(file)) + os.sep)
    frame, level = sys._getframe(0), 1  # level 1 is this function, as warnings.warn counts
    while frame is not None and frame.f_code.co_filename.startswith(tuple(prefixes)):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, ProbeWarning, stacklevel=level)
