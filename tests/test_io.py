"""Tests for unlearn_guard.io: every input form, conversion, error path and size policy."""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from unlearn_guard.errors import ImageLoadError, InputError
from unlearn_guard.io import ImageSet, load_image_set

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


# --------------------------------------------------------------------------- helpers


def _rgb(color=RED, size=(8, 8)) -> Image.Image:
    """A solid RGB image; size is PIL's (W, H)."""
    return Image.new("RGB", size, color)


def _noise(seed: int, size=(64, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _folder(tmp_path: Path, files: dict[str, Image.Image | bytes | str], name: str = "imgs") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file_name, content in files.items():
        path = folder / file_name
        if isinstance(content, Image.Image):
            content.save(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


def _unit(value: float) -> float:
    """An 8-bit value as it appears in ImageSet.pixels."""
    return value / 255 * 2 - 1


def _row0(image_set: ImageSet, count: int) -> list[tuple[float, ...]]:
    """The first `count` pixels of row 0 of image 0, as [-1, 1] RGB triplets."""
    return [tuple(image_set.pixels[0, :, 0, x].tolist()) for x in range(count)]


def _png16_rgb(array: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (PIL cannot write one)."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _load_quiet(*args, **kwargs) -> ImageSet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_image_set(*args, **kwargs)


def _user_warnings(records) -> list[str]:
    return [str(r.message) for r in records if issubclass(r.category, UserWarning)]


# --------------------------------------------------------------------------- PIL mode conversion


def _with_row0(mode: str, fill, row0: list, **info) -> Image.Image:
    img = Image.new(mode, (8, 8), fill)
    for x, value in enumerate(row0):
        img.putpixel((x, 0), value)
    img.info.update(info)
    return img


def _palette(transparent_index: int | None = None) -> Image.Image:
    img = Image.new("P", (8, 8), 0)
    img.putpalette(list(RED) + list(GREEN) + [0] * (256 * 3 - 6))
    img.putpixel((1, 0), 1)
    if transparent_index is not None:
        img.info["transparency"] = transparent_index
    return img


def _gray16(mode: str) -> Image.Image:
    array = np.zeros((8, 8), dtype=">u2" if mode == "I;16B" else np.uint16)
    array[0, :3] = [65535, 0, 257]
    img = Image.fromarray(array)
    assert img.mode == mode  # guards the test's construction, not the code under test
    return img


MODE_CASES = [
    # (id, image factory, expected row-0 pixels as 8-bit RGB, text the warning must contain)
    ("L", lambda: _with_row0("L", 0, [0, 255, 128]), [BLACK, WHITE, (128,) * 3], "image[0] (L)"),
    ("1", lambda: _with_row0("1", 0, [0, 1]), [BLACK, WHITE], "image[0] (1)"),
    ("LA", lambda: _with_row0("LA", (0, 255), [(0, 255), (0, 0), (0, 128)]), [BLACK, WHITE, (127,) * 3],
     "LA, alpha composited on white"),
    ("RGBA", lambda: _with_row0("RGBA", RED + (255,), [RED + (255,), BLUE + (0,), BLACK + (128,)]),
     [RED, WHITE, (127,) * 3], "RGBA, alpha composited on white"),
    ("P", lambda: _palette(), [RED, GREEN], "image[0] (P)"),
    ("P+transparency", lambda: _palette(transparent_index=1), [RED, WHITE],
     "P with transparency, alpha composited on white"),
    ("RGB+tRNS", lambda: _with_row0("RGB", RED, [RED, BLACK], transparency=BLACK), [RED, WHITE],
     "RGB with transparency"),
    ("CMYK", lambda: _with_row0("CMYK", (0, 0, 0, 0), [(255, 0, 0, 0), (0, 0, 0, 0)]), [(0, 255, 255), WHITE],
     "image[0] (CMYK)"),
    ("I;16", lambda: _gray16("I;16"), [WHITE, BLACK, (1,) * 3], "I;16, 16-bit gray scaled by 1/257"),
    ("I;16B", lambda: _gray16("I;16B"), [WHITE, BLACK, (1,) * 3], "I;16B, 16-bit gray"),
    ("I", lambda: _with_row0("I", 0, [65535, 0, 32768]), [WHITE, BLACK, (128,) * 3], "image[0] (I, 16-bit gray"),
    ("F", lambda: _with_row0("F", 0.0, [1.0, 0.0, 0.2]), [WHITE, BLACK, (51,) * 3], "F, float gray in [0, 1]"),
]


@pytest.mark.parametrize("factory, expected, warned", [c[1:] for c in MODE_CASES], ids=[c[0] for c in MODE_CASES])
def test_pil_modes_convert_to_rgb_with_one_warning(factory, expected, warned):
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        image_set = load_image_set(factory(), "p")
    messages = _user_warnings(records)
    assert len(messages) == 1 and warned in messages[0] and "converted 1 of 1 images to RGB" in messages[0]
    want = [tuple(_unit(v) for v in rgb) for rgb in expected]
    np.testing.assert_allclose(_row0(image_set, len(expected)), want, atol=1e-6)


def test_gray16_png_file_maps_extremes_to_plus_minus_one(tmp_path):
    folder = _folder(tmp_path, {"g.png": _gray16("I;16"), "prompts.csv": "file,prompt\ng.png,gray\n"})
    with Image.open(folder / "g.png") as reread:
        assert reread.mode.startswith("I")  # PIL keeps 16 bits on disk, so our scaling path is exercised
    with pytest.warns(UserWarning, match=r"g\.png \(I;16, 16-bit gray scaled by 1/257\)"):
        image_set = load_image_set(folder)
    assert image_set.pixels[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert image_set.pixels[0, :, 0, 1].tolist() == [-1.0, -1.0, -1.0]


def test_palette_png_with_transparency_from_file(tmp_path):
    folder = _folder(tmp_path, {"p.png": _palette(transparent_index=1)})
    with pytest.warns(UserWarning, match=r"p\.png \(P with transparency, alpha composited on white\)"):
        image_set = load_image_set(folder, "x")
    np.testing.assert_allclose(_row0(image_set, 2), [(1, -1, -1), (1, 1, 1)], atol=1e-6)


def test_16bit_rgb_png_loads_as_8bit_rgb(tmp_path):
    array = np.zeros((8, 8, 3), dtype=np.uint16)
    array[0, 0] = [65535, 0, 32768]
    folder = _folder(tmp_path, {"deep.png": _png16_rgb(array)})
    with Image.open(folder / "deep.png") as img:
        mode = img.mode
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow 13 hands us plain "RGB": nothing to convert, no warning
        image_set = load_image_set(folder, "x") if mode == "RGB" else _load_quiet(folder, "x")
    np.testing.assert_allclose(image_set.pixels[0, :, 0, 0].tolist(), [1.0, -1.0, _unit(128)], atol=1e-6)


def test_one_warning_lists_every_converted_image_and_none_for_rgb():
    images = [_rgb(), Image.new("L", (8, 8), 9), Image.new("RGBA", (8, 8), (1, 2, 3, 4))]
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        load_image_set(images, "p")
    messages = _user_warnings(records)
    assert len(messages) == 1
    assert "converted 2 of 3" in messages[0] and "image[1] (L)" in messages[0] and "image[2] (RGBA" in messages[0]
    assert "image[0]" not in messages[0]


def test_plain_rgb_inputs_emit_no_warning(tmp_path):
    folder = _folder(tmp_path, {"a.png": _rgb(), "prompts.csv": "file,prompt\na.png,cat\n"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image_set(folder)
        load_image_set([_rgb(), _rgb(BLUE)], "cat")
        load_image_set(torch.rand(2, 3, 8, 8), "cat")


@pytest.mark.parametrize(
    "mode, values, match",
    [("I", [70000], r"mode I values span \[0, 70000\]"), ("F", [2.5], r"mode F values span .*expected \[0, 1\]"),
     ("F", [float("nan")], "NaN")],
)
def test_out_of_range_wide_modes_raise(mode, values, match):
    with pytest.raises(ImageLoadError, match=r"images\[0\] \(PIL image\).*" + match):
        load_image_set(_with_row0(mode, 0, values), "p")


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: a 16 wide x 8 high file is shown 8 wide x 16 high
    path = tmp_path / "rot.jpg"
    _rgb(size=(16, 8)).save(path, exif=exif)
    assert load_image_set([path], "p").size == (16, 8)


# --------------------------------------------------------------------------- tensors


def _with_value(x: torch.Tensor, index: int, value: float) -> torch.Tensor:
    x = x.clone()
    x[index, 0, 0, 0] = value
    return x


TENSOR_ERRORS = [
    ("latent", torch.rand(2, 4, 8, 8), r"4 channels looks like a VAE latent or an RGBA.*\(N, 3, H, W\) in \[0, 1\]"),
    ("gray", torch.rand(2, 1, 8, 8), r"shape \(2, 1, 8, 8\); 1 channel is grayscale"),
    ("channels_last", torch.rand(2, 8, 8, 3), r"channels-last"),
    ("minus_one_one", torch.rand(2, 3, 8, 8) * 2 - 1, r"images\[0\].*must be mapped to \[0, 1\].*\(x \+ 1\) / 2"),
    ("0_255_float", torch.rand(3, 8, 8) * 255, r"span \[.*\]; expected \[0, 1\]"),
    ("nan", _with_value(torch.rand(3, 3, 8, 8), 2, float("nan")), r"images\[2\] contains 1 NaN/Inf"),
    ("inf", _with_value(torch.rand(3, 3, 8, 8), 1, float("inf")), r"images\[1\] contains 1 NaN/Inf"),
    ("int64", torch.zeros(1, 3, 8, 8, dtype=torch.int64), r"dtype torch\.int64; expected float .* or uint8"),
    ("bool", torch.zeros(1, 3, 8, 8, dtype=torch.bool), r"dtype torch\.bool"),
    ("5d", torch.rand(1, 1, 3, 8, 8), r"shape \(1, 1, 3, 8, 8\); expected \(N, 3, H, W\) or \(3, H, W\)"),
    ("2d", torch.rand(8, 8), r"shape \(8, 8\)"),
    ("empty", torch.rand(0, 3, 8, 8), r"empty tensor"),
]


@pytest.mark.parametrize("tensor, match", [c[1:] for c in TENSOR_ERRORS], ids=[c[0] for c in TENSOR_ERRORS])
def test_bad_tensors_raise_input_error(tensor, match):
    with pytest.raises(InputError, match=match):
        load_image_set(tensor, "p")


def test_label_names_the_argument():
    with pytest.raises(InputError, match=r"^reference\[1\] contains"):
        load_image_set(_with_value(torch.rand(2, 3, 8, 8), 1, float("nan")), "p", label="reference")
    with pytest.raises(InputError, match=r"^reference: got an empty list"):
        load_image_set([], "p", label="reference")


@pytest.mark.parametrize(
    "tensor, expected_first",
    [
        (torch.full((2, 3, 8, 8), 255, dtype=torch.uint8), 1.0),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), -1.0),
        (torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64), 0.0),
        (torch.full((1, 3, 8, 8), 0.25, dtype=torch.float16), -0.5),
        (torch.full((1, 3, 8, 8), 1 + 5e-7), 1.0),  # within the 1e-6 tolerance: clamped, not rejected
    ],
    ids=["uint8", "chw", "float64", "float16", "tolerance"],
)
def test_accepted_tensors(tensor, expected_first):
    image_set = load_image_set(tensor, "p")
    n = tensor.shape[0] if tensor.ndim == 4 else 1
    assert image_set.pixels.shape == (n, 3, 8, 8) and image_set.pixels.dtype == torch.float32
    assert image_set.pixels.is_contiguous()
    assert image_set.pixels[0, 0, 0, 0].item() == pytest.approx(expected_first, abs=1e-6)
    assert image_set.names == [f"image[{i}]" for i in range(n)]
    assert image_set.sources == [f"tensor[{i}]" for i in range(n)]


@pytest.mark.parametrize(
    "images, match",
    [
        ([], r"images: got an empty list"),
        (np.zeros((1, 8, 8, 3), dtype=np.uint8), r"numpy array .*torch\.from_numpy"),
        ([torch.rand(3, 8, 8)], r"images\[0\]: got Tensor.*torch\.stack"),
        ([_rgb(), 3], r"images\[1\]: got int"),
        (42, r"images: got int; expected a tensor"),
    ],
    ids=["empty_list", "numpy", "list_of_tensors", "list_with_int", "int"],
)
def test_unsupported_inputs(images, match):
    with pytest.raises(InputError, match=match):
        load_image_set(images, "p")


# --------------------------------------------------------------------------- folders and files


def test_folder_sorted_by_name_with_case_insensitive_extensions(tmp_path):
    files = {
        "b.png": _rgb(RED),
        "a.JPG": _rgb(GREEN),
        "e.jpeg": _rgb(BLUE),
        "c.webp": _rgb(WHITE),
        "d.BMP": _rgb(BLACK),
        "notes.txt": "ignored",
        "anim.gif": b"GIF89a not read",
        "._b.png": b"macOS resource fork, skipped",
        "prompts.csv": "file,prompt\n" + "".join(f"{n},p {n}\n" for n in ["a.JPG", "b.png", "c.webp", "d.BMP", "e.jpeg"]),
    }
    folder = _folder(tmp_path, files)
    (folder / "z.png").mkdir()  # a directory with an image name is not an image
    image_set = load_image_set(str(folder))
    assert image_set.names == ["a.JPG", "b.png", "c.webp", "d.BMP", "e.jpeg"]
    assert image_set.prompts == [f"p {n}" for n in image_set.names]
    assert image_set.sources == [os.path.abspath(folder / n) for n in image_set.names]
    assert image_set.pixels[1, :, 0, 0].tolist() == [1.0, -1.0, -1.0]  # b.png is the red PNG
    assert image_set.pixels[3, :, 0, 0].tolist() == [-1.0, -1.0, -1.0]  # d.BMP is the black BMP


@pytest.mark.parametrize(
    "files, match",
    [
        ({}, r"folder '.*imgs' has no images .*it is empty"),
        ({"readme.txt": "x", "prompts.csv": "file,prompt\n"}, r"folder '.*imgs' has no images .*readme\.txt"),
    ],
    ids=["empty", "no_images"],
)
def test_folder_without_images(tmp_path, files, match):
    with pytest.raises(InputError, match=match):
        load_image_set(_folder(tmp_path, files))


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match=r"images: no folder or file at '.*nowhere'"):
        load_image_set(tmp_path / "nowhere", "p")


def _truncated(fmt: str) -> bytes:
    buffer = io.BytesIO()
    _noise(0).save(buffer, fmt)
    data = buffer.getvalue()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "file_name, content, match",
    [
        ("cut.png", _truncated("PNG"), r"cut\.png' cannot be read: OSError: image file is truncated"),
        ("cut.jpg", _truncated("JPEG"), r"cut\.jpg' cannot be read: OSError: image file is truncated"),
        ("junk.png", b"this is not a png at all" * 10, r"junk\.png' cannot be read: UnidentifiedImageError"),
        ("empty.png", b"", r"empty\.png' cannot be read"),
    ],
    ids=["truncated_png", "truncated_jpeg", "garbage", "zero_bytes"],
)
def test_corrupt_files_raise_image_load_error(tmp_path, file_name, content, match):
    folder = _folder(tmp_path, {"good.png": _rgb(), file_name: content})
    with pytest.raises(ImageLoadError, match=match):
        load_image_set(folder, "p")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_file_list_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageLoadError, match=r"image file '.*ghost\.png' does not exist"):
        load_image_set([tmp_path / "ghost.png"], "p")
    with pytest.raises(ImageLoadError, match=r"image file '.*' is a directory"):
        load_image_set([tmp_path], "p")


def test_file_list_mixed_with_pil(tmp_path):
    folder = _folder(tmp_path, {"a.png": _rgb(GREEN)})
    image_set = load_image_set([folder / "a.png", _rgb(BLUE)], ["green", "blue"])
    assert image_set.names == ["a.png", "image[1]"]
    assert image_set.sources == [os.path.abspath(folder / "a.png"), "pil[1]"]
    assert image_set.pixels[:, :, 0, 0].tolist() == [[-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]


def test_single_file_path_is_one_image(tmp_path):
    folder = _folder(tmp_path, {"a.png": _rgb()})
    image_set = load_image_set(folder / "a.png", "p")
    assert len(image_set) == 1 and image_set.names == ["a.png"]


# --------------------------------------------------------------------------- prompts


@pytest.mark.parametrize(
    "prompts, expected",
    [
        ("a cat", ["a cat", "a cat"]),
        (["a cat", "a dog"], ["a cat", "a dog"]),
        (("a cat", "a dog"), ["a cat", "a dog"]),
        ({"image[1]": "dog", "image[0]": "cat"}, ["cat", "dog"]),
        ("", ["", ""]),
    ],
    ids=["str", "list", "tuple", "dict", "all_empty"],
)
def test_prompt_forms(prompts, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all-empty is deliberate unconditional use: no warning
        image_set = load_image_set([_rgb(), _rgb(BLUE)], prompts)
    assert image_set.prompts == expected


@pytest.mark.parametrize(
    "prompts, match",
    [
        (["a", "b", "c"], r"prompts: got a list of 3 prompts for 2 images"),
        (["a", 1], r"prompts: entries \[1\] int are not str"),
        ({"image[0]": "cat"}, r"the prompts dict has no prompt for 1 of 2 images: image\[1\]"),
        ({"image[0]": "a", "image[1]": "b", "cat.png": "c"}, r"names files that are not among the images: cat\.png"),
        ({"image[0]": 3, "image[1]": "b"}, r"not str -> str"),
        (7, r"prompts: got int"),
        (None, r"prompts: none given for 2 images passed in memory"),
    ],
    ids=["long_list", "non_str", "dict_missing", "dict_unknown", "dict_value_type", "bad_type", "none_in_memory"],
)
def test_prompt_errors(prompts, match):
    with pytest.raises(InputError, match=match):
        load_image_set([_rgb(), _rgb(BLUE)], prompts)


def test_mixed_empty_prompts_warn():
    with pytest.warns(UserWarning, match=r"1 of 2 images have an empty prompt .*: image\[1\]"):
        image_set = load_image_set([_rgb(), _rgb(BLUE)], ["a cat", " "])
    assert image_set.prompts == ["a cat", " "]


def test_dict_prompts_reject_duplicate_file_names(tmp_path):
    first = _folder(tmp_path, {"x.png": _rgb()}, "one")
    second = _folder(tmp_path, {"x.png": _rgb(BLUE)}, "two")
    with pytest.raises(InputError, match=r"share the names x\.png"):
        load_image_set([first / "x.png", second / "x.png"], {"x.png": "p"})
    assert load_image_set([first / "x.png", second / "x.png"], ["a", "b"]).names == ["x.png", "x.png"]


@pytest.mark.parametrize("column", ["file", "file_name", "filename", "image", "File"])
def test_csv_file_column_names(tmp_path, column):
    csv_text = f"\ufeff{column},Prompt\nb.png,  a dog \na.png,a cat\n\n"  # BOM, spaces, blank line
    folder = _folder(tmp_path, {"a.png": _rgb(), "b.png": _rgb(BLUE), "prompts.csv": csv_text})
    assert load_image_set(folder).prompts == ["a cat", "a dog"]


def test_csv_quoted_prompt_with_comma(tmp_path):
    folder = _folder(tmp_path, {"a.png": _rgb(), "prompts.csv": 'prompt,file\n"a cat, sitting",a.png\n'})
    assert load_image_set(folder).prompts == ["a cat, sitting"]


@pytest.mark.parametrize(
    "csv_text, match",
    [
        ("name,text\na.png,cat\n", r"found columns \['name', 'text'\]"),
        ("a.png,a cat\n", r"found columns \['a\.png', 'a cat'\]"),
        ("", r"found columns \[\]"),
        ("file,image,prompt\na.png,a.png,cat\n", r"one file column .*found columns \['file', 'image', 'prompt'\]"),
        ("file,prompt\n", r"has a header but no rows"),
        ("file,prompt\na.png\n", r"row 2: expected a file name and a prompt, got \['a\.png'\]"),
        ("file,prompt\na.png,cat\na.png,dog\n", r"lists these files more than once: a\.png"),
        ("file,prompt\na.png,cat\nghost.png,boo\nnotes.txt,x\n",
         r"names files that are not among the images: ghost\.png, notes\.txt"),
        ("file,prompt\nb.png,dog\n", r"has no prompt for 1 of 2 images: a\.png"),
        (b"file,prompt\na.png,\xff\xfe bad\n", r"is not UTF-8 text"),
    ],
    ids=["wrong_header", "no_header", "empty", "two_file_columns", "header_only", "short_row", "duplicate",
         "missing_files", "image_without_prompt", "not_utf8"],
)
def test_bad_prompts_csv(tmp_path, csv_text, match):
    folder = _folder(tmp_path, {"a.png": _rgb(), "b.png": _rgb(BLUE), "notes.txt": "x", "prompts.csv": csv_text})
    with pytest.raises(InputError, match=r"prompts.*prompts\.csv'.*" + match):
        load_image_set(folder)


def test_folder_without_prompts_csv(tmp_path):
    folder = _folder(tmp_path, {"a.png": _rgb()})
    with pytest.raises(InputError, match=r"prompts: none given and '.*prompts\.csv' does not exist"):
        load_image_set(folder)


def test_explicit_prompts_override_a_broken_csv(tmp_path):
    folder = _folder(tmp_path, {"a.png": _rgb(), "prompts.csv": "garbage"})
    assert load_image_set(folder, {"a.png": "a cat"}).prompts == ["a cat"]


# --------------------------------------------------------------------------- size policy


def test_mixed_sizes_without_resolution():
    images = [_rgb(size=(8, 8)), _rgb(size=(16, 8)), _rgb(size=(16, 8))]
    with pytest.raises(InputError, match=r"2 different sizes .*8x8: image\[0\]; 8x16: image\[1\], image\[2\]"):
        load_image_set(images, "p")


@pytest.mark.parametrize(
    "policy, expected_size", [("resize", (8, 16)), ("center_crop", (8, 16))], ids=["resize", "center_crop"]
)
def test_non_multiple_of_8_shrinks_with_warning(policy, expected_size):
    with pytest.warns(UserWarning, match=rf"resized 1 of 1 images to 8x16 \(HxW\) with resize='{policy}'"):
        image_set = load_image_set(_rgb(size=(20, 12)), "p", resize=policy)
    assert image_set.size == expected_size
    assert image_set.pixels[0, :, 4, 8].tolist() == [1.0, -1.0, -1.0]  # solid red stays red


@pytest.mark.parametrize("size, policy", [((20, 12), "error"), ((4, 4), "resize")], ids=["error", "too_small"])
def test_non_multiple_of_8_errors(size, policy):
    with pytest.raises(InputError, match=rf"size {size[1]}x{size[0]} \(HxW\) is not a multiple of 8"):
        load_image_set(_rgb(size=size), "p", resize=policy)


def test_resolution_error_policy_names_images_and_sizes():
    images = [_rgb(size=(16, 16)), _rgb(size=(8, 8)), _rgb(size=(24, 16))]
    with pytest.raises(InputError, match=r"2 of 3 images are not 16x16 \(HxW\).*image\[1\] \(8x8\), image\[2\] \(16x24\)"):
        load_image_set(images, "p", resolution=16, resize="error")


def test_resize_policy_resizes_only_mismatched_images():
    images = [_rgb(GREEN, size=(16, 16)), _rgb(BLUE, size=(40, 24))]
    with pytest.warns(UserWarning, match=r"resized 1 of 2 images to 16x16 .*aspect ratio not preserved.*image\[1\] \(24x40\)"):
        image_set = load_image_set(images, "p", resolution=(16, 16))
    assert image_set.size == (16, 16)
    assert torch.equal(image_set.pixels[1], torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1).expand(3, 16, 16))


def _stripes() -> Image.Image:
    """8 high x 24 wide: red, green, red thirds."""
    array = np.zeros((8, 24, 3), dtype=np.uint8)
    array[:, :, 0] = 255
    array[:, 8:16] = GREEN
    return Image.fromarray(array)


@pytest.mark.parametrize("as_tensor", [False, True], ids=["pil", "tensor"])
@pytest.mark.parametrize("resolution", [8, 16])
def test_center_crop_keeps_the_middle(as_tensor, resolution):
    image = _stripes()
    images = torch.from_numpy(np.array(image)).permute(2, 0, 1) if as_tensor else image
    with pytest.warns(UserWarning, match=r"resize='center_crop' \(center-cropped"):
        image_set = load_image_set(images, "p", resolution=resolution, resize="center_crop")
    green = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, resolution, resolution)
    torch.testing.assert_close(image_set.pixels[0], green, atol=1e-5, rtol=0)
    resized = _load_quiet(images, "p", resolution=resolution, resize="resize")
    assert resized.pixels[0, 0].max() > 0.9  # plain resize keeps the red sides


def test_tensor_resize_is_clamped_and_keeps_constants():
    checker = (torch.arange(8).view(8, 1) + torch.arange(8).view(1, 8)) % 2  # bicubic overshoots on this
    images = torch.stack([torch.full((3, 8, 8), 0.25), checker.expand(3, 8, 8).float()])
    with pytest.warns(UserWarning, match="resized 2 of 2"):
        image_set = load_image_set(images, "p", resolution=(24, 16))
    assert image_set.size == (24, 16)
    torch.testing.assert_close(image_set.pixels[0], torch.full((3, 24, 16), -0.5), atol=1e-6, rtol=0)
    assert image_set.pixels.min() >= -1 and image_set.pixels.max() <= 1


@pytest.mark.parametrize("resolution", [0, -8, (8,), (8, 0), "512", True, 8.0])
def test_bad_resolution(resolution):
    with pytest.raises(InputError, match=r"^resolution: got .*expected a positive int or \(height, width\)"):
        load_image_set(_rgb(), "p", resolution=resolution)


def test_bad_resize_policy():
    with pytest.raises(InputError, match=r"^resize: got 'stretch'"):
        load_image_set(_rgb(), "p", resize="stretch")


# --------------------------------------------------------------------------- hashes


def test_sha256_same_picture_same_hash_in_every_form(tmp_path):
    picture = _noise(1, size=(16, 8))
    folder = _folder(tmp_path, {"n.png": picture, "prompts.csv": "file,prompt\nn.png,x\n"})
    as_uint8 = torch.from_numpy(np.array(picture)).permute(2, 0, 1)
    hashes = {
        load_image_set(folder).sha256[0],
        load_image_set(folder).sha256[0],
        load_image_set(picture, "x").sha256[0],
        load_image_set(as_uint8, "x").sha256[0],
        _load_quiet(picture, "x", resolution=32).sha256[0],  # hashed before the resize
    }
    assert len(hashes) == 1 and re.fullmatch(r"[0-9a-f]{64}", hashes.pop())


def test_sha256_distinct_for_different_images():
    images = [_noise(1, (8, 8)), _noise(2, (8, 8)), _rgb(BLACK, (16, 8)), _rgb(BLACK, (8, 16))]
    hashes = [load_image_set(img, "x").sha256[0] for img in images]
    assert len(set(hashes)) == 4  # same zero bytes, different shape -> different hash
    floats = load_image_set(torch.stack([torch.zeros(3, 8, 8), torch.full((3, 8, 8), 1e-3)]), "x").sha256
    assert floats[0] != floats[1]


# --------------------------------------------------------------------------- ImageSet


def _three() -> ImageSet:
    return load_image_set([_rgb(RED), _rgb(GREEN), _rgb(BLUE)], ["r", "g", "b"])


def test_image_set_len_and_subset():
    image_set = _three()
    picked = image_set.subset([2, 0])
    assert len(image_set) == 3 and len(picked) == 2
    assert picked.names == ["image[2]", "image[0]"] and picked.prompts == ["b", "r"]
    assert picked.sources == ["pil[2]", "pil[0]"]
    assert picked.sha256 == [image_set.sha256[2], image_set.sha256[0]]
    assert torch.equal(picked.pixels, image_set.pixels[[2, 0]])


@pytest.mark.parametrize("indices, match", [([3], r"\[3\] are not ints in \[-3, 3\)"), ([], "empty"), ([0.5], "0.5")])
def test_image_set_subset_errors(indices, match):
    with pytest.raises(InputError, match=match):
        _three().subset(indices)


def test_image_set_passes_through_and_can_be_reprompted_or_resized():
    image_set = _three()
    assert load_image_set(image_set) is image_set
    reprompted = load_image_set(image_set, "a colour")
    assert reprompted.prompts == ["a colour"] * 3 and torch.equal(reprompted.pixels, image_set.pixels)
    with pytest.warns(UserWarning, match="resized 3 of 3 images to 16x16"):
        resized = load_image_set(image_set, resolution=16)
    assert resized.size == (16, 16) and resized.sha256 == image_set.sha256
    with pytest.raises(InputError, match=r"3 of 3 images are not 16x16"):
        load_image_set(image_set, resolution=16, resize="error")


@pytest.mark.parametrize(
    "pixels, names, match",
    [
        (torch.rand(1, 3, 8, 8) * 3, ["a"], r"pixels\[0\] has values in .*expected \[-1, 1\]"),
        (torch.full((1, 3, 8, 8), float("nan")), ["a"], r"pixels\[0\] contains NaN"),
        (torch.zeros(1, 4, 8, 8), ["a"], r"expected \(N >= 1, 3, H, W\) float32"),
        (torch.zeros(2, 3, 8, 8), ["a"], r"ImageSet\.names: expected a list of 2 str"),
    ],
    ids=["range", "nan", "channels", "names_length"],
)
def test_image_set_validates_itself(pixels, names, match):
    with pytest.raises(InputError, match=match):
        ImageSet(pixels=pixels, names=names, prompts=["p"] * len(names), sources=["s"] * len(names))


def test_image_set_computes_missing_hashes():
    pixels = torch.zeros(2, 3, 8, 8)
    pixels[1] = 0.5
    image_set = ImageSet(pixels=pixels, names=["a", "b"], prompts=["", ""], sources=["x", "y"])
    assert len(image_set.sha256) == 2 and image_set.sha256[0] != image_set.sha256[1]


def test_output_pixels_are_float32_contiguous_in_range(tmp_path):
    folder = _folder(tmp_path, {"n.png": _noise(3, (16, 16)), "prompts.csv": "file,prompt\nn.png,x\n"})
    pixels = load_image_set(folder).pixels
    assert pixels.dtype == torch.float32 and pixels.is_contiguous() and pixels.shape == (1, 3, 16, 16)
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert torch.equal(pixels[0], torch.from_numpy(np.array(_noise(3, (16, 16)))).permute(2, 0, 1) / 255 * 2 - 1)


# --------------------------------------------------------------------------- prompts alone (read_prompts)
@pytest.mark.parametrize("name, text, expected", [
    ("p.csv", "case_number,prompt,evaluation_seed\n0,\"a dog, running\",1\n\n1, a cat ,2\n", ["a dog, running", "a cat"]),
    ("p.csv", "Prompt\na circle\n", ["a circle"]),
    ("p.txt", "a dog\n\n  a red car  \nprompt\n", ["a dog", "a red car", "prompt"]),  # a text file has no header
])
def test_read_prompts_takes_a_csv_prompt_column_or_lines(tmp_path, name, text, expected):
    from unlearn_guard.io import read_prompts

    (tmp_path / name).write_text(text)
    assert read_prompts(tmp_path / name) == expected


@pytest.mark.parametrize("name, text, message", [
    ("p.csv", "text,seed\na,1\n", "expected a header row with one 'prompt' column"),
    ("p.csv", "prompt,seed\n,1\n", "row 2: expected a prompt"),
    ("p.csv", "prompt\n", "holds no prompts"),
    ("p.txt", "\n \n", "holds no prompts"),
    ("missing.txt", None, "does not exist"),
])
def test_read_prompts_errors_are_one_line(tmp_path, name, text, message):
    from unlearn_guard.io import read_prompts

    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=message) as error:
        read_prompts(tmp_path / name)
    assert "\n" not in str(error.value)
