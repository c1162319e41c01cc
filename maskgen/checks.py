"""Checks of plain values that options and functions across the project share."""

from __future__ import annotations

import numpy as np


def is_whole(value) -> bool:
    """Whether `value` is a whole number: a Python or NumPy integer, not a bool (True is an int to
    Python, and 2.0 or 2.5 would be cut to 2 where a count is used)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
