"""Hugging Face `from_pretrained` for a local folder or a hub id, offline first, failing in one line.

A folder is always read with `local_files_only=True` (nothing to download). A hub id is read from
the local cache unless the caller passes `local_files_only=False`; with that flag and no network,
transformers still falls back to the cache. Either way a model that cannot be found is one
`ModelError` line naming the id and how to get it (`hf download ID`), never a hub stack trace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..errors import InputError, ModelError, one_line

Loaded = TypeVar("Loaded")


def looks_like_hub_id(text: str) -> bool:
    """'org/name' or 'name': no path anchors, at most one slash."""
    if not text or text.startswith((".", "/", "~")) or "\\" in text or text.endswith("/"):
        return False
    return text.count("/") <= 1 and all(part for part in text.split("/"))


def is_local_folder(source: str | os.PathLike, what: str, expected: str) -> bool:
    """True for an existing folder, False for a hub id; InputError for a path that is neither."""
    if Path(source).is_dir():
        return True
    if isinstance(source, str) and looks_like_hub_id(source):
        return False
    raise InputError(f"{what}: folder {str(source)!r} does not exist; expected {expected}")


def from_pretrained_or_explain(load: Callable[..., Loaded], name: str, *, what: str, kind: str,
                               local_files_only: bool, is_folder: bool, subfolder: str | None = None,
                               **kwargs: Any) -> Loaded:
    """`load(name, local_files_only=..., **kwargs)` (a `from_pretrained`), its failure as one ModelError line.

    Args:
        load: e.g. `CLIPTextModel.from_pretrained`.
        name: a folder or a hub id.
        what: how the message names the thing, e.g. "text encoder", "image classifier".
        kind: what the folder should hold, e.g. "CLIPTextModel".
        local_files_only: for a hub id, read the local cache only (a folder is always local).
        is_folder: `name` is a local folder (see `is_local_folder`).
        subfolder: passed on to `load` when given.
    """
    where = f"{name!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")
    if subfolder:
        kwargs["subfolder"] = subfolder
    try:
        return load(name, local_files_only=local_files_only or is_folder, **kwargs)
    except Exception as error:  # OSError, ValueError or hub errors
        if is_folder:
            raise ModelError(f"could not load a {kind} from {where}: {type(error).__name__}: "
                             f"{one_line(error)[:300]}") from None
        offline = "not in the local Hugging Face cache (local_files_only=True)" if local_files_only else "not found"
        raise ModelError(f"{what} {where} is not a folder here and is {offline}: {type(error).__name__}. "
                         f"Download it first (`hf download {name}`), pass a local folder, or use "
                         "local_files_only=False") from None
