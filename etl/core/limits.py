"""Limits a setting's value must keep: a numeric `Range`, and what no file path can be
(`path_problem`). The messages name no value that is not a number or a path."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from etl.core.errors import SettingError


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: finite, from ``low`` (excluded when ``above``) to
    ``high``; `text` goes into the setting's help and its error."""

    low: float
    high: float
    unit: str
    above: bool = False

    def bounds(self) -> str:
        """``between 1 and 1,000`` (or ``more than 0 and at most 1,000``)."""
        low, high = (f"{int(n):,}" if n == int(n) else f"{n:,}" for n in (self.low, self.high))
        return f"more than {low} and at most {high}" if self.above else f"between {low} and {high}"

    def text(self) -> str:
        """The bounds and the unit: ``between 1 and 1,000 rows``."""
        return f"{self.bounds()} {self.unit}"

    def check(self, name: str, value: float | None) -> None:
        """Raise `SettingError` unless ``value`` (None: not set) is in the range."""
        if value is None:
            return
        inside = self.low < value if self.above else self.low <= value
        finite = not isinstance(value, float) or math.isfinite(value)  # ints: any size
        if not (finite and inside and value <= self.high):
            raise SettingError(name, f"must be {self.text()}, got {_number(value)}")


def _number(value: float) -> str:
    """A number for an error message, at most 20 digits (str() of a huge int can fail)."""
    if isinstance(value, int) and abs(value) >= 10**20:
        return "a number of more than 20 digits"
    return str(value)


NAME_MAX, PATH_MAX = 255, 4095  # bytes, as on Linux file systems


def path_problem(text: str) -> str | None:
    """Why ``text`` can be no file path (a NUL, a name or a path too long: the system would
    refuse it with an error of its own), or None."""
    if "\x00" in text:
        return "must not contain a NUL character"
    try:
        encoded = os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate
        return "is not a file name this system can encode"
    if len(encoded) > PATH_MAX:
        return f"is longer than {PATH_MAX:,} bytes"
    if any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        return f"has a file or folder name longer than {NAME_MAX} bytes"
    return None
