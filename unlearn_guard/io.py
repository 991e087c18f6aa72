"""Load the images and prompts that `probe` receives, validated once at the boundary.

`load_image_set` accepts tensors, PIL images, files and folders and returns an `ImageSet`:
pixels (N, 3, H, W) float32 in [-1, 1] plus one name, prompt, source and SHA-256 per image.
Every problem becomes an `InputError` (or `ImageLoadError` for a file or PIL object) that names
the argument or file, what was received and what was expected.

Conversion to RGB (one UserWarning per load lists every converted image and its mode):
  - RGBA, LA, PA and palette / gray / RGB images with a transparency entry: alpha-composited on
    *white*, i.e. out = rgb * a + 255 * (1 - a). The colour under fully transparent pixels is
    often black or garbage, so dropping alpha would make the result depend on hidden data;
    white is what viewers and most dataset tools show.
  - 16-bit gray (I;16, I;16B, I;16L, I;16N) and 32-bit int gray (I, read as 0..65535) are scaled
    to 8 bits with round(v / 257), so 65535 -> 255 (PIL's own conversion clips instead).
  - F (float gray) must hold values in [0, 1], the same convention as float tensors.
  - L, 1, P, CMYK (naive, no ICC profile), RGBX, YCbCr, ...: PIL's `convert("RGB")`.
  Pillow 13 decodes 16-bit-per-channel RGB PNGs as 8-bit mode "RGB" (it keeps the high byte),
  so they arrive here as plain RGB with no warning.
  Files also get their EXIF orientation applied, so pixels are laid out as a viewer shows them.

The SHA-256 of an image is taken over its decoded RGB pixels *before* any resize, laid out
(H, W, 3): uint8 for files, PIL images and uint8 tensors (so the same picture hashes the same
in all three forms), float32 in [0, 1] for float tensors. The resize policy lives in the config.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .config import ResizePolicy
from .errors import ImageLoadError, InputError
from .validation import is_int

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PROMPTS_CSV = "prompts.csv"
CSV_FILE_COLUMNS = ("file", "file_name", "filename", "image")
CSV_PROMPT_COLUMN = "prompt"
LATENT_FACTOR = 8  # the VAE downsamples by 8, so H and W must be multiples of 8
_FLOAT_TOLERANCE = 1e-6
_MAX_LISTED = 5  # names quoted in one message before "... and k more"

PathLike = Union[str, os.PathLike]
ImagesInput = Union[torch.Tensor, Image.Image, PathLike, Sequence[Union[Image.Image, PathLike]], "ImageSet"]
PromptsInput = Union[str, Sequence[str], Mapping[str, str], None]
Resolution = Union[int, tuple[int, int]]


@dataclass
class ImageSet:
    """Validated images with one name, prompt, source and hash each.

    Args:
        pixels: (N, 3, H, W) float32 in [-1, 1], N >= 1.
        names: file name, or "image[i]" for in-memory inputs.
        prompts: one prompt per image ("" means unconditional).
        sources: full path, or "tensor[i]" / "pil[i]".
        sha256: hex digest of each decoded input (see the module docstring); when left empty it
            is computed from the float32 pixels as stored.
    """

    pixels: torch.Tensor
    names: list[str]
    prompts: list[str]
    sources: list[str]
    sha256: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_pixels(self.pixels)
        n = self.pixels.shape[0]
        if not self.sha256:
            self.sha256 = [_hash_float(((p + 1) / 2).clamp(0, 1)) for p in self.pixels]
        for attr in ("names", "prompts", "sources", "sha256"):
            values = getattr(self, attr)
            if not isinstance(values, list) or len(values) != n or not all(isinstance(v, str) for v in values):
                raise InputError(f"ImageSet.{attr}: expected a list of {n} str (one per image), got {values!r:.200}")

    def __len__(self) -> int:
        return self.pixels.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) shared by every image."""
        return int(self.pixels.shape[2]), int(self.pixels.shape[3])

    def subset(self, indices: Sequence[int]) -> "ImageSet":
        """A new ImageSet with the images at `indices`, in that order."""
        n = len(self)
        picked = list(indices)
        if not picked:
            raise InputError("ImageSet.subset: indices is empty; expected at least one index")
        bad = [i for i in picked if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n]
        if bad:
            raise InputError(f"ImageSet.subset: indices {bad[:_MAX_LISTED]} are not ints in [-{n}, {n})")
        return ImageSet(
            pixels=self.pixels[picked].contiguous(),
            names=[self.names[i] for i in picked],
            prompts=[self.prompts[i] for i in picked],
            sources=[self.sources[i] for i in picked],
            sha256=[self.sha256[i] for i in picked],
        )


def load_image_set(
    images: ImagesInput,
    prompts: PromptsInput = None,
    *,
    resolution: Resolution | None = None,
    resize: ResizePolicy = "resize",
    label: str = "images",
) -> ImageSet:
    """Load, validate and convert `images` (and their prompts) into an `ImageSet`.

    Args:
        images: a tensor (N, 3, H, W) or (3, H, W), float in [0, 1] or uint8; a PIL image or a
            list of them; a folder (str/Path, its `prompts.csv` supplies prompts); a list of
            image files (PIL images may be mixed in); or an ImageSet (checked and returned as
            is unless prompts or the size have to change).
        prompts: one str for all images, a list (one per image), a dict name -> prompt, or None
            (only for folders, which then need a prompts.csv with columns file,prompt).
        resolution: int or (H, W) every image must end up at; None keeps the shared size,
            which must be a multiple of 8.
        resize: "error" rejects a size mismatch, "resize" resizes bicubic to the target,
            "center_crop" crops to the target aspect ratio first. Both warn once.
        label: the argument name used in messages ("images", "reference").

    Returns:
        ImageSet with pixels (N, 3, H, W) float32 in [-1, 1], contiguous, on the CPU.
    """
    target = _check_arguments(resolution, resize, label)
    if isinstance(images, ImageSet):
        return _recheck_image_set(images, prompts, target, resize, label)

    items, folder = _decode(images, label)
    converted = [item for item in items if item.converted_from is not None]
    if converted:
        listed = _listing([f"{item.name} ({item.converted_from})" for item in converted])
        warnings.warn(
            f"{label}: converted {len(converted)} of {len(items)} images to RGB: {listed}",
            UserWarning,
            stacklevel=2,
        )
    names = [item.name for item in items]
    resolved = _resolve_prompts(prompts, names, folder, label)
    _warn_mixed_empty_prompts(resolved, names, label)

    tensors, resize_note = _fit_sizes(items, target, resize, label)
    if resize_note:
        warnings.warn(resize_note, UserWarning, stacklevel=2)
    pixels = (torch.stack(tensors) * 2 - 1).to(torch.float32).contiguous()  # (N, 3, H, W)
    return ImageSet(
        pixels=pixels,
        names=names,
        prompts=resolved,
        sources=[item.source for item in items],
        sha256=[item.sha256 for item in items],
    )


# --------------------------------------------------------------------------- argument checks


def _check_arguments(resolution: Resolution | None, resize: str, label: str) -> tuple[int, int] | None:
    if not isinstance(label, str) or not label:
        raise InputError(f"label: got {label!r}, expected a non-empty str such as 'images'")
    if resize not in ("error", "resize", "center_crop"):
        raise InputError(f"resize: got {resize!r}, expected 'error', 'resize' or 'center_crop'")
    if resolution is None:
        return None
    pair = (resolution, resolution) if is_int(resolution) else resolution
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(is_int(v) and v > 0 for v in pair)):
        raise InputError(f"resolution: got {resolution!r}, expected a positive int or (height, width)")
    return int(pair[0]), int(pair[1])


def _check_pixels(pixels: object) -> None:
    """ImageSet invariant: (N, 3, H, W) float32, N >= 1, finite, in [-1, 1]."""
    if not isinstance(pixels, torch.Tensor):
        raise InputError(f"ImageSet.pixels: got {type(pixels).__name__}, expected a torch.Tensor")
    if pixels.ndim != 4 or pixels.shape[0] < 1 or pixels.shape[1] != 3 or pixels.dtype != torch.float32:
        raise InputError(
            f"ImageSet.pixels: got shape {tuple(pixels.shape)} {pixels.dtype}, "
            "expected (N >= 1, 3, H, W) float32 in [-1, 1]"
        )
    flat = pixels.detach().flatten(1)
    finite = flat.isfinite().all(dim=1)
    if not bool(finite.all()):
        raise InputError(f"ImageSet.pixels[{_first_false(finite)}] contains NaN or Inf; expected values in [-1, 1]")
    inside = (flat.amin(dim=1) >= -1 - _FLOAT_TOLERANCE) & (flat.amax(dim=1) <= 1 + _FLOAT_TOLERANCE)
    if not bool(inside.all()):
        i = _first_false(inside)
        raise InputError(
            f"ImageSet.pixels[{i}] has values in [{flat[i].min().item():.4g}, {flat[i].max().item():.4g}], "
            "expected [-1, 1]"
        )


def _first_false(flags: torch.Tensor) -> int:
    return int((~flags).nonzero()[0, 0])


def _listing(entries: Sequence[str]) -> str:
    shown = ", ".join(entries[:_MAX_LISTED])
    more = len(entries) - _MAX_LISTED
    return f"{shown} and {more} more" if more > 0 else shown


# --------------------------------------------------------------------------- decoding


@dataclass
class _Decoded:
    """One input image after decoding, before the size policy."""

    name: str
    source: str
    pixels: np.ndarray | torch.Tensor  # (H, W, 3) uint8 RGB, or (3, H, W) float32 in [0, 1]
    sha256: str
    converted_from: str | None = None  # mode description when not already RGB

    @property
    def size(self) -> tuple[int, int]:
        if isinstance(self.pixels, np.ndarray):
            return int(self.pixels.shape[0]), int(self.pixels.shape[1])
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])


def _decode(images: object, label: str) -> tuple[list[_Decoded], Path | None]:
    """Decode any accepted input; the folder is returned so that prompts.csv can be read."""
    if isinstance(images, torch.Tensor):
        return _decode_tensor(images, label), None
    if isinstance(images, Image.Image):
        return [_decode_pil(images, 0, label)], None
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if not path.exists():
            raise InputError(f"{label}: no folder or file at {str(path)!r}; expected an image folder or file")
        if path.is_dir():
            return [_decode_file(p, label) for p in _list_folder(path, label)], path
        return [_decode_file(path, label)], None
    if isinstance(images, np.ndarray):
        raise InputError(
            f"{label}: got a numpy array {images.shape}; expected a torch.Tensor (N, 3, H, W), "
            "e.g. torch.from_numpy(array).permute(0, 3, 1, 2) for (N, H, W, 3) uint8"
        )
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError(f"{label}: got an empty {type(images).__name__}; expected at least one image")
        return [_decode_element(element, i, label) for i, element in enumerate(images)], None
    raise InputError(
        f"{label}: got {type(images).__name__}; expected a tensor (N, 3, H, W), a PIL image, "
        "a folder, a list of PIL images or files, or an ImageSet"
    )


def _decode_element(element: object, index: int, label: str) -> _Decoded:
    if isinstance(element, Image.Image):
        return _decode_pil(element, index, label)
    if isinstance(element, (str, os.PathLike)):
        return _decode_file(Path(element), label)
    hint = "; stack tensors with torch.stack into one (N, 3, H, W) tensor" if isinstance(element, torch.Tensor) else ""
    raise InputError(
        f"{label}[{index}]: got {type(element).__name__}; expected a PIL image or an image file path{hint}"
    )


def _list_folder(folder: Path, label: str) -> list[Path]:
    """Image files directly in `folder`, sorted by name; dotfiles (e.g. macOS '._x.png') skipped."""
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise InputError(f"{label}: folder {str(folder)!r} cannot be listed: {exc.strerror or exc}") from exc
    files = sorted(
        (p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()),
        key=lambda p: p.name,
    )
    if not files:
        others = sorted(p.name for p in entries)
        found = f"; it holds {len(others)} other entries: {_listing(others)}" if others else "; it is empty"
        raise InputError(
            f"{label}: folder {str(folder)!r} has no images with extensions {', '.join(IMAGE_EXTENSIONS)}{found}"
        )
    return files


def _decode_file(path: Path, label: str) -> _Decoded:
    where = f"{label}: image file {str(path)!r}"
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "does not exist"
        raise ImageLoadError(f"{where} {reason}; expected an image file")
    try:
        with Image.open(path) as img:
            img.load()  # decodes now, so truncated files fail here (LOAD_TRUNCATED_IMAGES is False)
            img = ImageOps.exif_transpose(img)
            rgb, converted_from = _to_rgb(img, where)
    except ImageLoadError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise ImageLoadError(f"{where} cannot be read: {type(exc).__name__}: {exc}") from exc
    return _Decoded(path.name, os.path.abspath(path), rgb, _hash_uint8(rgb), converted_from)


def _decode_pil(img: Image.Image, index: int, label: str) -> _Decoded:
    origin = getattr(img, "filename", "")
    where = f"{label}[{index}] (PIL image{' from ' + repr(origin) if origin else ''})"
    try:
        img.load()
        rgb, converted_from = _to_rgb(img, where)
    except ImageLoadError:
        raise
    except Exception as exc:
        raise ImageLoadError(f"{where} cannot be read: {type(exc).__name__}: {exc}") from exc
    return _Decoded(f"image[{index}]", f"pil[{index}]", rgb, _hash_uint8(rgb), converted_from)


_SIXTEEN_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def _to_rgb(img: Image.Image, where: str) -> tuple[np.ndarray, str | None]:
    """(H, W, 3) uint8 RGB and a description of the source mode (None when already RGB)."""
    mode = img.mode
    has_transparency = "transparency" in img.info and mode in ("1", "L", "P", "RGB")
    if mode == "RGB" and not has_transparency:
        return np.array(img, dtype=np.uint8), None
    if mode in _ALPHA_MODES or has_transparency:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint32)
        rgb, alpha = rgba[..., :3], rgba[..., 3:]
        # out = rgb * a + 255 * (1 - a) with a = alpha / 255, rounded to nearest
        composited = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
        note = f"{mode} with transparency" if has_transparency else mode
        return composited.astype(np.uint8), f"{note}, alpha composited on white"
    if mode in _SIXTEEN_BIT_GRAY or mode == "I":
        gray = np.asarray(img).astype(np.int64)
        if gray.size and (gray.min() < 0 or gray.max() > 65535):
            raise ImageLoadError(
                f"{where}: mode {mode} values span [{gray.min()}, {gray.max()}]; expected 16-bit data in [0, 65535]"
            )
        gray8 = ((gray * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)
        return np.repeat(gray8[..., None], 3, axis=2), f"{mode}, 16-bit gray scaled by 1/257"
    if mode == "F":
        gray = np.asarray(img, dtype=np.float32)
        if not np.isfinite(gray).all():
            raise ImageLoadError(f"{where}: mode F image contains NaN or Inf; expected values in [0, 1]")
        if gray.size and (gray.min() < -_FLOAT_TOLERANCE or gray.max() > 1 + _FLOAT_TOLERANCE):
            raise ImageLoadError(
                f"{where}: mode F values span [{gray.min():.4g}, {gray.max():.4g}]; expected [0, 1] "
                "(divide 0..255 data by 255)"
            )
        gray8 = np.rint(np.clip(gray, 0, 1) * 255).astype(np.uint8)
        return np.repeat(gray8[..., None], 3, axis=2), "F, float gray in [0, 1]"
    try:
        return np.array(img.convert("RGB"), dtype=np.uint8), mode
    except ValueError as exc:
        raise ImageLoadError(f"{where}: mode {mode} cannot be converted to RGB: {exc}") from exc


def _decode_tensor(x: torch.Tensor, label: str) -> list[_Decoded]:
    """Check a (N, 3, H, W) or (3, H, W) tensor and split it into per-image float [0, 1] views."""
    shape = tuple(x.shape)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise InputError(f"{label}: got a tensor of shape {shape}; expected (N, 3, H, W) or (3, H, W)")
    n, channels, height, width = x.shape
    if channels != 3:
        raise InputError(f"{label}: got a tensor of shape {shape}; {_channel_hint(channels, x.shape[-1])}")
    if n == 0 or height == 0 or width == 0:
        raise InputError(f"{label}: got an empty tensor of shape {shape}; expected at least one image")
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        hashes = [_hash_uint8(img.permute(1, 2, 0).numpy()) for img in x]
        x = x.to(torch.float32) / 255
    elif x.dtype.is_floating_point:
        finite = x.flatten(1).isfinite().all(dim=1)
        if not bool(finite.all()):
            i = _first_false(finite)
            count = int((~x[i].isfinite()).sum())
            raise InputError(f"{label}[{i}] contains {count} NaN/Inf values; expected finite values in [0, 1]")
        x = x.to(torch.float32)
        _check_unit_range(x, label)
        x = x.clamp(0, 1)
        hashes = [_hash_float(img) for img in x]
    else:
        raise InputError(f"{label}: got a tensor of dtype {x.dtype}; expected float in [0, 1] or uint8 in [0, 255]")
    return [_Decoded(f"image[{i}]", f"tensor[{i}]", img, hashes[i]) for i, img in enumerate(x)]


def _channel_hint(channels: int, last: int) -> str:
    if channels == 4:
        return (
            "4 channels looks like a VAE latent or an RGBA image; latents are not accepted here. "
            "Expected RGB images (N, 3, H, W) in [0, 1]"
        )
    if channels == 1:
        return "1 channel is grayscale; expected RGB (N, 3, H, W), e.g. x.expand(-1, 3, -1, -1)"
    if last in (1, 3, 4):
        return "it looks channels-last (N, H, W, C); expected (N, 3, H, W), e.g. x.permute(0, 3, 1, 2)"
    return f"{channels} channels; expected RGB (N, 3, H, W) in [0, 1]"


def _check_unit_range(x: torch.Tensor, label: str) -> None:
    flat = x.flatten(1)
    low, high = flat.amin(dim=1), flat.amax(dim=1)
    inside = (low >= -_FLOAT_TOLERANCE) & (high <= 1 + _FLOAT_TOLERANCE)
    if not bool(inside.all()):
        i = _first_false(inside)
        raise InputError(
            f"{label}[{i}]: float values span [{low[i].item():.4g}, {high[i].item():.4g}]; expected [0, 1]. "
            "Images in [-1, 1] must be mapped to [0, 1] first with (x + 1) / 2"
        )


def _hash_uint8(rgb: np.ndarray) -> str:
    """SHA-256 of (H, W, 3) uint8 pixels, shape included."""
    return _hash_array(np.ascontiguousarray(rgb, dtype=np.uint8))


def _hash_float(chw: torch.Tensor) -> str:
    """SHA-256 of (3, H, W) float pixels in [0, 1], hashed as (H, W, 3) float32."""
    return _hash_array(np.ascontiguousarray(chw.detach().cpu().to(torch.float32).permute(1, 2, 0).numpy()))


def _hash_array(array: np.ndarray) -> str:
    digest = hashlib.sha256(f"{array.shape[0]}x{array.shape[1]}x{array.shape[2]}:{array.dtype}:".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- ImageSet input


def _recheck_image_set(
    image_set: ImageSet, prompts: PromptsInput, target: tuple[int, int] | None, resize: str, label: str
) -> ImageSet:
    """An ImageSet is re-validated; it is copied only if prompts or the size change."""
    image_set.__post_init__()
    new_prompts = image_set.prompts
    if prompts is not None:
        new_prompts = _resolve_prompts(prompts, image_set.names, None, label)
        _warn_mixed_empty_prompts(new_prompts, image_set.names, label)
    items = [
        _Decoded(name, source, ((p + 1) / 2).clamp(0, 1), digest)
        for name, source, p, digest in zip(image_set.names, image_set.sources, image_set.pixels, image_set.sha256)
    ]
    tensors, resize_note = _fit_sizes(items, target, resize, label)
    if resize_note:
        warnings.warn(resize_note, UserWarning, stacklevel=3)
    elif prompts is None:
        return image_set
    pixels = image_set.pixels if not resize_note else (torch.stack(tensors) * 2 - 1).contiguous()
    return ImageSet(pixels, list(image_set.names), list(new_prompts), list(image_set.sources), list(image_set.sha256))


# --------------------------------------------------------------------------- size policy


def _fit_sizes(
    items: list[_Decoded], target: tuple[int, int] | None, resize: str, label: str
) -> tuple[list[torch.Tensor], str | None]:
    """Apply the size policy; returns (3, H, W) float32 tensors in [0, 1] and the warning, if any."""
    if target is None:
        sizes = sorted({item.size for item in items})
        if len(sizes) > 1:
            by_size = [f"{h}x{w}: {_listing([i.name for i in items if i.size == (h, w)])}" for h, w in sizes]
            raise InputError(
                f"{label}: images have {len(sizes)} different sizes (HxW) and no resolution was given; "
                f"expected one shared size or a resolution. Sizes: {'; '.join(by_size)}"
            )
        height, width = sizes[0]
        if height % LATENT_FACTOR == 0 and width % LATENT_FACTOR == 0:
            return [_to_tensor(item) for item in items], None
        target = (height // LATENT_FACTOR * LATENT_FACTOR, width // LATENT_FACTOR * LATENT_FACTOR)
        if resize == "error" or 0 in target:
            raise InputError(
                f"{label}: image size {height}x{width} (HxW) is not a multiple of {LATENT_FACTOR}; expected H and W "
                f"divisible by {LATENT_FACTOR} (pass resize='resize' or 'center_crop' to shrink to "
                f"{target[0]}x{target[1]}, or a resolution)"
            )

    mismatched = [item for item in items if item.size != target]
    if not mismatched:
        return [_to_tensor(item) for item in items], None
    listed = _listing([f"{item.name} ({item.size[0]}x{item.size[1]})" for item in mismatched])
    if resize == "error":
        raise InputError(
            f"{label}: {len(mismatched)} of {len(items)} images are not {target[0]}x{target[1]} (HxW) and "
            f"resize='error': {listed}"
        )
    how = "bicubic, aspect ratio not preserved" if resize == "resize" else "center-cropped to the aspect ratio, then bicubic"
    note = (
        f"{label}: resized {len(mismatched)} of {len(items)} images to {target[0]}x{target[1]} (HxW) "
        f"with resize={resize!r} ({how}): {listed}"
    )
    return [_to_tensor(item) if item.size == target else _fit(item, target, resize) for item in items], note


def _to_tensor(item: _Decoded) -> torch.Tensor:
    if isinstance(item.pixels, np.ndarray):
        return torch.from_numpy(item.pixels).permute(2, 0, 1).to(torch.float32) / 255  # (3, H, W)
    return item.pixels


def _crop_box(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the largest centred window with the target's aspect ratio."""
    height, width = size
    if width * target[0] > height * target[1]:  # wider than the target: trim the sides
        crop_h, crop_w = height, max(1, round(height * target[1] / target[0]))
    else:
        crop_h, crop_w = max(1, round(width * target[0] / target[1])), width
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def _fit(item: _Decoded, target: tuple[int, int], resize: str) -> torch.Tensor:
    """Resize (optionally after a centre crop) one image to `target`; (3, H, W) float32 in [0, 1]."""
    top, left, crop_h, crop_w = (0, 0, *item.size) if resize == "resize" else _crop_box(item.size, target)
    if isinstance(item.pixels, np.ndarray):
        img = Image.fromarray(item.pixels[top : top + crop_h, left : left + crop_w])
        if img.size != (target[1], target[0]):
            img = img.resize((target[1], target[0]), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).to(torch.float32) / 255
    window = item.pixels[:, top : top + crop_h, left : left + crop_w].unsqueeze(0)  # (1, 3, h, w)
    if (crop_h, crop_w) != target:
        window = F.interpolate(window, size=target, mode="bicubic", align_corners=False, antialias=True)
    return window[0].clamp(0, 1)


# --------------------------------------------------------------------------- prompts


def _resolve_prompts(prompts: object, names: list[str], folder: Path | None, label: str) -> list[str]:
    """One prompt per image, from a str, a list, a dict or the folder's prompts.csv."""
    n = len(names)
    if prompts is None:
        if folder is None:
            raise InputError(
                f"prompts: none given for {n} {label} passed in memory or as files; expected a str (one prompt "
                f"for all), a list of {n} str, or a dict name -> prompt (names: {_listing(names)})"
            )
        csv_path = folder / PROMPTS_CSV
        if not csv_path.is_file():
            raise InputError(
                f"prompts: none given and {str(csv_path)!r} does not exist; pass prompts= or add a {PROMPTS_CSV} "
                f"with a header row 'file,prompt'"
            )
        return _prompts_from_mapping(_read_prompts_csv(csv_path), names, f"{str(csv_path)!r}", label)
    if isinstance(prompts, str):
        return [prompts] * n
    if isinstance(prompts, Mapping):
        bad = [k for k, v in prompts.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise InputError(f"prompts: dict entries {bad[:_MAX_LISTED]!r} are not str -> str")
        return _prompts_from_mapping(dict(prompts), names, "the prompts dict", label)
    if isinstance(prompts, (list, tuple)):
        if len(prompts) != n:
            raise InputError(f"prompts: got a list of {len(prompts)} prompts for {n} {label}; expected one per image")
        bad_types = [f"[{i}] {type(p).__name__}" for i, p in enumerate(prompts) if not isinstance(p, str)]
        if bad_types:
            raise InputError(f"prompts: entries {_listing(bad_types)} are not str")
        return list(prompts)
    raise InputError(f"prompts: got {type(prompts).__name__}; expected a str, a list of str, a dict or None")


def _prompts_from_mapping(mapping: dict[str, str], names: list[str], where: str, label: str) -> list[str]:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(
            f"prompts: {where} maps file names to prompts but several {label} share the names "
            f"{_listing(duplicates)}; pass a list of prompts instead"
        )
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise InputError(f"prompts: {where} names files that are not among the {label}: {_listing(unknown)}")
    missing = [name for name in names if name not in mapping]
    if missing:
        raise InputError(f"prompts: {where} has no prompt for {len(missing)} of {len(names)} {label}: {_listing(missing)}")
    return [mapping[name] for name in names]


def _read_prompts_csv(path: Path) -> dict[str, str]:
    """file name -> prompt from a CSV with a header; file names and prompts are stripped."""
    where = f"prompts file {str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig drops the BOM spreadsheets write
        rows = list(csv.reader(io.StringIO(text)))
    except UnicodeDecodeError as exc:
        raise InputError(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except (OSError, csv.Error) as exc:
        raise InputError(f"{where} cannot be read: {exc}") from exc

    header = rows[0] if rows else []
    columns = [cell.strip().lower() for cell in header]
    file_columns = [c for c in columns if c in CSV_FILE_COLUMNS]
    if len(file_columns) != 1 or columns.count(CSV_PROMPT_COLUMN) != 1:
        raise InputError(
            f"{where}: expected a header row with one file column (one of {', '.join(CSV_FILE_COLUMNS)}) and one "
            f"'{CSV_PROMPT_COLUMN}' column; found columns {header}"
        )
    file_index, prompt_index = columns.index(file_columns[0]), columns.index(CSV_PROMPT_COLUMN)

    mapping: dict[str, str] = {}
    duplicates: list[str] = []
    for row_number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) <= max(file_index, prompt_index) or not row[file_index].strip():
            raise InputError(f"{where}, row {row_number}: expected a file name and a prompt, got {row}")
        name = row[file_index].strip()
        if name in mapping:
            duplicates.append(name)
        mapping[name] = row[prompt_index].strip()
    if duplicates:
        raise InputError(f"{where} lists these files more than once: {_listing(sorted(set(duplicates)))}")
    if not mapping:
        raise InputError(f"{where} has a header but no rows; expected one row per image")
    return mapping


def _warn_mixed_empty_prompts(prompts: list[str], names: list[str], label: str) -> None:
    """Empty prompts are legitimate (unconditional); a mix of empty and non-empty smells of a gap."""
    empty = [name for name, prompt in zip(names, prompts) if not prompt.strip()]
    if empty and len(empty) < len(prompts):
        warnings.warn(
            f"prompts: {len(empty)} of {len(prompts)} {label} have an empty prompt and are inverted "
            f"unconditionally: {_listing(empty)}",
            UserWarning,
            stacklevel=3,
        )
