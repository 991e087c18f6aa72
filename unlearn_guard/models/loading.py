"""Load the model to probe: a pipeline, a local folder or a hub id, plus erased weights on top.

Erasure methods ship their result in one of three forms, applied by `load_model` in this order:
  1. `unet_weights`: a full UNet state dict with diffusers key names (ESD, UCE, ...), as
     `.safetensors` or a torch file (`.pt`, `.pth`, `.ckpt`, `.bin`);
  2. `text_encoder`: a replacement `CLIPTextModel` folder (text-encoder erasure, e.g. AdvUnlearn);
  3. `lora`: a LoRA adapter on the UNet, in diffusers' format (`pytorch_lora_weights.safetensors`,
     loaded with `UNet2DConditionModel.load_lora_adapter`) or peft's (`adapter_config.json` +
     `adapter_model.safetensors`, loaded with `peft.PeftModel.from_pretrained`).
Every file is checked against the model before it is loaded, because torch and peft either stop
with a wall of text or, for LoRA keys that match no layer, only log a warning and skip them.
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
from .adapters import tuner_layers
from .bundle import DiffusionModel, module_device_dtype, unwrap_unet
from .checks import listing, non_finite_tensors

PathLike = str | os.PathLike

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
LDM_UNET_PREFIX = "model.diffusion_model."
MAX_LISTED = 10  # keys listed per kind of mismatch; SD's UNet has 686 tensors


def _dtype_keyword() -> str:
    """diffusers 0.42 renamed from_pretrained's `torch_dtype` to `dtype` (the old name warns)."""
    import diffusers
    from packaging.version import Version

    return "dtype" if Version(diffusers.__version__).release >= (0, 42) else "torch_dtype"


_DTYPE_KEYWORD = _dtype_keyword()


# ---------------------------------------------------------------------------------------- load_model
def load_model(
    source: Any,
    *,
    unet_weights: PathLike | None = None,
    text_encoder: PathLike | None = None,
    lora: PathLike | None = None,
    torch_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    local_files_only: bool = True,
) -> DiffusionModel:
    """A checked `DiffusionModel` from `source`, with the erased weights applied on top.

    Args:
        source: a diffusers pipeline, a `DiffusionModel` (both changed in place), a local folder
            saved with `save_pretrained`, or a hub id (read from the local cache unless
            `local_files_only=False`).
        unet_weights: a full UNet state dict file with diffusers key names.
        text_encoder: a folder holding a replacement `CLIPTextModel`.
        lora: a LoRA adapter folder for the UNet (diffusers or peft format).
        torch_dtype, device: where the finished model is put (all parts alike).
    """
    model = _base_model(source, torch_dtype=torch_dtype, local_files_only=local_files_only)
    if unet_weights is not None:
        load_unet_state_dict(unwrap_unet(model.unet), unet_weights)
    if text_encoder is not None:
        replacement = load_text_encoder(text_encoder, like=model.text_encoder)
        _check_text_encoder_fits(replacement, model.unet, text_encoder)
        model.text_encoder = replacement
    if lora is not None:
        model.unet = load_lora_adapter(model.unet, lora)
    if device is not None or torch_dtype is not None:
        model.to(device=device, dtype=torch_dtype)  # also runs model.check()
    else:
        model.check()
    return model


def _base_model(source: Any, *, torch_dtype: torch.dtype | None, local_files_only: bool) -> DiffusionModel:
    if isinstance(source, DiffusionModel):
        return source
    if isinstance(source, (str, os.PathLike)):
        return _model_from_name_or_path(source, torch_dtype=torch_dtype, local_files_only=local_files_only)
    if hasattr(source, "unet"):
        return DiffusionModel.from_pipeline(source)
    raise InputError(
        f"source: got a {type(source).__name__}; expected a diffusers pipeline, a DiffusionModel, "
        "a folder saved with save_pretrained, or a hub id"
    )


def _looks_like_hub_id(text: str) -> bool:
    """'org/name' or 'name': no path anchors, at most one slash."""
    if not text or text.startswith((".", "/", "~")) or "\\" in text or text.endswith("/"):
        return False
    return text.count("/") <= 1 and all(part for part in text.split("/"))


def _model_from_name_or_path(
    source: PathLike, *, torch_dtype: torch.dtype | None, local_files_only: bool
) -> DiffusionModel:
    from diffusers import StableDiffusionPipeline

    path = Path(source)
    if path.is_file():
        raise InputError(
            f"source: {str(path)!r} is a file; expected a pipeline folder saved with save_pretrained "
            "(pass a UNet state dict as unet_weights=... on top of its base model)"
        )
    is_folder = path.is_dir()
    if not is_folder and (not isinstance(source, str) or not _looks_like_hub_id(source)):
        raise InputError(f"source: folder {str(path)!r} does not exist; expected a pipeline folder or a hub id")
    kwargs: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}
    if torch_dtype is not None:
        kwargs[_DTYPE_KEYWORD] = torch_dtype
    try:
        # A folder is read with local_files_only=True whatever the argument: nothing to download.
        pipe = StableDiffusionPipeline.from_pretrained(
            str(source), local_files_only=local_files_only or is_folder, **kwargs
        )
    except Exception as error:  # diffusers raises OSError, ValueError or hub errors here
        if is_folder:
            raise ModelError(
                f"could not load a Stable Diffusion pipeline from folder {str(path)!r}: {error}; "
                "expected a folder written by pipe.save_pretrained (with model_index.json)"
            ) from error
        where = "locally (local_files_only=True and not in the Hugging Face cache)" if local_files_only else ""
        raise ModelError(
            f"model {source!r} is not a folder here and could not be found {where or 'or downloaded'}: "
            f"{type(error).__name__}. "
            "Pass the path of a pipeline folder saved with save_pretrained, "
            f"download it first (`hf download {source}`), or use local_files_only=False"
        ) from error
    return DiffusionModel.from_pipeline(pipe, source=str(source))


# ---------------------------------------------------------------------------------------- state dicts
def _existing_file(path: PathLike, argument: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{argument}: file {str(file)!r} does not exist")
    return file


def read_state_dict(path: PathLike, argument: str = "path") -> dict[str, torch.Tensor]:
    """Tensors from a `.safetensors` or torch file (`weights_only=True`), unwrapping "state_dict"/"model".

    Raises ModelError in one line for a file that cannot be read or that pickles objects other than
    tensors (never unpickled: that could run code), and NonFiniteWeightsError naming file and tensors
    when any tensor holds NaN or Inf.
    """
    file = _existing_file(path, argument)
    suffix = file.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise InputError(
            f"{argument}: {str(file)!r} has suffix {suffix!r}; expected one of {SAFETENSORS_SUFFIXES + TORCH_SUFFIXES}"
        )
    try:
        if suffix in SAFETENSORS_SUFFIXES:
            from safetensors.torch import load_file

            loaded: Any = load_file(str(file), device="cpu")
        else:
            with warnings.catch_warnings():  # torch's note on pickle protocols is not the user's business
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                loaded = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # weights_only refused the file: never unpickled
        raise ModelError(_refused_pickle_message(file, error)) from None
    except Exception as error:  # corrupt or truncated
        raise ModelError(f"could not read weights file {str(file)!r}: {type(error).__name__}: {_one_line(error)}") from None
    # Training scripts often save {"state_dict": ..., "epoch": ...} or {"model": ...}.
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
            break
    if not isinstance(loaded, Mapping):
        raise ModelError(f"weights file {str(file)!r} holds a {type(loaded).__name__}; expected a dict of tensors")
    not_tensors = [key for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ModelError(f"weights file {str(file)!r} has non-tensor entries {not_tensors[:MAX_LISTED]}")
    non_finite = non_finite_tensors(loaded.items())
    if non_finite:
        raise NonFiniteWeightsError(
            f"weights file {str(file)!r} holds NaN or Inf in {len(non_finite)} of {len(loaded)} tensors: "
            f"{listing(non_finite)}; expected finite weights (the run that wrote it diverged, or the file is damaged)"
        )
    return dict(loaded)


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _one_line(error: BaseException) -> str:
    """An exception's text on one line, without terminal colour codes."""
    return one_line(_ANSI_ESCAPE.sub("", str(error)))


def _refused_pickle_message(file: Path, error: BaseException) -> str:
    """One line for a torch file that `weights_only=True` would not unpickle, and what to do.

    torch's own text is about 1,100 characters with terminal colour codes and suggests
    `weights_only=False`; a file that references a global (a class or function) is refused as
    unsafe, with the one-time conversion to safetensors for a trusted file.
    """
    text = _ANSI_ESCAPE.sub("", str(error))
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found is None:  # an opcode the safe unpickler does not know: damaged, or not a torch checkpoint
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text, re.S)
        reason = " ".join(detail.group(1).split()) if detail else "unreadable pickle"
        return (f"could not read weights file {str(file)!r}: it is not a torch checkpoint of tensors that can be "
                f"read safely ({reason}); expected a state dict saved with torch.save or safetensors")
    target = file.with_suffix(".safetensors")
    return (
        f"weights file {str(file)!r} holds Python objects other than tensors (it references {found.group(1)}), so it "
        "was not loaded: unpickling it could run arbitrary code. If you trust its source, convert it once to "
        "safetensors and pass that file instead: python -c \"import torch; from safetensors.torch import save_file; "
        f"sd = torch.load('{file}', weights_only=False); sd = sd.get('state_dict', sd); "
        f"save_file({{k: v.contiguous() for k, v in sd.items() if torch.is_tensor(v)}}, '{target}')\""
    )


def _first(items: list[str]) -> str:
    more = f" ... ({len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def load_unet_state_dict(unet: torch.nn.Module, path: PathLike, *, strict: bool = True) -> torch.nn.Module:
    """Load a full UNet state dict (diffusers key names) into `unet` in place and return it.

    Keys and shapes are compared before anything is copied; any difference raises
    `StateDictMismatchError` naming the file and the first offending keys (with `strict=False`,
    missing and unexpected keys are allowed but wrong shapes still are not).
    """
    file = Path(path)
    state = read_state_dict(file, "unet_weights")
    if any(key.startswith(LDM_UNET_PREFIX) for key in state):
        raise StateDictMismatchError(
            f"{str(file)!r} is an original Stable Diffusion (ldm) checkpoint: its keys start with "
            f"{LDM_UNET_PREFIX!r}, but diffusers key names are expected (e.g. 'conv_in.weight'). Convert it "
            "with diffusers' StableDiffusionPipeline.from_single_file(path) and save pipe.unet.state_dict(), "
            "or scripts/convert_original_stable_diffusion_to_diffusers.py"
        )
    expected = unet.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    misshapen = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    if misshapen or (strict and (missing or unexpected)):
        lines = [
            f"state dict {str(file)!r} does not match the UNet ({len(state)} keys in the file, "
            f"{len(expected)} in the model): {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(misshapen)} with the wrong shape"
        ]
        if missing:
            lines.append(f"  missing from the file: {_first(missing)}")
        if unexpected:
            lines.append(f"  unexpected in the file: {_first(unexpected)}")
        if misshapen:
            lines.append(f"  wrong shape: {_first(misshapen)}")
        raise StateDictMismatchError("\n".join(lines))
    unet.load_state_dict(state, strict=strict)
    return unet


# ---------------------------------------------------------------------------------------- text encoder
def load_text_encoder(folder: PathLike, like: torch.nn.Module | None = None) -> torch.nn.Module:
    """A `CLIPTextModel` from a save_pretrained folder, on `like`'s device and dtype when given."""
    from transformers import CLIPTextModel

    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"text_encoder: folder {str(path)!r} does not exist")
    if not (path / "config.json").is_file() and (path / "text_encoder" / "config.json").is_file():
        path = path / "text_encoder"  # a whole pipeline folder was given
    if not (path / "config.json").is_file():
        raise InputError(
            f"text_encoder: folder {str(path)!r} has no config.json; expected a CLIPTextModel saved with save_pretrained"
        )
    try:
        encoder = CLIPTextModel.from_pretrained(str(path), local_files_only=True)
    except Exception as error:
        raise ModelError(f"could not load a CLIPTextModel from {str(path)!r}: {type(error).__name__}: {error}") from error
    non_finite = non_finite_tensors(encoder.named_parameters())
    if non_finite:
        raise NonFiniteWeightsError(
            f"text encoder {str(path)!r} holds NaN or Inf in {len(non_finite)} tensor(s): {listing(non_finite)}; "
            "expected finite weights"
        )
    encoder.eval()
    if like is not None:
        device, dtype = module_device_dtype(like, "text_encoder")
        encoder.to(device=device, dtype=dtype)
    return encoder


def _check_text_encoder_fits(encoder: torch.nn.Module, unet: torch.nn.Module, folder: PathLike) -> None:
    hidden = getattr(encoder.config, "hidden_size", None)
    cross = unwrap_unet(unet).config.cross_attention_dim
    if hidden is not None and hidden != cross:
        raise ModelError(
            f"text encoder {str(folder)!r} has hidden_size={hidden} but the UNet expects "
            f"cross_attention_dim={cross}; it belongs to another model"
        )


# ---------------------------------------------------------------------------------------- LoRA
def _lora_weight_file(path: Path) -> tuple[str, Path]:
    """('peft' | 'diffusers', weights file) for an adapter folder (or a diffusers LoRA file)."""
    if path.is_file():
        return "diffusers", path
    if not path.is_dir():
        raise InputError(f"lora: folder {str(path)!r} does not exist")
    if (path / PEFT_CONFIG_FILE).is_file():
        for name in PEFT_WEIGHT_FILES:
            if (path / name).is_file():
                return "peft", path / name
        raise InputError(f"lora: {str(path)!r} has {PEFT_CONFIG_FILE} but none of {PEFT_WEIGHT_FILES}")
    if (path / DIFFUSERS_LORA_FILE).is_file():
        return "diffusers", path / DIFFUSERS_LORA_FILE
    raise InputError(
        f"lora: folder {str(path)!r} holds neither {DIFFUSERS_LORA_FILE} (diffusers' save_lora_weights) "
        f"nor {PEFT_CONFIG_FILE} + adapter_model.safetensors (peft's save_pretrained)"
    )


def _adapter_layers(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Size]]:
    """{module name: {"A": lora_A shape, "B": lora_B shape}} from peft-style keys."""
    layers: dict[str, dict[str, torch.Size]] = {}
    for key, value in state.items():
        if ".lora_" not in key:
            continue
        module, rest = key.split(".lora_", 1)
        entry = layers.setdefault(module, {})
        if rest in ("A.weight", "B.weight"):
            entry[rest[0]] = value.shape
    return layers


def _check_adapter_fits(unet: torch.nn.Module, layers: dict[str, dict[str, torch.Size]], file: Path) -> None:
    """LoRA factors must sit on existing layers: A (r, in, ...) and B (out, r, ...) vs weight (out, in, ...)."""
    modules = dict(unet.named_modules())
    absent, misshapen = [], []
    for name, shapes in layers.items():
        weight = getattr(modules.get(name), "weight", None)
        if not isinstance(weight, torch.Tensor):
            absent.append(name)
            continue
        a_shape, b_shape = shapes.get("A"), shapes.get("B")
        if (a_shape is not None and a_shape[1] != weight.shape[1]) or (b_shape is not None and b_shape[0] != weight.shape[0]):
            misshapen.append(f"{name}: lora_A {tuple(a_shape or ())}, lora_B {tuple(b_shape or ())} vs layer weight {tuple(weight.shape)}")
    if absent or misshapen:
        lines = [
            f"LoRA adapter {str(file)!r} does not match this UNet: of its {len(layers)} layers, "
            f"{len(absent)} are absent from the UNet and {len(misshapen)} have the wrong shape; "
            "it was trained for another model (or is not a UNet adapter)"
        ]
        if absent:
            lines.append(f"  absent from the UNet: {_first(absent)}")
        if misshapen:
            lines.append(f"  wrong shape: {_first(misshapen)}")
        raise ModelError("\n".join(lines))


def _count_injected(unet: torch.nn.Module, adapter_name: str) -> int:
    return sum(1 for layer in tuner_layers(unet) if adapter_name in getattr(layer, "lora_A", {}))


def load_lora_adapter(unet: torch.nn.Module, folder: PathLike, *, adapter_name: str = "erasure") -> torch.nn.Module:
    """The UNet with the LoRA adapter in `folder` loaded and active.

    diffusers format: loaded into `unet` in place with `unet.load_lora_adapter` (the same module is
    returned). peft format: wrapped with `peft.PeftModel.from_pretrained` (the wrapper is returned;
    `DiffusionModel` accepts both). Raises ModelError when the adapter's layers do not all exist
    in this UNet with matching shapes, or when fewer LoRA layers were injected than it holds.
    """
    from peft import PeftModel

    path = Path(folder)
    kind, file = _lora_weight_file(path)
    if unwrap_unet(unet) is not unet:
        raise ModelError("lora: the UNet is already wrapped by peft; merge or unload its adapter before adding another")
    if adapter_name in getattr(unet, "peft_config", {}):
        raise ModelError(f"lora: the UNet already has an adapter named {adapter_name!r}; pass another adapter_name")

    state = read_state_dict(file, "lora")
    if kind == "diffusers":
        from diffusers.utils import convert_unet_state_dict_to_peft

        state = {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
        if not state:
            raise ModelError(f"LoRA file {str(file)!r} holds no UNet layers (no key starts with 'unet.')")
        if not any(".lora_A." in key for key in state):  # older attention-processor key names
            state = convert_unet_state_dict_to_peft(state)
    else:
        state = {k.removeprefix("base_model.model."): v for k, v in state.items()}
    layers = _adapter_layers(state)
    if not layers:
        raise ModelError(f"{str(file)!r} holds no LoRA weights (no key contains '.lora_')")
    _check_adapter_fits(unet, layers, file)

    try:
        if kind == "diffusers":
            unet.load_lora_adapter(
                str(file.parent), prefix="unet", adapter_name=adapter_name, weight_name=file.name, local_files_only=True
            )
            loaded = unet
        else:
            loaded = PeftModel.from_pretrained(unet, str(path), adapter_name=adapter_name, is_trainable=False)
    except Exception as error:  # peft's size-mismatch RuntimeError, unsupported configs, ...
        raise ModelError(f"could not load LoRA adapter {str(path)!r}: {type(error).__name__}: {error}") from error
    injected = _count_injected(loaded, adapter_name)
    if injected != len(layers):
        raise ModelError(
            f"LoRA adapter {str(path)!r} holds {len(layers)} layers but only {injected} were injected into the UNet; "
            "it does not match this model"
        )
    return loaded
