"""What a built-in problem bundles: a simulator, data, a main task model and reference points."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simsearch.objective import SimulatorObjective, trial_seed
from simsearch.parameters import Psi
from simsearch.simulator import BaseSimulator

__all__ = ["DataSource", "Problem"]

DataSource = Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]
"""``f(n, seed) -> (x, y)``: draws a labelled training set (used for reference points)."""


@dataclass
class Problem:
    """A simulator-tuning problem.

    Attributes:
        name, description: shown by ``simsearch problems``.
        simulator: the simulator whose ψ is searched.
        val, test: validation data (drives the search) and test data (scored once at the end).
        models: main task model factories by name; the first is the default.
        n_samples, epochs, batch_size: M, ξ and the batch size used in each trial.
        eval_n_samples, eval_epochs: M and ξ of the final evaluation of a ψ.
        real_psi: ψ_real where the validation data come from the simulator itself, else None.
        references: extra reference data sources by name (e.g. the oracle: data drawn from the
            validation distribution or real training data).
    """

    name: str
    description: str
    simulator: BaseSimulator
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    models: dict[str, Callable[[], Any]]
    n_samples: int = 1000
    epochs: int = 5
    batch_size: int = 100
    eval_n_samples: int = 2000
    eval_epochs: int = 10
    real_psi: Psi | None = None
    references: dict[str, DataSource] = field(default_factory=dict)

    @property
    def make_model(self) -> Callable[[], Any]:
        """The default main task model factory."""
        return next(iter(self.models.values()))

    def model_factory(self, model: str | None) -> Callable[[], Any]:
        if model is None:
            return self.make_model
        if model not in self.models:
            raise ValueError(f"unknown model {model!r} for {self.name}; known: {list(self.models)}")
        return self.models[model]

    def objective(
        self, model: str | None = None, accumulate: bool = False, **options: Any
    ) -> SimulatorObjective:
        """A :class:`SimulatorObjective` with this problem's data and defaults (overridable).

        With ``accumulate=True`` one model, seeded by ``options["seed"]``, is kept and fine-tuned
        across trials (an ``AccumulatedMainTaskModule``), as AutoSimulate's Alg. 1 needs.
        """
        options.setdefault("n_samples", self.n_samples)
        options.setdefault("epochs", self.epochs)
        options.setdefault("batch_size", self.batch_size)
        factory = self.model_factory(model)
        with torch.random.fork_rng(devices=[]):
            probe = factory()
        if not isinstance(probe, torch.nn.Module):  # a scikit-learn estimator: cloned per trial
            factory = probe
        elif accumulate:
            from lightning_modules import AccumulatedMainTaskModule

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(trial_seed(options.get("seed", 0), 2**31 - 1))
                factory = AccumulatedMainTaskModule.from_module(factory())
        return SimulatorObjective(self.simulator, factory, self.val, **options)

    def objective_for(
        self, sampler: Any, seed: int, checkpoint_path: str | Path | None = None, **options: Any
    ) -> SimulatorObjective:
        """The objective a study with ``sampler`` needs: accumulated (and checkpointed at
        ``checkpoint_path``) when the sampler has ``needs_accumulated_model``; the sampler's
        ``prepare(objective)``, if it has one, checks the set-up and adopts the declared ψ."""
        accumulate = bool(getattr(sampler, "needs_accumulated_model", False))
        if accumulate and checkpoint_path is not None:
            options["checkpoint_path"] = checkpoint_path
        objective = self.objective(accumulate=accumulate, seed=seed, **options)
        prepare = getattr(sampler, "prepare", None)
        if callable(prepare):
            prepare(objective)
        return objective

    def psi_source(self, psi: Psi) -> DataSource:
        """The data source that simulates from ψ."""
        self.simulator.space.check(psi)

        def draw(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
            batch = self.simulator.simulate(psi, n, seed)
            return batch.x, batch.y

        return draw

    def reference_sources(self) -> dict[str, DataSource]:
        """Every reference point as a data source: ``default`` ψ, ``real`` ψ, extra ones."""
        sources = {"default": self.psi_source(self.simulator.init_psi())}
        if self.real_psi is not None:
            sources["real"] = self.psi_source(self.real_psi)
        sources.update(self.references)
        return sources

    def score(
        self,
        source: DataSource | Psi,
        seed: int,
        model: str | None = None,
        n_samples: int | None = None,
        epochs: int | None = None,
        splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> dict[str, float]:
        """Train a fresh model on data from ``source`` (a ψ or a data source) and score it.

        Returns ``{"val": ..., "test": ...}``, plus one score per extra labelled set in ``splits``
        (by name; e.g. a held-out part of the validation set), all from the same fitted model. The
        data and model depend on ``seed`` only.
        """
        extra = dict(splits or {})
        if {"val", "test"} & set(extra):
            raise ValueError(f"splits: names other than 'val' and 'test' expected, got {list(extra)}")
        n = n_samples or self.eval_n_samples
        if isinstance(source, dict):
            source = self.psi_source(source)
        x, y = source(n, trial_seed(seed, 0))
        factory = self.model_factory(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(trial_seed(seed, 1))
            estimator = factory()
        return _fit_and_score(
            estimator, x, y, {"val": self.val, "test": self.test, **extra},
            epochs or self.eval_epochs, self.batch_size, trial_seed(seed, 2),
        )


def _fit_and_score(estimator, x, y, splits, epochs, batch_size, seed) -> dict[str, float]:
    if hasattr(estimator, "fit") and not isinstance(estimator, torch.nn.Module):
        estimator.fit(x.reshape(len(x), -1).numpy(), y.numpy())
        return {
            split: float(estimator.score(xs.reshape(len(xs), -1).numpy(), ys.numpy()))
            for split, (xs, ys) in splits.items()
        }
    from lightning_modules import fit_tensors

    fit_tensors(estimator, x, y, epochs, batch_size, seed)
    return {split: estimator.evaluate(*data) for split, data in splits.items()}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
