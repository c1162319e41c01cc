"""Checks of plain values that options and functions across the project share."""

from __future__ import annotations

import numpy as np


def is_whole(value) -> bool:
    """Whether `value` is a whole number: a Python or NumPy integer, not a bool (True is an int to
    Python, and 2.0 or 2.5 would be cut to 2 where a count is used)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value) -> bool:
    """A real number, not a bool (True passed as 1.0 where a threshold was meant)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_unit(name: str, value, low_open: bool = False) -> None:
    """`value` in [0, 1] ((0, 1] with `low_open`); NaN, bools and text refused."""
    if not is_number(value) or not (0 < value <= 1 if low_open else 0 <= value <= 1):
        raise ValueError(f"{name} must be a number in {'(0, 1]' if low_open else '[0, 1]'}, got {value!r}")


def check_five_points(points, what: str = "a face's points") -> np.ndarray:
    """A face's 5 (x, y) points as a (5, 2) float64 array (given as (5, 2), or (10,) x, y, x, y, ...),
    refused (ValueError, naming `what`) unless they are 10 finite numbers so shaped: NaN warped a crop
    to nothing, 68 points were NumPy's or OpenCV's error (the message says where the 5 come from), and
    a (2, 5) array of xs and ys read as other points."""
    try:
        arr = np.asarray(points, dtype=np.float64) if not isinstance(points, (str, bytes)) else None
    except (TypeError, ValueError):  # text, None among them
        arr = None
    if arr is None:
        if hasattr(points, "points"):  # a detector Face: its whole repr was the message
            raise ValueError(f"{what} are 5 finite (x, y) points, got a {type(points).__name__}: give its .points")
        raise ValueError(f"{what} are 5 finite (x, y) points, got {points!r}")
    if arr.shape not in ((5, 2), (10,)):
        raise ValueError(f"{what} are 5 finite (x, y) points, got shape {arr.shape}"
                         + (" (68 points: maskgen.facetype.five_points gives the 5)" if arr.size == 136 else ""))
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} are 5 finite (x, y) points, got NaN or infinite values: {arr.reshape(-1).tolist()}")
    return arr.reshape(5, 2)


def check_colour(colour, what: str = "a colour") -> tuple[int, int, int]:
    """(R, G, B) as three ints from 0 to 255 (None and 5 were "not iterable" TypeErrors, True passed
    as 1, and a decoder's background of -1 was clamped to 0, "red" taken, (0,) read as black)."""
    try:
        values = tuple(colour) if not isinstance(colour, (str, bytes)) else ()
    except TypeError:
        values = ()
    if len(values) != 3 or not all(is_whole(v) and 0 <= v <= 255 for v in values):
        raise ValueError(f"{what} is three whole numbers from 0 to 255 (R, G, B), got {colour!r}")
    return tuple(int(v) for v in values)


def read_flag(value, what: str = "a flag") -> bool:
    """A flag as tables write it: a boolean, 1 or 0 (a number: 2, -1 or 0.5 are refused, as their
    text is), or a yes/no word ("masked", "true", "0", ...); "1.0" and "0.0" are a CSV that pandas
    wrote from a flag column with gaps (a float column); NaN and an empty cell are False."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if is_number(value):
        if value != value:  # NaN: an empty cell as pandas and Parquet writers give it, not "masked"
            return False
        if value in (0, 1):
            return bool(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip().lower()
    if text in ("1", "1.0", "true", "yes", "y", "masked", "mask"):
        return True
    if text in ("0", "0.0", "false", "no", "n", "unmasked", "", "none"):
        return False
    raise ValueError(f"cannot read {value!r} as {what} (1 or 0, true or false, yes or no, masked or unmasked)")


def check_flag(name: str, value) -> None:
    """True or False: "off" or "false" is a true string, and turned the option on."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} is True or False, got {value!r}")
