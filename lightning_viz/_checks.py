"""One validator for the options every public class takes: the bad value in the message, ``True`` never an int."""

from __future__ import annotations

from typing import Any

__all__ = ["check_int"]


def check_int(name: str, value: Any, least: int = 1, none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an int (not a bool) of at least ``least``, or None where ``none``."""
    if none and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        kind = "a positive int" if least == 1 else "a non-negative int" if least == 0 else f"an int >= {least}"
        raise ValueError(f"{name} must be {kind}{' or None' if none else ''}, got {value!r}")
