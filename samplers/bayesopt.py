"""Bayesian optimisation with the ``bayesian-optimization`` package, as an Optuna sampler.

AutoSimulate's BO baseline (§5, Tables 2–3: "BO") used this package: a Gaussian process with a
Matérn-5/2 kernel over ψ and an acquisition function (upper confidence bound by default) maximised
to choose the next ψ. :class:`BayesOptSampler` drives the package's ``suggest`` / ``register``
interface from an Optuna study:

* **Stateless.** Every ``sample_relative`` call builds a fresh ``BayesianOptimization`` from the
  study's COMPLETE trials (``register``) and asks it for one point (``suggest``). Nothing the
  optimiser knows lives only on ``self``, so several processes sharing one storage, ``n_jobs > 1``
  and a restarted study all see the same model. FAIL and PRUNED trials are ignored.
* **Seeded.** With ``seed`` set, the random state of trial t is derived from (seed, t), so the same
  completed trials give the same proposal in any process; unseeded samplers draw fresh entropy.
* **Startup.** Until ``n_startup_trials`` trials have completed, points are drawn uniformly from
  the package's own target space (what ``BayesianOptimization.maximize(init_points=5)`` does).
* **Minimisation.** The package maximises; a ``minimize`` study registers ``-value``.
* **Pending points.** RUNNING trials (other workers' unfinished points) are registered with a
  constant lie — the min / mean / max of the registered targets (``pending``), the strategy of the
  package's ``ConstantLiar`` — so the GP's variance collapses there and concurrent workers look
  elsewhere. ``pending=None`` ignores them.
* **Acquisition options pass through.** ``acquisition`` is ``"ucb"``, ``"ei"``, ``"poi"`` (built
  with ``acquisition_options``, e.g. ``{"kappa": 1.0, "exploration_decay": 0.95}``) or any
  ``bayes_opt.acquisition.AcquisitionFunction`` instance, used as a template and deep-copied on every
  call. An exploration decay (kappa or xi) is replayed once per earlier model-based trial, so the
  stateless rebuild decays exactly as one long-lived optimiser would. ``gp_options`` go to the
  package's ``set_gp_params`` (e.g. ``{"alpha": 1e-3}`` for a noisy reward).

Optuna distributions are mapped to the package's parameter types: a float to a ``FloatParameter``
(log-scaled ones in log space), a stepped float or int to an ``IntParameter`` over the step index,
a log-scaled int to a ``FloatParameter`` over log(low − ½) … log(high + ½) rounded back, a
categorical to a ``CategoricalParameter`` over the choice indices (one-hot in the kernel).
Single-valued distributions are left to ``sample_independent``; parameters outside the
intersection search space (conditional or dynamic ones) are drawn by a ``RandomSampler`` with one
warning per name.

>>> import optuna
>>> sampler = BayesOptSampler(n_startup_trials=3, seed=0)
>>> study = optuna.create_study(direction="minimize", sampler=sampler)
>>> study.optimize(lambda t: (t.suggest_float("x", -2, 2) - 1) ** 2, n_trials=8)
>>> len(study.trials), study.best_value < 0.5
(8, True)
"""

from __future__ import annotations

import copy
import math
import warnings
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from bayes_opt import BayesianOptimization
from bayes_opt import acquisition as bo_acquisition
from bayes_opt.parameter import CategoricalParameter, FloatParameter, IntParameter
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["BayesOptSampler"]

_logger = optuna.logging.get_logger(__name__)

_ACQUISITIONS: dict[str, type[bo_acquisition.AcquisitionFunction]] = {
    "ucb": bo_acquisition.UpperConfidenceBound,
    "ei": bo_acquisition.ExpectedImprovement,
    "poi": bo_acquisition.ProbabilityOfImprovement,
}
_PENDING = ("min", "mean", "max")


class BayesOptSampler(BaseSampler):
    """GP-based Bayesian optimisation (``bayes_opt`` v3), rebuilt from the study on every call.

    Args:
        acquisition: ``"ucb"`` (the package's default, κ = 2.576), ``"ei"``, ``"poi"``, or a
            ``bayes_opt.acquisition.AcquisitionFunction`` instance (deep-copied per call).
        acquisition_options: keyword arguments for the named acquisition function's constructor.
        gp_options: keyword arguments for ``BayesianOptimization.set_gp_params`` (``alpha``,
            ``n_restarts_optimizer``, ``kernel``, ...).
        n_startup_trials: completed trials drawn at random before the GP is used (≥ 1).
        pending: constant lie for RUNNING trials: ``"min"``, ``"mean"``, ``"max"`` of the
            registered (maximised) targets, a float, or ``None`` to ignore running trials.
        seed: seed for reproducible proposals; ``None`` draws fresh entropy.
    """

    def __init__(
        self,
        acquisition: str | bo_acquisition.AcquisitionFunction = "ucb",
        acquisition_options: Mapping[str, Any] | None = None,
        gp_options: Mapping[str, Any] | None = None,
        n_startup_trials: int = 5,
        pending: str | float | None = "max",
        seed: int | None = None,
    ) -> None:
        if isinstance(acquisition, str):
            if acquisition not in _ACQUISITIONS:
                raise ValueError(
                    f"acquisition must be one of {sorted(_ACQUISITIONS)} or an AcquisitionFunction, "
                    f"got {acquisition!r}"
                )
            template = _ACQUISITIONS[acquisition](**dict(acquisition_options or {}))
        elif isinstance(acquisition, bo_acquisition.AcquisitionFunction):
            if acquisition_options:
                raise ValueError("acquisition_options apply to a named acquisition only; got an "
                                 f"AcquisitionFunction instance and options {dict(acquisition_options)}")
            template = acquisition
        else:
            raise TypeError(f"acquisition must be a name or an AcquisitionFunction, got "
                            f"{type(acquisition).__name__}")
        if isinstance(n_startup_trials, bool) or not isinstance(n_startup_trials, int) or (
            n_startup_trials < 1
        ):
            raise ValueError(f"n_startup_trials must be an int >= 1, got {n_startup_trials!r}")
        if not (pending is None or pending in _PENDING or isinstance(pending, int | float)):
            raise ValueError(f"pending must be one of {_PENDING}, a float or None, got {pending!r}")
        self._template = template
        self._gp_options = dict(gp_options or {})
        self._n_startup_trials = n_startup_trials
        self._pending = pending
        self._seed = seed
        self._random_sampler = RandomSampler(seed=seed)
        self._warned: set[str] = set()  # log-once bookkeeping only; no optimiser state

    # -- Optuna sampler interface ----------------------------------------------------------------
    def reseed_rng(self) -> None:
        self._random_sampler.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        completed = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
        space = optuna.search_space.intersection_search_space(completed)
        return {name: dist for name, dist in space.items() if not dist.single()}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        _check_single_objective(study)
        if not search_space:
            return {}
        codec = _Codec(search_space)
        sign = -1.0 if study.direction == StudyDirection.MINIMIZE else 1.0
        observed = _mean_by_point(
            (codec.encode(t.params), sign * float(t.value))
            for t in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
            if codec.covers(t.params) and math.isfinite(t.value)
        )
        rng = self._rng(trial.number)
        with warnings.catch_warnings():  # int and categorical parameters are used on purpose
            warnings.filterwarnings("ignore", "Non-float parameters are experimental")
            optimizer = BayesianOptimization(
                f=None, pbounds=codec.pbounds, acquisition_function=self._acquisition(len(observed)),
                random_state=rng, verbose=0,
            )
        if len(observed) < self._n_startup_trials:
            space = optimizer.space
            return codec.decode(space.array_to_params(space.random_sample(random_state=rng)))
        optimizer.set_gp_params(**self._gp_options)
        for point, target in observed.items():
            optimizer.register(dict(point), target)
        lie = self._lie(np.fromiter(observed.values(), float))
        if lie is not None:
            for point in self._pending_points(study, trial, codec, observed):
                optimizer.register(dict(point), lie)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's GP fit warnings, as the package does
            suggestion = optimizer.suggest()
        return codec.decode(suggestion)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        _check_single_objective(study)
        completed = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
        if len(completed) >= self._n_startup_trials and param_name not in self._warned:
            self._warned.add(param_name)
            _logger.warning(
                f"BayesOptSampler: {param_name!r} is outside the search space shared by all completed "
                "trials (conditional or dynamic); it is sampled at random."
            )
        sampler = self._random_sampler
        if self._seed is not None:  # a pure function of (seed, trial, name): same in any process
            sampler = RandomSampler(seed=_derive(self._seed, trial.number, zlib.crc32(param_name.encode())))
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    # -- helpers -------------------------------------------------------------------------------
    def _rng(self, number: int) -> np.random.RandomState:
        if self._seed is None:
            return np.random.RandomState()
        return np.random.RandomState(_derive(self._seed, number))

    def _acquisition(self, n_observed: int) -> bo_acquisition.AcquisitionFunction:
        acq = copy.deepcopy(self._template)
        if hasattr(acq, "decay_exploration"):
            for _ in range(max(0, n_observed - self._n_startup_trials)):
                acq.i += 1  # what each earlier suggest() did before decaying
                acq.decay_exploration()
        return acq

    def _lie(self, targets: np.ndarray) -> float | None:
        if self._pending is None:
            return None
        if isinstance(self._pending, str):
            return float(getattr(np, self._pending)(targets))
        return float(self._pending)

    @staticmethod
    def _pending_points(study: Study, trial: FrozenTrial, codec: _Codec, observed: Mapping) -> list:
        points: list[tuple] = []
        for t in study._get_trials(deepcopy=False, states=(TrialState.RUNNING,), use_cache=False):
            if t.number != trial.number and codec.covers(t.params):
                point = codec.encode(t.params)
                if point not in observed and point not in points:
                    points.append(point)
        return points


class _Codec:
    """Optuna distributions ↔ the package's parameters (see the module docstring)."""

    def __init__(self, search_space: Mapping[str, BaseDistribution]) -> None:
        self.space = dict(search_space)
        self.pbounds: dict[str, Any] = {}
        for name, d in self.space.items():
            if isinstance(d, CategoricalDistribution):
                self.pbounds[name] = CategoricalParameter(name, list(range(len(d.choices))))
            elif d.log:
                pad = 0.5 if isinstance(d, IntDistribution) else 0.0
                self.pbounds[name] = FloatParameter(name, (math.log(d.low - pad), math.log(d.high + pad)))
            elif d.step is not None:
                self.pbounds[name] = IntParameter(name, (0, _n_steps(d)))
            else:
                self.pbounds[name] = FloatParameter(name, (float(d.low), float(d.high)))

    def covers(self, params: Mapping[str, Any]) -> bool:
        """Whether ``params`` has a value inside every distribution of the space."""
        return all(
            name in params and d._contains(d.to_internal_repr(params[name]))
            for name, d in self.space.items()
        )

    def encode(self, params: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
        point = []
        for name, d in self.space.items():
            v = d.to_internal_repr(params[name])
            if isinstance(d, CategoricalDistribution):
                point.append((name, int(v)))
            elif d.log:
                point.append((name, math.log(v)))
            elif d.step is not None:
                point.append((name, int(round((v - d.low) / d.step))))
            else:
                point.append((name, float(v)))
        return tuple(point)

    def decode(self, values: Mapping[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name, d in self.space.items():
            v = values[name]
            if isinstance(d, CategoricalDistribution):
                params[name] = d.choices[int(v)]
                continue
            if d.log:
                v = math.exp(float(v))
            elif d.step is not None:
                v = d.low + int(v) * d.step
            if isinstance(d, IntDistribution):
                params[name] = int(min(max(round(v), d.low), d.high))
            else:
                params[name] = float(min(max(v, d.low), d.high))
        return params


def _n_steps(d: FloatDistribution | IntDistribution) -> int:
    return int(round((d.high - d.low) / d.step))


def _mean_by_point(pairs: Any) -> dict[tuple, float]:
    """Targets averaged over repeated points (the package refuses duplicates; the reward is noisy)."""
    sums: dict[tuple, list[float]] = {}
    for point, target in pairs:
        sums.setdefault(point, []).append(target)
    return {point: float(np.mean(ts)) for point, ts in sums.items()}


def _derive(*entropy: int) -> int:
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0])


def _check_single_objective(study: Study) -> None:
    if len(study.directions) != 1:
        raise ValueError(
            f"BayesOptSampler supports single-objective studies only; got {len(study.directions)} "
            "objectives"
        )
