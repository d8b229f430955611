"""The distribution gap (MMD², Meta-Sim Eq. 1) to unlabelled real inputs as an Optuna objective.

Three uses (Meta-Sim §3.2.2; issue 8):

* **the objective** when no labelled validation data exist: ``DistributionGapObjective(real_x,
  simulator=sim)`` — a trial simulates ``n_samples`` inputs from the suggested ψ and returns their
  MMD² to ``real_x`` (minimise);
* **a second objective** beside the task reward: ``DistributionGapObjective(real_x,
  objective=obj, multi_objective=True)`` returns ``(reward, MMD²)``; create the study with
  ``directions=gap.directions`` and any multi-objective sampler (NSGA-II, TPE, ...) to get the
  Pareto front (``study.best_trials``);
* **a recorded user attribute**: ``DistributionGapObjective(real_x, objective=obj)`` returns the
  reward only.

Every trial records ``mmd2`` and ``mmd_s`` (seconds spent on it) in ``trial.user_attrs``. With an
objective, the gap is measured on the very data set the model was trained on: the objective draws
it with ``simulate(ψ, M, trial_seed(seed, trial.number))``, and drawing again with the same seed
gives the same batch (simulators are deterministic given the seed), at the cost of simulating it
twice (counted in ``mmd_s``).

>>> import optuna, torch
>>> from simsearch.problems import get
>>> problem = get("gmm2d")
>>> gap = DistributionGapObjective(problem.val[0], simulator=problem.simulator, n_samples=200)
>>> study = optuna.create_study(directions=gap.directions, sampler=optuna.samplers.RandomSampler(0))
>>> study.optimize(gap, n_trials=3)
>>> study.trials[0].value == study.trials[0].user_attrs["mmd2"]
True
"""

from __future__ import annotations

import math
import time

import optuna
import torch

from simsearch.mmd import FeatureMap, default_features, distribution_gap
from simsearch.objective import SimulatorObjective, trial_seed
from simsearch.parameters import Psi
from simsearch.simulator import BaseSimulator

__all__ = ["DistributionGapObjective"]


class DistributionGapObjective:
    """``objective(trial)`` returning the MMD², ``(reward, MMD²)`` or the reward (MMD² recorded).

    Args:
        real_x: unlabelled real inputs X_R ``(m, ...)``.
        simulator: the simulator (only without ``objective``).
        objective: a :class:`~simsearch.objective.SimulatorObjective` whose reward is returned.
        multi_objective: with ``objective``, return ``(reward, MMD²)`` instead of the reward.
        n_samples: simulated inputs per trial without ``objective`` (with one, its M is used).
        features: φ (default :func:`simsearch.mmd.default_features`).
        bandwidth: kernel bandwidth; ``None`` is the median heuristic on each trial's pooled sample.
        unbiased: the unbiased (default) or Meta-Sim's biased estimator.
        seed: the study seed (with ``objective``, the objective's seed is used).
    """

    def __init__(
        self,
        real_x: torch.Tensor,
        simulator: BaseSimulator | None = None,
        objective: SimulatorObjective | None = None,
        *,
        multi_objective: bool = False,
        n_samples: int = 1000,
        features: FeatureMap = default_features,
        bandwidth: float | None = None,
        unbiased: bool = True,
        seed: int = 0,
    ) -> None:
        if (simulator is None) == (objective is None):
            raise ValueError("pass exactly one of simulator= (gap only) or objective= (reward + gap)")
        if multi_objective and objective is None:
            raise ValueError("multi_objective=True needs objective= (the reward is its first value)")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
            raise ValueError(f"n_samples must be an int >= 2, got {n_samples!r}")
        real_x = torch.as_tensor(real_x)
        if len(real_x) < 2:
            raise ValueError(f"real_x must hold at least 2 inputs, got {len(real_x)}")
        self.objective = objective
        self.simulator = objective.simulator if objective is not None else simulator
        self.n_samples = objective.n_samples if objective is not None else n_samples
        self.seed = objective.seed if objective is not None else int(seed)
        self.multi_objective = multi_objective
        self.features, self.bandwidth, self.unbiased = features, bandwidth, unbiased
        self.real_x = real_x.float() if real_x.is_floating_point() else real_x

    @property
    def directions(self) -> list[str]:
        """Directions for ``optuna.create_study(directions=...)``."""
        if self.objective is None:
            return ["minimize"]
        return [self.objective.direction, "minimize"] if self.multi_objective else [self.objective.direction]

    def gap(self, psi: Psi, trial_number: int) -> float:
        """MMD² between the trial's simulated inputs and the real inputs."""
        batch = self.simulator.simulate(psi, self.n_samples, trial_seed(self.seed, trial_number))
        return distribution_gap(batch.x, self.real_x, self.features, self.bandwidth, self.unbiased)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        psi = self.simulator.suggest(trial)
        reward = None
        if self.objective is not None:
            reward = self.objective.evaluate(_UnreportedTrial(trial) if self.multi_objective else trial, psi)
            if math.isnan(reward):  # the trial failed (fail_phase / fail_reason are recorded)
                return (math.nan, math.nan) if self.multi_objective else math.nan
        start = time.perf_counter()
        value = self.gap(psi, trial.number)
        trial.set_user_attr("mmd2", value)
        trial.set_user_attr("mmd_s", time.perf_counter() - start)
        if reward is None:
            return value
        return (reward, value) if self.multi_objective else reward


class _UnreportedTrial:
    """The trial, minus intermediate reports: Optuna's ``Trial.report`` (and so pruning) is for
    single-objective studies only and raises in a multi-objective one."""

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial = trial

    def report(self, value: float, step: int) -> None:
        """Not reported (multi-objective study)."""

    def should_prune(self) -> bool:
        return False

    def __getattr__(self, name: str):
        return getattr(self._trial, name)
