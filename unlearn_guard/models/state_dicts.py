"""Reading weight files safely: tensors only, one clear line for every failure.

`read_state_dict` opens `.safetensors` or torch files (`weights_only=True`: nothing but tensors and
plain containers is ever unpickled), unwraps a training script's `{"state_dict": ...}` or
`{"model": ...}`, flattens nested dicts of tensors (`{"unet": {...}}`, `{"unet.x.to_k": {"weight": t}}`)
into dotted keys, and refuses NaN or Inf. `overlay` copies a (partial) state dict into a module
after checking that every key exists there with the same shape.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import InputError, ModelError, NonFiniteWeightsError, StateDictMismatchError, one_line
from .checks import listing, non_finite_tensors

PathLike = str | os.PathLike

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES
MAX_LISTED = 10  # keys listed per kind of mismatch; SD's UNet has 686 tensors
MAX_DEPTH = 4  # nesting levels flattened: {"unet": {"x.to_k": {"weight": t}}} is 3
# Lightning and training scripts put bookkeeping beside the weights; none of it is a tensor we load.
_WRAPPERS = ("state_dict", "model")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def existing_file(path: PathLike, argument: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{argument}: file {str(file)!r} does not exist")
    return file


def first(items: list[str], limit: int = MAX_LISTED) -> str:
    """The first `limit` items joined, with a count of the rest."""
    more = f" ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def one_line_error(error: BaseException) -> str:
    """An exception's text on one line, without terminal colour codes."""
    return one_line(_ANSI_ESCAPE.sub("", str(error)))


def _load(file: Path, argument: str) -> Any:
    suffix = file.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise InputError(f"{argument}: {str(file)!r} has suffix {suffix!r}; expected one of {WEIGHT_SUFFIXES}")
    try:
        if suffix in SAFETENSORS_SUFFIXES:
            from safetensors.torch import load_file

            return load_file(str(file), device="cpu")
        with warnings.catch_warnings():  # torch's note on pickle protocols is not the user's business
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # weights_only refused the file: never unpickled
        raise ModelError(refused_pickle_message(file, error)) from None
    except Exception as error:  # corrupt or truncated
        raise ModelError(f"could not read weights file {str(file)!r}: {type(error).__name__}: "
                         f"{one_line_error(error)}") from None


def flatten(tree: Mapping[str, Any], file: Path) -> dict[str, torch.Tensor]:
    """{"a": {"b": t}} -> {"a.b": t}; ModelError naming the entry for anything but tensors and dicts."""
    flat: dict[str, torch.Tensor] = {}
    stack: list[tuple[str, Any, int]] = [(str(k), v, 1) for k, v in tree.items()]
    while stack:
        key, value, depth = stack.pop()
        if isinstance(value, torch.Tensor):
            if key in flat:
                raise ModelError(f"weights file {str(file)!r}: key {key!r} appears twice once nested dicts are "
                                 "flattened; expected one tensor per name")
            flat[key] = value
        elif isinstance(value, Mapping) and depth < MAX_DEPTH:
            stack += [(f"{key}.{k}", v, depth + 1) for k, v in value.items()]
        else:
            what = "a dict nested too deep" if isinstance(value, Mapping) else f"a {type(value).__name__}"
            raise ModelError(f"weights file {str(file)!r}: entry {key!r} holds {what}; expected tensors "
                             f"(or dicts of tensors at most {MAX_DEPTH} levels deep)")
    return dict(sorted(flat.items()))


def read_state_dict(path: PathLike, argument: str = "path") -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` or torch file, as one flat dict with dotted keys.

    Raises ModelError in one line for a file that cannot be read, that pickles objects other than
    tensors (never unpickled: that could run code) or that holds other values, and
    NonFiniteWeightsError naming file and tensors when any tensor holds NaN or Inf.
    """
    file = existing_file(path, argument)
    loaded = _load(file, argument)
    for wrapper in _WRAPPERS:  # {"state_dict": ..., "epoch": 3, "optimizer_states": ...}
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
            break
    if not isinstance(loaded, Mapping):
        raise ModelError(f"weights file {str(file)!r} holds a {type(loaded).__name__}; expected a dict of tensors")
    state = flatten(loaded, file)
    if not state:
        raise ModelError(f"weights file {str(file)!r} holds no tensors; expected a state dict")
    non_finite = non_finite_tensors(state.items())
    if non_finite:
        raise NonFiniteWeightsError(
            f"weights file {str(file)!r} holds NaN or Inf in {len(non_finite)} of {len(state)} tensors: "
            f"{listing(non_finite)}; expected finite weights (the run that wrote it diverged, or the file is damaged)"
        )
    return state


def conversion_snippet(file: Path) -> str:
    """The one-step conversion of a trusted torch file to safetensors (state_dict tensors only).

    clone() gives every tensor its own storage: safetensors refuses tensors that share memory.
    """
    target = file.with_suffix(".safetensors")
    return ("python -c \"import torch; from safetensors.torch import save_file; "
            f"sd = torch.load('{file}', 'cpu', weights_only=False); sd = sd.get('state_dict', sd); "
            "save_file({k: v.clone().contiguous() for k, v in sd.items() if torch.is_tensor(v)}, "
            f"'{target}')\"")


def refused_pickle_message(file: Path, error: BaseException) -> str:
    """One line for a torch file that `weights_only=True` would not unpickle, and what to do.

    torch's own text is about 1,100 characters with terminal colour codes and suggests
    `weights_only=False`; a file that references a global (a class or function: a Lightning
    checkpoint's callbacks, a pickled model) is refused as unsafe, with the one-step conversion.
    """
    text = _ANSI_ESCAPE.sub("", str(error))
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found is None:  # an opcode the safe unpickler does not know: damaged, or not a torch checkpoint
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text, re.S)
        reason = " ".join(detail.group(1).split()) if detail else "unreadable pickle"
        return (f"could not read weights file {str(file)!r}: it is not a torch checkpoint of tensors that can be "
                f"read safely ({reason}); expected a state dict saved with torch.save or safetensors")
    lightning = " (a PyTorch Lightning checkpoint: callbacks and optimizer state beside the weights)" \
        if "lightning" in found.group(1).lower() else ""
    return (
        f"weights file {str(file)!r} holds Python objects other than tensors (it references {found.group(1)})"
        f"{lightning}, not loaded: unpickling it could run arbitrary code. If you trust its source, convert it "
        f"once to safetensors and pass that file: {conversion_snippet(file)}"
    )


def overlay(module: torch.nn.Module, state: Mapping[str, torch.Tensor], file: PathLike, what: str) -> int:
    """Copy `state` into `module` in place: every key must exist there with the same shape.

    Keys of the module missing from `state` keep their values (a partial file overlays the base
    model). Raises StateDictMismatchError naming file, keys and shapes before anything is copied.
    Returns how many tensors were replaced.
    """
    expected = module.state_dict()
    unexpected = [key for key in state if key not in expected]
    misshapen = [f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
                 for key in state if key in expected and state[key].shape != expected[key].shape]
    if unexpected or misshapen:
        lines = [f"state dict {str(file)!r} does not fit the {what} ({len(state)} tensors in the file, "
                 f"{len(expected)} in the model): {len(unexpected)} not in the model, {len(misshapen)} with the wrong shape"]
        if unexpected:
            lines.append(f"  not in the {what}: {first(unexpected)}")
        if misshapen:
            lines.append(f"  wrong shape: {first(misshapen)}")
        raise StateDictMismatchError("\n".join(lines))
    module.load_state_dict(dict(state), strict=False)
    return len(state)
