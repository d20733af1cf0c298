"""One validator for the options every public class takes: the bad value in the message, ``True`` never an int."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

__all__ = ["check_choice", "check_int"]


def check_int(name: str, value: Any, least: int = 1, none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an int (not a bool) of at least ``least``, or None where ``none``."""
    if none and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        kind = "a positive int" if least == 1 else "a non-negative int" if least == 0 else f"an int >= {least}"
        raise ValueError(f"{name} must be {kind}{' or None' if none else ''}, got {value!r}")


def check_choice(name: str, value: Any, choices: Collection[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)!r}, got {value!r}")
