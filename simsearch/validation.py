"""Argument checks shared across simsearch, with messages that name the argument.

>>> check_positive_int("epochs", 3)
>>> check_positive_int("epochs", 0)
Traceback (most recent call last):
...
ValueError: epochs must be an int >= 1, got 0
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_positive_int"]


def check_positive_int(name: str, value: Any) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int (not a bool) ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
