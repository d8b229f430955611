"""Sampler names used by the CLI and the compare harness, and the check that a resumed study
continues with the sampler options it began with (:func:`check_sampler_settings`).

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
                           sampler_name: str, hint: str = "start a new study") -> None:
    """Record the options of a sampler with a ``settings()`` method (AutoSimulateSampler) on a
    study it begins, and refuse (ValueError, naming the options and ending with ``hint``) to
    continue a study begun with other options: a library upgrade may change a sampler's
    defaults, and a chain continued under other options is neither the old study nor a new one.
    Also refused: a study with trials but no record (begun before simsearch recorded the options,
    2026-12-06, by another sampler, or outside ``simsearch run`` / ``worker`` / ``compare``), and
    a study with a record continued by a sampler without ``settings()``. Called before the
    caller's first trial; with several workers starting at once each records the same options,
    and two workers with different options starting on an empty study at the same moment are
    not told apart (Optuna's storages have no compare-and-set)."""
    options = sampler.settings() if callable(getattr(sampler, "settings", None)) else None
    has_trials = bool(study.get_trials(deepcopy=False))  # before the record: it is written first
    stored = study.user_attrs.get(SETTINGS_ATTR)
    name, begun_by = study.study_name, study.user_attrs.get("sampler", "a sampler")
    if options is None:
        if stored is not None:
            raise ValueError(
                f"study {name!r} was begun by {begun_by!r}, whose options are recorded; "
                f"sampler {sampler_name!r} cannot continue it: {hint}")
        return
    if stored is None:
        if has_trials:
            raise ValueError(
                f"study {name!r} has trials but no record of its sampler's options (begun by "
                f"{begun_by!r} before simsearch recorded them, 2026-12-06, or outside simsearch "
                f"run / worker / compare), so sampler {sampler_name!r} cannot tell whether it "
                f"continues the same chain: {hint}")
        study.set_user_attr(SETTINGS_ATTR, options)
    elif stored != options:
        diff = ", ".join(f"{k}: {stored.get(k)!r} there, {options.get(k)!r} now"
                         for k in sorted(set(stored) | set(options))
                         if stored.get(k) != options.get(k))
        raise ValueError(
            f"study {name!r} was begun by sampler {sampler_name!r} with other options ({diff}); "
            f"a study continues only with the options it began with: {hint}")
