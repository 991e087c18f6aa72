"""One prompt per image: from a str, a list, a dict name -> prompt, or a folder's prompts.csv; and
prompts with seeds from a CSV (`read_prompt_seeds`, for the prompt attacks)."""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from ..errors import InputError
from .checks import MAX_LISTED, listing

PROMPTS_CSV = "prompts.csv"
CSV_FILE_COLUMNS = ("file", "file_name", "filename", "image")
CSV_PROMPT_COLUMN = "prompt"
CSV_SEED_COLUMNS = ("seed", "evaluation_seed")  # ours, and I2P / UnlearnDiffAtk's


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


def _csv_rows(path: Path, where: str) -> list[list[str]]:
    """Every row of a CSV file (the header first); InputError naming `where` when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig drops the BOM spreadsheets write
        return list(csv.reader(io.StringIO(text)))
    except UnicodeDecodeError as exc:
        raise InputError(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except (OSError, csv.Error) as exc:
        raise InputError(f"{where} cannot be read: {exc}") from exc


def _read_prompts_csv(path: Path) -> dict[str, str]:
    """file name -> prompt from a CSV with a header; file names and prompts are stripped."""
    where = f"prompts file {str(path)!r}"
    rows = _csv_rows(path, where)
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


class PromptSeeds(NamedTuple):
    """Prompts with one generation seed each, in file order (`read_prompt_seeds`)."""

    prompts: list[str]
    seeds: list[int]


def read_prompt_seeds(path: str | os.PathLike) -> PromptSeeds:
    """Prompts and their seeds from a CSV with a header: a `prompt` column and a `seed` or
    `evaluation_seed` column (the I2P / UnlearnDiffAtk layout, `case_number,prompt,evaluation_seed,
    evaluation_guidance`). Other columns are ignored; blank lines are skipped; a seed is an int >= 0
    (written "42" or "42.0"). Every problem is a one-line InputError naming the file and row."""
    path = Path(path)
    where = f"prompts file {str(path)!r}"
    if not path.is_file():
        raise InputError(f"{where} does not exist; expected a CSV with columns prompt,seed (or prompt,evaluation_seed)")
    rows = _csv_rows(path, where)
    header = rows[0] if rows else []
    columns = [cell.strip().lower() for cell in header]
    seed_columns = [c for c in CSV_SEED_COLUMNS if c in columns]
    if columns.count(CSV_PROMPT_COLUMN) != 1 or len(seed_columns) != 1 or columns.count(seed_columns[0]) != 1:
        raise InputError(f"{where}: expected a header row with one '{CSV_PROMPT_COLUMN}' column and one seed column "
                         f"(one of {', '.join(CSV_SEED_COLUMNS)}); found columns {header}")
    prompt_index, seed_index = columns.index(CSV_PROMPT_COLUMN), columns.index(seed_columns[0])
    prompts: list[str] = []
    seeds: list[int] = []
    for row_number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) <= max(prompt_index, seed_index):
            raise InputError(f"{where}, row {row_number}: expected a prompt and a seed, got {row}")
        seeds.append(_seed_cell(row[seed_index], f"{where}, row {row_number}, column {seed_columns[0]!r}"))
        prompts.append(row[prompt_index].strip())
    if not prompts:
        raise InputError(f"{where} has no rows; expected one row per prompt under the header {header}")
    return PromptSeeds(prompts, seeds)


def read_prompts(path: str | os.PathLike) -> list[str]:
    """Prompts alone, in file order: a `.csv` with a header holding one `prompt` column (other
    columns, seeds among them, are ignored: the CSV of `read_prompt_seeds` works too), or any other
    text file with one prompt per line. Blank lines are skipped; every problem is a one-line
    InputError naming the file (and row)."""
    path = Path(path)
    where = f"prompts file {str(path)!r}"
    if not path.is_file():
        raise InputError(f"{where} does not exist; expected a .csv with a prompt column or a text file with "
                         "one prompt per line")
    if path.suffix.lower() == ".csv":
        rows = _csv_rows(path, where)
        columns = [cell.strip().lower() for cell in (rows[0] if rows else [])]
        if columns.count(CSV_PROMPT_COLUMN) != 1:
            raise InputError(f"{where}: expected a header row with one '{CSV_PROMPT_COLUMN}' column; found columns "
                             f"{rows[0] if rows else []}")
        index = columns.index(CSV_PROMPT_COLUMN)
        prompts = []
        for row_number, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if len(row) <= index or not row[index].strip():
                raise InputError(f"{where}, row {row_number}: expected a prompt, got {row}")
            prompts.append(row[index].strip())
    else:
        try:
            prompts = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        except UnicodeDecodeError as exc:
            raise InputError(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not prompts:
        raise InputError(f"{where} holds no prompts; expected one per line (or per row under a 'prompt' header)")
    return prompts


def _seed_cell(cell: str, where: str) -> int:
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value == int(value) and 0 <= value < 2**63):
        raise InputError(f"{where}: got {cell!r}; expected an int >= 0 (a generation seed)")
    return int(text) if text.lstrip("+").isdigit() else int(value)


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
