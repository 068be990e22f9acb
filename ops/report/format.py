"""Small formatting helpers for human output."""

from __future__ import annotations


def size(num_bytes: int | float) -> str:
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def fraction(value: float) -> str:
    return f"{value:.2%}"


def plain_value(value: object) -> str:
    """A value as a reviewer reads it: `-` for none, floats rounded to 3 decimals."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{round(value, 3)}"
    if isinstance(value, list):
        return "[" + ", ".join(plain_value(v) for v in value) + "]"
    return str(value)
