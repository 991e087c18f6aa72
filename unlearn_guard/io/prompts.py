"""One prompt per image: from a str, a list, a dict name -> prompt, or a folder's prompts.csv."""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Mapping
from pathlib import Path

from ..errors import InputError
from .checks import MAX_LISTED, listing

PROMPTS_CSV = "prompts.csv"
CSV_FILE_COLUMNS = ("file", "file_name", "filename", "image")
CSV_PROMPT_COLUMN = "prompt"


def resolve_prompts(prompts: object, names: list[str], folder: Path | None, label: str) -> list[str]:
    """One prompt per image, from a str, a list, a dict or the folder's prompts.csv."""
    n = len(names)
    if prompts is None:
        if folder is None:
            raise InputError(
                f"prompts: none given for {n} {label} passed in memory or as files; expected a str (one prompt "
                f"for all), a list of {n} str, or a dict name -> prompt (names: {listing(names)})"
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
            raise InputError(f"prompts: dict entries {bad[:MAX_LISTED]!r} are not str -> str")
        return _prompts_from_mapping(dict(prompts), names, "the prompts dict", label)
    if isinstance(prompts, (list, tuple)):
        if len(prompts) != n:
            raise InputError(f"prompts: got a list of {len(prompts)} prompts for {n} {label}; expected one per image")
        bad_types = [f"[{i}] {type(p).__name__}" for i, p in enumerate(prompts) if not isinstance(p, str)]
        if bad_types:
            raise InputError(f"prompts: entries {listing(bad_types)} are not str")
        return list(prompts)
    raise InputError(f"prompts: got {type(prompts).__name__}; expected a str, a list of str, a dict or None")


def _prompts_from_mapping(mapping: dict[str, str], names: list[str], where: str, label: str) -> list[str]:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(
            f"prompts: {where} maps file names to prompts but several {label} share the names "
            f"{listing(duplicates)}; pass a list of prompts instead"
        )
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise InputError(f"prompts: {where} names files that are not among the {label}: {listing(unknown)}")
    missing = [name for name in names if name not in mapping]
    if missing:
        raise InputError(f"prompts: {where} has no prompt for {len(missing)} of {len(names)} {label}: {listing(missing)}")
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
        raise InputError(f"{where} lists these files more than once: {listing(sorted(set(duplicates)))}")
    if not mapping:
        raise InputError(f"{where} has a header but no rows; expected one row per image")
    return mapping


def warn_mixed_empty_prompts(prompts: list[str], names: list[str], label: str) -> None:
    """Empty prompts are legitimate (unconditional); a mix of empty and non-empty smells of a gap."""
    empty = [name for name, prompt in zip(names, prompts) if not prompt.strip()]
    if empty and len(empty) < len(prompts):
        warnings.warn(
            f"prompts: {len(empty)} of {len(prompts)} {label} have an empty prompt and are inverted "
            f"unconditionally: {listing(empty)}",
            UserWarning,
            stacklevel=3,
        )
