"""Sampler names used by the CLI and the compare harness.

Optuna's own samplers are used unchanged; simsearch's are imported lazily from ``samplers`` (the
core never imports it at import time). ``module:Class`` names any importable sampler class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import optuna

__all__ = ["SAMPLERS", "make_sampler"]


def _optuna(name: str) -> Callable[[int | None], optuna.samplers.BaseSampler]:
    return lambda seed: getattr(optuna.samplers, name)(seed=seed)


def _simsearch(module: str, name: str, *args: str) -> Callable[[int | None], optuna.samplers.BaseSampler]:
    """A factory importing ``samplers.<module>`` only when called."""
    return lambda seed: getattr(importlib.import_module(f"samplers.{module}"), name)(*args, seed=seed)


#: Known sampler names and their factories ``(seed) -> sampler``.
SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    "random": _optuna("RandomSampler"),
    "tpe": _optuna("TPESampler"),
    "gp": _optuna("GPSampler"),
    "cmaes": _optuna("CmaEsSampler"),
    "bayesopt": _simsearch("bayesopt", "BayesOptSampler"),
    "reinforce": _simsearch("reinforce", "ReinforceSampler"),
    "autosimulate": _simsearch("autosimulate", "AutoSimulateSampler", "quadratic"),
    "autosimulate-approx": _simsearch("autosimulate", "AutoSimulateSampler", "approx_quadratic"),
    "autosimulate-linear": _simsearch("autosimulate", "AutoSimulateSampler", "linear"),
    "autosimulate-noval": _simsearch("autosimulate", "AutoSimulateSampler", "no_val"),
}


def make_sampler(name: str, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The sampler called ``name`` (a key of :data:`SAMPLERS` or ``module:Class``)."""
    if name in SAMPLERS:
        return SAMPLERS[name](seed)
    if ":" in name:
        module, attr = name.split(":", 1)
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"sampler {name!r}: cannot import {attr} from {module}: {exc}") from exc
        try:
            return cls(seed=seed)
        except TypeError:
            return cls()
    raise ValueError(
        f"unknown sampler {name!r}; known samplers: {', '.join(SAMPLERS)} or module:Class"
    )
