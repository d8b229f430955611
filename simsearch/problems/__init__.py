"""Built-in problems: ``simsearch.problems.get(name)``; ``simsearch problems`` lists them.

>>> from simsearch import problems
>>> "gmm2d" in problems.names()
True
>>> problems.get("gmm2d").simulator.space.dim
16
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from simsearch.problems._base import DataSource, Problem, mean_std

__all__ = ["DataSource", "Problem", "get", "mean_std", "names", "register"]

_REGISTRY: dict[str, str | Callable[[], Problem]] = {
    "gmm2d": "simsearch.problems.gmm2d:make_problem",
    "traffic-count": "simsearch.problems.traffic:make_count_problem",
    "traffic-seg": "simsearch.problems.traffic:make_seg_problem",
    "digits": "simsearch.problems.digits:make_problem",
    "digits-rot": "simsearch.problems.digits:make_rotated_problem",
    "digits-rot-textures": "simsearch.problems.digit_textures:make_problem",
}


def register(name: str, factory: Callable[[], Problem]) -> None:
    """Add a problem under ``name`` (a factory returning a :class:`Problem`)."""
    if name in _REGISTRY:
        raise ValueError(f"problem {name!r} is already registered")
    _REGISTRY[name] = factory


def names() -> list[str]:
    """Names of every registered problem."""
    return list(_REGISTRY)


def get(name: str) -> Problem:
    """Build the problem called ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown problem {name!r}; known problems: {', '.join(names())}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module, attr = factory.split(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory()
