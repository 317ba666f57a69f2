"""Argument checks shared by the library: one message style, one owner per kind of check.

Every function returns the normalised value (a Python ``int``, ``float``, tuple ...) and raises
``error`` (default :class:`ValueError`) with a message that names the argument and shows what
was given, so callers keep their own exception types (``CropError``, ``MetricError`` ...).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = [
    "is_int",
    "check_int",
    "check_float",
    "check_choice",
    "check_range",
    "check_shape2",
    "check_spatial_array",
]


def is_int(value: Any) -> bool:
    """True for Python and numpy integers, False for ``bool`` (which Python counts as an int)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _bounds_text(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"<= {hi:g}"
    return "a number"


def check_int(
    value: Any,
    name: str,
    lo: int | None = None,
    hi: int | None = None,
    *,
    error: type[Exception] = ValueError,
) -> int:
    """Return ``value`` as an ``int`` in ``[lo, hi]`` (either bound optional).

    Parameters
    ----------
    value : Any
        Python or numpy integer; ``bool`` and floats are refused.
    name : str
        Argument name used in the error message.
    lo, hi : int, optional
        Inclusive bounds.
    error : type of Exception
        Exception class raised on a bad value.

    Returns
    -------
    int
    """
    if not is_int(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        what = "an int" if lo is None and hi is None else f"an int {_bounds_text(lo, hi)}"
        raise error(f"{name} must be {what}, got {value!r}")
    return int(value)


def int_at_least(minimum: int):
    """argparse ``type``: an integer ``>= minimum`` from the command line, refused by argparse
    (usage line, exit 2) with the bound in the message rather than failing later in a traceback.

    >>> int_at_least(1)("3")
    3
    """
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def check_float(
    value: Any,
    name: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    error: type[Exception] = ValueError,
) -> float:
    """Return ``value`` as a finite ``float`` in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``).

    Parameters
    ----------
    value : Any
        A real number (``bool`` is refused).
    name : str
        Argument name used in the error message.
    lo, hi : float, optional
        Bounds; ``lo`` is exclusive when ``lo_open`` is True.
    error : type of Exception
        Exception class raised on a bad value.

    Returns
    -------
    float
    """
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    x = float(value) if ok else math.nan
    if (
        not math.isfinite(x)
        or (lo is not None and (x <= lo if lo_open else x < lo))
        or (hi is not None and x > hi)
    ):
        raise error(f"{name} must be a finite number {_bounds_text(lo, hi, lo_open)}, got {value!r}")
    return x


def check_choice(
    value: Any, name: str, choices: Sequence[Any], *, error: type[Exception] = ValueError
) -> Any:
    """Return ``value`` if it is one of ``choices``.

    Parameters
    ----------
    value : Any
    name : str
        Argument name used in the error message.
    choices : sequence
        The accepted values.
    error : type of Exception
        Exception class raised on a bad value.
    """
    if isinstance(value, bool) or value not in tuple(choices):
        raise error(f"unknown {name} {value!r}; use one of {', '.join(map(str, choices))}")
    return value


def check_range(
    value: Any, name: str, lower: float, *, error: type[Exception] = ValueError
) -> tuple[float, float] | None:
    """Validate an optional ``(low, high)`` pair with ``lower < low <= high``, both finite.

    Returns ``None`` for ``None`` and the pair as floats otherwise.
    """
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise error(f"{name} must be a pair (low, high) of numbers, got {value!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= lower or hi < lo:
        raise error(
            f"{name} must be a finite range (low, high) with {lower:g} < low <= high, "
            f"got {value!r}"
        )
    return (lo, hi)


def check_shape2(
    size: int | Sequence[int], name: str, *, error: type[Exception] = ValueError
) -> tuple[int, int]:
    """Normalise ``size`` (an int, or a pair ``(h, w)``) to two positive ints."""
    if is_int(size):
        vals: tuple[Any, ...] = (size, size)
    else:
        try:
            vals = tuple(size)  # type: ignore[arg-type]
        except TypeError as exc:
            raise error(f"{name} must be an int or a pair (h, w), got {size!r}") from exc
    if len(vals) != 2 or not all(is_int(v) for v in vals):
        raise error(f"{name} must be an int or a pair of ints (h, w), got {size!r}")
    h, w = int(vals[0]), int(vals[1])
    if h < 1 or w < 1:
        raise error(f"{name} must be positive, got {(h, w)}")
    return h, w


def check_spatial_array(
    arr: Any, name: str, *, error: type[Exception] = ValueError
) -> np.ndarray:
    """Return ``arr`` as a non-empty real (H, W) or channels-last (H, W, C) numpy array."""
    a = np.asarray(arr)
    if a.ndim not in (2, 3):
        raise error(
            f"{name} must be a 2D (H, W) or channels-last (H, W, C) array, got shape {a.shape}"
        )
    if a.size == 0:
        raise error(f"{name} is empty (shape {a.shape})")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise error(f"{name} must have a real numeric or bool dtype, got {a.dtype}")
    return a
