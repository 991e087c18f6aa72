"""Decode every accepted image input (tensors, PIL images, files, folders) into RGB pixels and a hash.

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
in all three forms), float32 in [0, 1] for float tensors.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import ImageLoadError, InputError
from .checks import FLOAT_TOLERANCE, first_false, first_outside, listing

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
@dataclass
class Decoded:
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


def decode(images: object, label: str) -> tuple[list[Decoded], Path | None]:
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


def _decode_element(element: object, index: int, label: str) -> Decoded:
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
        found = f"; it holds {len(others)} other entries: {listing(others)}" if others else "; it is empty"
        raise InputError(
            f"{label}: folder {str(folder)!r} has no images with extensions {', '.join(IMAGE_EXTENSIONS)}{found}"
        )
    return files


def _decode_file(path: Path, label: str) -> Decoded:
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
    return Decoded(path.name, os.path.abspath(path), rgb, _hash_uint8(rgb), converted_from)


def _decode_pil(img: Image.Image, index: int, label: str) -> Decoded:
    origin = getattr(img, "filename", "")
    where = f"{label}[{index}] (PIL image{' from ' + repr(origin) if origin else ''})"
    try:
        img.load()
        rgb, converted_from = _to_rgb(img, where)
    except ImageLoadError:
        raise
    except Exception as exc:
        raise ImageLoadError(f"{where} cannot be read: {type(exc).__name__}: {exc}") from exc
    return Decoded(f"image[{index}]", f"pil[{index}]", rgb, _hash_uint8(rgb), converted_from)


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
        if gray.size and (gray.min() < -FLOAT_TOLERANCE or gray.max() > 1 + FLOAT_TOLERANCE):
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


def _decode_tensor(x: torch.Tensor, label: str) -> list[Decoded]:
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
            i = first_false(finite)
            count = int((~x[i].isfinite()).sum())
            raise InputError(f"{label}[{i}] contains {count} NaN/Inf values; expected finite values in [0, 1]")
        x = x.to(torch.float32)
        _check_unit_range(x, label)
        x = x.clamp(0, 1)
        hashes = [hash_float(img) for img in x]
    else:
        raise InputError(f"{label}: got a tensor of dtype {x.dtype}; expected float in [0, 1] or uint8 in [0, 255]")
    return [Decoded(f"image[{i}]", f"tensor[{i}]", img, hashes[i]) for i, img in enumerate(x)]


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
    i = first_outside(flat, 0.0, 1.0)
    if i is not None:
        raise InputError(
            f"{label}[{i}]: float values span [{flat[i].min().item():.4g}, {flat[i].max().item():.4g}]; expected [0, 1]. "
            "Images in [-1, 1] must be mapped to [0, 1] first with (x + 1) / 2"
        )


def _hash_uint8(rgb: np.ndarray) -> str:
    """SHA-256 of (H, W, 3) uint8 pixels, shape included."""
    return _hash_array(np.ascontiguousarray(rgb, dtype=np.uint8))


def hash_float(chw: torch.Tensor) -> str:
    """SHA-256 of (3, H, W) float pixels in [0, 1], hashed as (H, W, 3) float32."""
    return _hash_array(np.ascontiguousarray(chw.detach().cpu().to(torch.float32).permute(1, 2, 0).numpy()))


def _hash_array(array: np.ndarray) -> str:
    digest = hashlib.sha256(f"{array.shape[0]}x{array.shape[1]}x{array.shape[2]}:{array.dtype}:".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()
