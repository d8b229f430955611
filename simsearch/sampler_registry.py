"""Sampler names used by the CLI and the compare harness.

Optuna's own samplers are used unchanged; simsearch's are imported lazily from ``samplers`` (the
core never imports it at import time). ``module:Class`` names any importable sampler class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import optuna

__all__ = ["SAMPLERS", "SETTINGS_ATTR", "check_sampler_settings", "make_sampler"]

#: The study user attribute holding the options of the sampler that began it (its ``settings()``).
SETTINGS_ATTR = "sampler_settings"


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


def check_sampler_settings(study: optuna.Study, sampler: optuna.samplers.BaseSampler,
                           sampler_name: str) -> None:
    """Record the options of a sampler with a ``settings()`` method (AutoSimulateSampler) on a
    study it begins, and refuse to continue a study begun with other options, naming them: a
    library upgrade may change a sampler's defaults, and a chain continued under other options
    is neither the old study nor a new one. A study that already has trials but no record was
    begun before simsearch recorded the options (2026-12-06), and is refused too. Samplers
    without ``settings()`` are not checked."""
    options = sampler.settings() if callable(getattr(sampler, "settings", None)) else None
    if options is None:
        return
    stored = study.user_attrs.get(SETTINGS_ATTR)
    name = study.study_name
    if stored is None:
        if study.get_trials(deepcopy=False):
            raise ValueError(
                f"study {name!r} was begun by sampler {sampler_name!r} before simsearch recorded "
                "the sampler's options, so it cannot tell whether this version's options are the "
                "same; start a new study (another --out folder or study name)")
        study.set_user_attr(SETTINGS_ATTR, options)
    elif stored != options:
        diff = ", ".join(f"{k}: {stored.get(k)!r} there, {options.get(k)!r} now"
                         for k in sorted(set(stored) | set(options))
                         if stored.get(k) != options.get(k))
        raise ValueError(
            f"study {name!r} was begun by sampler {sampler_name!r} with other options ({diff}); "
            "a study continues only with the options it began with: start a new study (another "
            "--out folder or study name)")
