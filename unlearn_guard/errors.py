"""One exception family for unlearn_guard, and the exit codes the command line maps it to.

Every error raised on bad input names the argument (or file), the value received and what was
expected, so that a user never has to read a stack trace from inside torch. All of them derive
from `UnlearnGuardError`, which derives from `ValueError` so that generic input handling still
catches them. Each class carries the exit code the command line returns for it (`exit_code`),
so the table below is the only place that maps failures to codes.
"""

from __future__ import annotations

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_BAD_INPUT = 2
EXIT_PROBE_FAILED = 3
EXIT_INCONCLUSIVE = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0  every gated checkpoint passes (probe/report: done)
  1  at least one checkpoint still remembers (memory score's upper end > --max-memory, or
     d_N's lower end < --min-dn, or mean PSNR > --max-psnr; with --attacks, also the best-of-M
     memory score's upper end > --max-multi-memory, the concept-inversion success rate's
     Wilson upper end > --max-attack-success, or the adversarial prompts' ASR's Wilson upper
     end > --max-asr), or lost utility (its utility ratio to the base < --min-utility)
  2  bad usage or bad input: missing/empty folders, bad prompts.csv, undecodable images, weights
     that do not match the model or hold NaN/Inf, pickled weights with non-tensor objects,
     unknown preset or --set key, bad threshold, missing device, an output that cannot be written
  3  the probe itself failed (out of memory at batch size 1, NaN/Inf in a latent, a crash)
  4  inconclusive: no checkpoint failed, but the probe cannot read memory in at least one: its
     memory score is undefined (e.g. its seeds of known content are not typical N(0, I) draws)
     or its negative control (images no model can have learned) reads as remembered
  130  interrupted (Ctrl-C): finished checkpoints are cached; rerun with --resume
"""


class UnlearnGuardError(ValueError):
    """Base class of every error unlearn_guard raises on purpose: bad input unless a subclass says otherwise."""

    exit_code: int = EXIT_BAD_INPUT


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
    """NaN or Inf appeared in a tensor; the message says where (image, timestep, stage). The probe failed."""

    exit_code = EXIT_PROBE_FAILED


class InsufficientDataError(InputError):
    """Too few samples for a statistic (d_N needs at least 2 images in E and in R)."""


class ProbeFailure(UnlearnGuardError):
    """The probe itself could not finish (e.g. out of memory even at batch size 1)."""

    exit_code = EXIT_PROBE_FAILED


def exit_code_of(error: BaseException) -> int:
    """The command line's exit code for `error`: its own for our errors, 3 (the probe failed) for a crash."""
    code = getattr(error, "exit_code", None)  # also an error of ours that is not an UnlearnGuardError
    return code if isinstance(code, int) and not isinstance(code, bool) else EXIT_PROBE_FAILED


def one_line(error: BaseException | str) -> str:
    """An error's message folded onto one line (the command line prints exactly one)."""
    return " ".join(str(error).split())
