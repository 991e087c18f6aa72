"""What a gate checks and loads before any compute: the run's config, device and dtype, the base
model's source and resolution, the image folders, and a checkpoint's model (the base model with
its erased weights on top)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..attacks.adversarial_config import AdversarialPromptConfig
from ..config import ProbeConfig, ResizePolicy
from ..errors import InputError, InsufficientDataError, ProbeFailure, UnlearnGuardError
from ..io import ImageSet, load_image_set
from ..probe import probe
from ..results import ProbeResult
from .attacks import AttackSettings
from .checkpoints import Checkpoint, Weights
from .decision import Thresholds

WORLD_MODEL_NAME = "shapes-world"  # --model name of the small model shipped in the package
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class GateConfig:
    """One gate run. `probe` is the full ProbeConfig (preset, knobs, seed, batch size)."""

    model: str
    checkpoints: tuple[Checkpoint, ...]
    concept_images: Path
    reference_images: Path
    thresholds: Thresholds
    probe: ProbeConfig = field(default_factory=lambda: ProbeConfig.from_preset("mofc"))
    output: Path = Path("unlearn_guard_outputs/gate")
    device: str | None = None
    dtype: str | None = None
    resume: bool = False
    overwrite: bool = False
    thumbnails: int = 8
    progress: bool = True
    distributed: bool | None = None  # None: shard over an initialised group of 2+ ranks (gate/sharded.py)
    attacks: AttackSettings = field(default_factory=AttackSettings)
    model_config: Path | None = None  # the pipeline folder describing a single-file --model (--model-config)

    def __post_init__(self) -> None:
        if "memory" not in self.attacks.attacks:
            for name, flag in (("min_d_n", "--min-dn"), ("max_psnr", "--max-psnr")):
                if getattr(self.thresholds, name) is not None:
                    raise InputError(f"{flag}: a condition on the memory probe, but --attacks "
                                     f"{','.join(self.attacks.attacks)} does not run it; add memory to --attacks")
        if not self.checkpoints:
            raise InputError("checkpoints: nothing to gate; expected at least one checkpoint")
        names = [c.name for c in self.checkpoints]
        if len(set(names)) != len(names):
            raise InputError(f"checkpoints: names repeat ({names}); expected unique names")
        if not isinstance(self.thumbnails, int) or self.thumbnails < 0:
            raise InputError(f"--thumbnails: got {self.thumbnails!r}; expected an int >= 0")
        if self.attacks.adversarial is None:
            preset = default_adversarial_preset(self.model)
            object.__setattr__(self, "attacks", self.attacks.replace(
                adversarial=AdversarialPromptConfig.from_preset(preset)))
        if "utility" in self.attacks.attacks:
            self._settle_utility()

    def _settle_utility(self) -> None:
        """One bar for the utility check: --min-utility when given (the config follows it), else the
        config's own (its metric's default); kept shapes only in the shipped world."""
        utility = self.attacks.utility
        if utility.shapes and not is_world_name(self.model):
            raise InputError(f"--utility-erased: the kept shapes' accuracy is the shipped world's check (--model "
                             f"{WORLD_MODEL_NAME}); --model {self.model} needs --utility-prompts FILE (CLIP score)")
        if self.thresholds.min_utility is None:
            object.__setattr__(self, "thresholds", dataclasses.replace(self.thresholds, min_utility=utility.min_ratio))
        elif self.thresholds.min_utility != utility.min_ratio:
            object.__setattr__(self, "attacks", self.attacks.replace(
                utility=dataclasses.replace(utility, min_ratio=self.thresholds.min_utility)))


def default_adversarial_preset(model: str) -> str:
    """The adversarial-prompt preset that fits a --model: `world` for the shipped world and its
    retrained twins (12-token captions, 32 px), else `unlearndiffatk` (the paper's, SD 1.x)."""
    return "world" if is_world_name(model) else "unlearndiffatk"


def is_world_name(name: str) -> bool:
    """`shapes-world` or `shapes-world-without-<shape>`: the shipped small world or a retrained twin."""
    return name == WORLD_MODEL_NAME or str(name).startswith(WORLD_MODEL_NAME + "-without-")


def resolve_model_source(name: str) -> str:
    """`shapes-world` -> the shipped small model's pipeline folder, `shapes-world-without-<shape>`
    -> the shipped world retrained without that shape (the ground truth of unlearning); anything
    else unchanged."""
    if is_world_name(name):
        from ..world import WEIGHTS_DIR, retrained_world_dir

        if name == WORLD_MODEL_NAME:
            return str(WEIGHTS_DIR / "pipeline")
        return str(retrained_world_dir(name.removeprefix(WORLD_MODEL_NAME + "-without-")) / "pipeline")
    return name


def model_resolution(source: str) -> int | None:
    """The image side the base model was built for, read from its config files (no weights loaded).

    sample_size of unet/config.json times the VAE factor 2 ** (len(block_out_channels) - 1), as
    `DiffusionModel.resolution`: 512 for SD 1.4. A folder or a hub id in the local cache; None when
    the configs cannot be read (the model's loader then says why).
    """
    folder = Path(source)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(source), local_files_only=True))
        except Exception:  # noqa: BLE001 - not in the local cache: the loader will say so
            return None
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
        sample_size = unet["sample_size"]
        sample_size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
        return int(sample_size) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def check_device(name: str | None) -> torch.device | None:
    """A torch.device that exists on this machine; InputError naming the device otherwise."""
    if name is None:
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise InputError(f"--device: {name!r} is not a device name ({error}); expected e.g. cpu, cuda, cuda:1") from None
    if device.type == "cpu":
        return device
    backend = getattr(torch, device.type, None)
    if device.type == "mps":
        backend = getattr(torch.backends, "mps", None)
    available = bool(backend is not None and getattr(backend, "is_available", lambda: False)())
    if not available:
        raise InputError(f"--device: {name!r} is not available on this machine (torch.{device.type}.is_available() "
                         "is False); use --device cpu or a device that exists")
    count = getattr(backend, "device_count", lambda: 1)()
    if device.index is not None and device.index >= count:
        raise InputError(f"--device: {name!r} does not exist; this machine has {count} {device.type} device(s)")
    return device


def check_dtype(name: str | None) -> torch.dtype | None:
    """The torch dtype `--dtype` names (None: the model's own); InputError for any other name."""
    if name is None:
        return None
    if name not in DTYPES:
        raise InputError(f"--dtype: got {name!r}; expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


def load_folder(folder: str | os.PathLike, flag: str, minimum: int = 2, resolution: int | None = None,
                resize: ResizePolicy = "resize") -> ImageSet:
    """An image folder with prompts.csv, validated (decodes every image); at least 2 images for d_N.

    With `resolution` (the model's, `model_resolution`), images of another size are handled by the
    `resize` policy here, as `probe` would, so a folder of mixed sizes is accepted or refused up front.
    """
    path = Path(folder)
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise InputError(f"{flag}: {str(path)!r} {what}; expected a folder of images with a prompts.csv (file,prompt)")
    try:
        images = load_image_set(path, None, resolution=resolution, resize=resize, label=flag)
    except InputError as error:  # name the flag in every message (prompts.csv errors name only the file)
        if str(error).startswith(flag):
            raise
        raise type(error)(f"{flag}: {error}") from None
    if len(images) < minimum:
        raise InsufficientDataError(f"{flag}: {str(path)!r} holds {len(images)} image; d_N needs at least {minimum}")
    return images


def load_support_folder(folder: str | os.PathLike, count: int, resolution: int | None,
                        resize: ResizePolicy = "resize") -> ImageSet:
    """The multi-memory attack's support images: a folder of images (no prompts.csv needed), at least `count`."""
    path = Path(folder)
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise InputError(f"--support-images: {str(path)!r} {what}; expected a folder of images of other content")
    images = load_image_set(path, "", resolution=resolution, resize=resize, label="--support-images")
    if len(images) < count:
        raise InputError(f"--support-images: {str(path)!r} holds {len(images)} images; --memories "
                         f"{count + 1} needs {count}")
    return images


@dataclass(frozen=True)
class GateInputs:
    """What every gate (one process or each rank) checks and loads before any model: the device,
    the base model's source and resolution, the probe config it runs, and both image sets."""

    device: torch.device | None
    source: str
    resolution: int | None
    probe_config: ProbeConfig
    concept: ImageSet
    reference: ImageSet
    model_config: Path | None = None


def load_gate_inputs(config: GateConfig, device_name: str | None) -> GateInputs:
    """Device, dtype, base model, probe config and both image folders, checked in that order."""
    device = check_device(device_name)
    check_dtype(config.dtype)
    source = resolve_model_source(config.model)
    resolution = model_resolution(str(config.model_config) if config.model_config and Path(source).is_file() else source)
    probe_config = config.probe.replace(keep_reconstructions=config.thumbnails > 0, progress=config.progress)
    concept = load_folder(config.concept_images, "--concept-images", resolution=resolution, resize=probe_config.resize)
    reference = load_folder(config.reference_images, "--reference-images", resolution=resolution,
                            resize=probe_config.resize)
    return GateInputs(device, source, resolution, probe_config, concept, reference, config.model_config)


def load_checkpoint_model(source: str, checkpoint: Checkpoint, device: str | None = None, dtype: str | None = None,
                          model_config: Path | None = None):
    """The base model with the checkpoint's weights on top (a `DiffusionModel`); what was loaded is
    in its `loaded_weights`."""
    from ..models.loading import load_model

    weights = checkpoint.weights
    return load_model(source, unet_weights=weights.unet_weights, text_encoder=weights.text_encoder,
                      lora=weights.lora, torch_dtype=check_dtype(dtype), device=check_device(device),
                      text_encoder_subfolder=weights.text_encoder_subfolder, config=model_config)


# --model without any checkpoint's weights, as a checkpoint: what load_base_model loads and failures name
BASE_MODEL = Checkpoint(name="base model", weights=Weights())


def load_base_model(source: str, device: str | None = None, dtype: str | None = None,
                    model_config: Path | None = None):
    """The base model alone (--model without any checkpoint's weights): the original model that makes
    the adversarial-prompt attack's target images."""
    return load_checkpoint_model(source, BASE_MODEL, device, dtype, model_config)


class attack_failures:  # noqa: N801 - used as a context manager, reads as a phrase
    """Errors of ours propagate as they are; any other exception inside an attack becomes a
    ProbeFailure naming the checkpoint and the attack (exit code 3, not a traceback)."""

    def __init__(self, checkpoint: Checkpoint, doing: str) -> None:
        self.checkpoint, self.doing = checkpoint, doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, trace: Any) -> bool:
        if error is None or isinstance(error, UnlearnGuardError) or not isinstance(error, Exception):
            return False
        raise ProbeFailure(f"{self.doing} {self.checkpoint.name} failed: {type(error).__name__}: {error}") from error


def load_and_probe(source: str, checkpoint: Checkpoint, concept: ImageSet, reference: ImageSet | None,
                   probe_config: ProbeConfig, device: str | None = None, dtype: str | None = None,
                   distributed: bool | None = False, model_config: Path | None = None) -> ProbeResult:
    """Load the base model with the checkpoint's weights on top and probe it (`unlearn-guard probe`).

    Errors of ours (bad weights, bad input, non-finite values) propagate as they are; any other
    exception inside the probe becomes a ProbeFailure naming the checkpoint (exit code 3).
    """
    model = load_checkpoint_model(source, checkpoint, device, dtype, model_config)
    with attack_failures(checkpoint, "probing"):
        return probe(model, concept, reference=reference, config=probe_config, distributed=distributed)
