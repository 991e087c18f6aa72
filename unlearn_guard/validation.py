"""The small checks every boundary repeats, written once.

`require` raises `InputError` naming the argument, the value received and what was expected;
`is_int` / `is_number` are the type tests behind most of those checks (a bool is not a number
here, and a number must be finite); `json_number` writes the floats JSON cannot hold.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from .errors import InputError, InsufficientDataError


def is_int(value: Any) -> bool:
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for a finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require(condition: bool, name: str, value: Any, expected: str) -> None:
    """Raise InputError("<name>: got <value>; expected <expected>") unless `condition` holds."""
    if not condition:
        raise InputError(f"{name}: got {value!r}; expected {expected}")


def require_field(owner: str, condition: bool, field: str, value: Any, expected: str) -> None:
    """`require` for a config dataclass's field: "<owner> field '<field>': got ..., expected ..."."""
    if not condition:
        raise InputError(f"{owner} field {field!r}: got {value!r}, expected {expected}")


def require_two_per_set(**sizes: int) -> None:
    """d_N compares two distributions: each named set needs at least 2 values (one has no spread)."""
    for label, size in sizes.items():
        if size < 2:
            raise InsufficientDataError(f"d_N needs at least 2 images in each set; {label} has {size}")


def json_number(value: float | None) -> float | str | None:
    """JSON has no nan/inf: write them as the strings "nan", "inf", "-inf" that float() reads back."""
    if value is None or math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def require_known_fields(cls: type, data: Mapping[str, Any]) -> None:
    """A config's from_dict: refuse keys that are not fields of the dataclass `cls`, naming them."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise InputError(f"{cls.__name__}: unknown fields {sorted(unknown)}; known: {sorted(known)}")
