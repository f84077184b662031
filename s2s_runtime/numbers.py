"""The one check of a real number taken from a caller, an HTTP body or a manifest: an int or float (not a bool) that
is finite — where `math.isfinite` itself raises OverflowError for an int too large for a float (10**400)."""

from __future__ import annotations

import math


def is_finite_number(value: object) -> bool:
    """Whether `value` is an int or float, not a bool, and finite as a float.

    Examples:
        >>> is_finite_number(0.5), is_finite_number(10**400), is_finite_number(float("nan")), is_finite_number(True)
        (True, False, False, False)
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
