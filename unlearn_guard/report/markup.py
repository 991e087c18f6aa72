"""Small HTML formatting primitives shared by the report's sections: escaping, numbers, images."""

from __future__ import annotations

import html
import math
from typing import Any

from .images import data_uri


def escape_text(value: Any) -> str:
    """Any value as HTML-escaped text (quotes too)."""
    return html.escape(str(value), quote=True)


def format_number(value: Any, digits: int = 3) -> str:
    """A number with `digits` decimals; None as a dash, NaN and inf spelled out, other text escaped."""
    if value is None:
        return "&ndash;"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return escape_text(value)
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return f"{number:.{digits}f}"


def image_tag(png_b64: str, alt: str, css: str = "plot") -> str:
    """An <img> of a base64 PNG as a data URI, so the report opens offline."""
    return f'<img class="{css}" alt="{escape_text(alt)}" src="{data_uri(png_b64)}">'


def rate_interval(rate: dict[str, Any]) -> str:
    """A rate record's interval as "[low, high]"."""
    return "[" + format_number(rate.get("ci_low")) + ", " + format_number(rate.get("ci_high")) + "]" if rate else "&ndash;"
