"""Files: their SHA-256 (remembered per process), and writing result files safely: atomically (a
reader never sees half a file) and with one clear error when the folder cannot take them
(unwritable, read-only, a file in the way, a full disk)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import InputError, OutputError

_HASH_CHUNK = 1 << 22  # 4 MiB
_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, remembered per (path, size, mtime) within the process."""
    file = Path(path).resolve()
    stat = file.stat()
    memo_key = (str(file), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _HASH_MEMO:
        digest = hashlib.sha256()
        try:
            with open(file, "rb") as stream:
                while chunk := stream.read(_HASH_CHUNK):
                    digest.update(chunk)
        except OSError as error:
            raise InputError(f"cannot read {str(file)!r} to hash it: {error.strerror or error}") from None
        _HASH_MEMO[memo_key] = digest.hexdigest()
    return _HASH_MEMO[memo_key]


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a temporary file and a rename: never a half-written file.

    Raises OutputError (an OSError) naming `path`, never the temporary file, when the folder cannot
    be created or written (read-only, a file in the way, a full disk); no temporary file is left.
    """
    target = Path(path)
    temp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 minus the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, target)
    except OSError as error:
        if temp is not None and os.path.exists(temp):
            os.unlink(temp)
        blocker = _file_in_the_way(target.parent)
        reason = f"{str(blocker)!r} is a file, not a folder" if blocker else _reason(error)
        raise OutputError(f"could not write {str(target)!r}: {reason}") from None
    return target


def json_text(data: Any, path: str | os.PathLike | None = None) -> str:
    """`data` as indented JSON text; with `path`, also written there atomically (`write_text_atomic`)."""
    text = json.dumps(data, indent=1)
    if path is not None:
        write_text_atomic(path, text)
    return text


def _file_in_the_way(folder: Path) -> Path | None:
    """The first existing part of `folder` (itself or a parent) that is not a folder, if any."""
    for part in (folder, *folder.parents):
        if part.exists():
            return None if part.is_dir() else part
    return None


def check_writable_folder(folder: str | os.PathLike, argument: str, file: str | os.PathLike | None = None) -> Path:
    """Prove that `folder` can be written (or created), before any compute; nothing is left behind.

    A file is created and removed in `folder`, or in its deepest existing parent when it does not
    exist yet (the folders are created when the first result is written). Raises OutputError naming
    `argument` and the folder (or `file`, the output file meant for it): a file where a folder
    should be, a read-only file system, no permission.
    """
    path = Path(folder)
    subject = f"cannot write {str(file)!r}:" if file is not None else f"{str(path)!r}"
    existing = next((part for part in (path, *path.parents) if part.exists()), Path("."))
    if not existing.is_dir():
        if file is not None:
            raise OutputError(f"{argument}: {subject} {str(existing)!r} is a file, not a folder")
        what = "is a file" if existing == path else f"cannot be created: {str(existing)!r} is a file"
        raise OutputError(f"{argument}: {subject} {what}; expected a writable folder")
    try:
        handle, probe_file = tempfile.mkstemp(dir=existing, prefix=".unlearn_guard_write_check.", suffix=".tmp")
        os.close(handle)
        os.unlink(probe_file)
    except OSError as error:
        where = f"cannot write {str(file)!r}" if file is not None else f"cannot write to {str(path)!r}"
        raise OutputError(f"{argument}: {where} ({_reason(error)}); expected a writable folder") from None
    return path
