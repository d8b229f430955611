"""Fault injection for tests and demos: a simulator that fails in a known fraction of trials.

:class:`FaultySimulator` wraps any simulator. Each call ``simulate(psi, n, seed)`` — the objective
passes the trial's seed, ``trial_seed(study_seed, trial.number)`` — draws one uniform number from
that seed alone and, by where it falls, injects one fault or none:

=====================  ======================================================  ================
fault                  what happens                                            the trial fails
=====================  ======================================================  ================
``raise``              ``simulate`` raises :class:`InjectedFault`               in ``simulate``
``nan_images``         the inputs ``x`` come back all NaN                       in ``simulate``
``nan_loss``           the model built by :meth:`model_factory` has a NaN loss  in ``train``
=====================  ======================================================  ================

So the same study seed and trial number always give the same fault, in every process, and the
rates are the long-run fractions of trials affected. ``delay_s`` makes every simulation sleep
first (a slow simulator, so that a test can kill a worker in the middle of a trial).

>>> import optuna
>>> from simsearch.problems import get
>>> problem = get("gmm2d")
>>> faulty = FaultySimulator(problem.simulator, raise_rate=0.5, nan_loss_rate=0.25)
>>> objective = faulty.objective(problem, seed=0, n_samples=50, epochs=1)
>>> study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
>>> study.optimize(objective, n_trials=8)
>>> expected = [faulty.fault(trial_seed(0, t.number)) for t in study.trials]
>>> [t.user_attrs.get("fail_phase") for t in study.trials] == [
...     {"raise": "simulate", "nan_loss": "train", None: None}[f] for f in expected]
True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from simsearch.objective import SimulatorObjective, trial_seed
from simsearch.parameters import Psi
from simsearch.simulator import BaseSimulator, SimulatedBatch

__all__ = ["FAULTS", "FaultySimulator", "InjectedFault"]

FAULTS = ("raise", "nan_images", "nan_loss")
_SALT = 0x5EED_FA17  # separates the fault draw from the simulator's own use of the seed


class InjectedFault(RuntimeError):
    """The exception a :class:`FaultySimulator` raises on purpose."""


class FaultySimulator(BaseSimulator):
    """``simulator`` with faults injected in fractions of trials, decided by the trial seed.

    Args:
        simulator: the simulator to wrap (its parameters, ``log_prob`` and data are unchanged).
        raise_rate, nan_image_rate, nan_loss_rate: fractions of trials with each fault, each in
            [0, 1], summing to at most 1.
        delay_s: seconds every ``simulate`` call sleeps first (≥ 0).
    """

    def __init__(
        self,
        simulator: BaseSimulator,
        *,
        raise_rate: float = 0.0,
        nan_image_rate: float = 0.0,
        nan_loss_rate: float = 0.0,
        delay_s: float = 0.0,
    ) -> None:
        if not isinstance(simulator, BaseSimulator):
            raise TypeError(f"simulator must be a simsearch simulator, got {type(simulator).__name__}")
        rates = {"raise_rate": raise_rate, "nan_image_rate": nan_image_rate,
                 "nan_loss_rate": nan_loss_rate}
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {rate!r}")
        if sum(rates.values()) > 1.0:
            raise ValueError(f"the fault rates must sum to at most 1, got {sum(rates.values())!r}")
        if not delay_s >= 0:
            raise ValueError(f"delay_s must be >= 0 seconds, got {delay_s!r}")
        super().__init__(simulator.parameters)
        self.simulator, self.delay_s = simulator, float(delay_s)
        self.has_log_prob = simulator.has_log_prob
        self._edges = np.cumsum([raise_rate, nan_image_rate, nan_loss_rate])

    def fault(self, seed: int) -> str | None:
        """The fault injected into the trial whose seed is ``seed`` (one of :data:`FAULTS`), or None."""
        u = np.random.default_rng([int(seed), _SALT]).random()
        index = int(np.searchsorted(self._edges, u, side="right"))
        return FAULTS[index] if index < len(FAULTS) else None

    def simulate(self, psi: Mapping[str, torch.Tensor], n: int, seed: int) -> SimulatedBatch:
        if self.delay_s:
            time.sleep(self.delay_s)
        fault = self.fault(seed)
        if fault == "raise":
            raise InjectedFault(f"injected simulator failure (seed {seed})")
        batch = self.simulator.simulate(psi, n, seed)
        if fault == "nan_images":
            return SimulatedBatch(batch.latents, torch.full_like(batch.x, float("nan")), batch.y)
        return batch

    def _draw(self, psi: Psi, n: int, generator: torch.Generator) -> SimulatedBatch:
        raise NotImplementedError("FaultySimulator.simulate delegates to the wrapped simulator")

    def log_prob(self, latents: Mapping[str, torch.Tensor], psi: Mapping[str, torch.Tensor]):
        return self.simulator.log_prob(latents, psi)

    def model_factory(self, factory: Callable[[], Any], seed: int) -> Callable[[Any], Any]:
        """A ``(trial) -> module`` factory: ``factory()``, with a NaN loss in the trials whose
        fault is ``nan_loss`` (``seed`` is the study seed the objective uses)."""

        def make(trial: Any) -> Any:
            module = factory()
            if self.fault(trial_seed(seed, trial.number)) == "nan_loss":
                module.loss_fn = _NaNLoss(module.loss_fn)
            return module

        return make

    def objective(self, problem: Any, seed: int = 0, **options: Any) -> SimulatorObjective:
        """The objective of ``problem`` (a :class:`~simsearch.problems.Problem`) on this faulty
        simulator, with its default model under :meth:`model_factory`; ``options`` as for
        :class:`SimulatorObjective` (M, ξ, …), defaulting to the problem's."""
        options.setdefault("n_samples", problem.n_samples)
        options.setdefault("epochs", problem.epochs)
        options.setdefault("batch_size", problem.batch_size)
        model = self.model_factory(problem.make_model, seed)
        return SimulatorObjective(self, model, problem.val, seed=seed, **options)


class _NaNLoss(torch.nn.Module):
    """A loss whose every value is NaN (keeps the graph, so the backward pass runs)."""

    def __init__(self, loss: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, *args: Any) -> torch.Tensor:
        return self.loss(*args) * float("nan")
