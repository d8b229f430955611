"""The trial objective: suggest ψ, simulate a data set, train the main task model, return its reward.

This is the outer problem of Learning to Simulate (Eq. 1a) and AutoSimulate (Eq. 1a) evaluated at
one point ψ: the data set D_ψ of M samples is drawn, the main task model (MTM) h_θ is trained for
ξ epochs on it (Eq. 1b; LTS §2.2 calls M and ξ "control knobs"), and the validation metric is the
trial's value. Optuna's pruners see the metric after every epoch.

Every trial records, in ``trial.user_attrs``: ``images`` (samples generated), ``simulate_s``,
``train_s``, ``evaluate_s`` and, when the sampler has an ``observe_training`` hook, ``hook_s``;
so a comparison can report Time and Images as AutoSimulate's Tables 2–3 do. With ``fresh_every``
(AutoSimulate's default), the checked trials also record ``fresh_value`` and ``fresh_s``.

A failure in any phase (simulate, train, evaluate, hypergradient) fails the trial, not the study:
the trial ends FAIL with ``fail_phase`` and ``fail_reason`` user attributes, and an accumulated
model is restored to its state before the trial (as it is after a pruned trial). Pass
``raise_on_failure=True`` to stop instead.

>>> import optuna
>>> from simsearch.problems import get
>>> problem = get("gmm2d")
>>> objective = SimulatorObjective(problem.simulator, problem.make_model, problem.val,
...                                n_samples=200, epochs=2)
>>> study = optuna.create_study(direction=objective.direction,
...                             sampler=optuna.samplers.RandomSampler(seed=0))
>>> study.optimize(objective, n_trials=2)
>>> sorted(study.trials[0].user_attrs)
['evaluate_s', 'images', 'simulate_s', 'train_s']
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from simsearch.parameters import Psi
from simsearch.simulator import BaseSimulator, SimulatedBatch
from simsearch.validation import check_positive_int

__all__ = [
    "PhaseError", "SimulatorObjective", "TrainingContext", "ranking_values", "recommended_trial",
    "trial_seed",
]

_logger = logging.getLogger(__name__)
PHASES = ("simulate", "train", "evaluate", "hypergradient")


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed derived from the study seed and the trial number (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(number)]).generate_state(1)[0])


class PhaseError(RuntimeError):
    """An exception raised in one phase of a trial; ``phase`` is one of simulate, train,
    evaluate, hypergradient."""

    def __init__(self, phase: str, error: BaseException) -> None:
        super().__init__(f"{phase} failed: {type(error).__name__}: {error}")
        self.phase, self.error = phase, error


@dataclass
class TrainingContext:
    """What ``sampler.observe_training(trial, context)`` receives after a trial's training."""

    trial: optuna.Trial
    psi: Psi
    simulator: BaseSimulator
    batch: SimulatedBatch
    module: Any
    val_data: tuple[torch.Tensor, torch.Tensor]
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)


class SimulatorObjective:
    """``objective(trial) -> float`` for a study over simulator parameters ψ.

    Args:
        simulator: a :class:`~simsearch.simulator.BaseSimulator`.
        model: the main task model, one of
            * a factory ``() -> module`` or ``(trial) -> module`` giving a fresh model per trial
              (a class works; a factory with one required argument receives the trial, so the
              model's own hyper-parameters join the study);
            * a ``LightningModule`` instance: trained from a copy of its initial state each trial,
              unless it is an ``AccumulatedMainTaskModule``, which is kept and fine-tuned across
              trials (LTS §4.3, AutoSimulate Alg. 1);
            * a scikit-learn estimator (``fit`` / ``predict``), cloned per trial; scored with
              ``metric`` (default: its ``score`` method) on the validation data.
        val_data: ``(x_val, y_val)``, tensors or arrays, non-empty, equal lengths.
        n_samples: M, the data set size per trial (≥ 1).
        epochs: ξ, training epochs per trial (≥ 1; Lightning models only).
        batch_size: training batch size.
        direction: ``"maximize"`` / ``"minimize"``; defaults to the module's ``direction``
            attribute, else ``"maximize"``. Must agree with the study's direction.
        monitor: the name the module logs its validation metric under.
        seed: study seed; the data and model initialisation of trial t depend on (seed, t) only.
        trainer_options: extra ``pytorch_lightning.Trainer`` arguments (e.g. ``accelerator``).
        checkpoint_path: where an accumulated model is saved after every completed trial and
            loaded from at start-up, so a study resumes in a new process.
        metric: for scikit-learn estimators, ``f(y_true, y_pred) -> float``.
        raise_on_failure: re-raise a failed phase's exception instead of failing only the trial.
        companion: an ``AccumulatedMainTaskModule`` also fine-tuned for ξ epochs on every trial's
            data, alongside the model whose reward is the trial's value; its validation reward is
            recorded as user attr ``accumulated_val_reward`` (LTS §4.3 "accumulated main task
            model", Fig. 5a: the reward drives the search, the AMTM is only observed).
        fresh_every: with an accumulated model, every ``fresh_every``-th trial (trial numbers
            0, k, 2k, …) also trains a fresh model, from the accumulated model's state when the
            objective was built, for ξ epochs on the trial's own data (no new samples), and
            records its validation reward as user attr ``fresh_value`` (and ``fresh_s``): the
            counterpart of a black-box trial's value at ψ_t (the same data, ξ and training seed;
            the starting weights are the accumulated model's initial ones). A trial whose
            accumulated model has seen no data yet records its own value (the same training).
            A resumed study rebuilds those initial weights from ``model``, so a seeded model
            (as every built-in problem's) keeps fresh values comparable across a resume.
            ``None``: never.
            :meth:`samplers.autosimulate.AutoSimulateSampler.prepare` sets it; a study with
            fresh values recommends by them (:func:`recommended_trial`).
    """

    def __init__(
        self,
        simulator: BaseSimulator,
        model: Any,
        val_data: tuple[Any, Any],
        *,
        n_samples: int = 1000,
        epochs: int = 5,
        batch_size: int = 64,
        direction: str | None = None,
        monitor: str = "val_reward",
        seed: int = 0,
        trainer_options: Mapping[str, Any] | None = None,
        checkpoint_path: str | Path | None = None,
        metric: Callable[[np.ndarray, np.ndarray], float] | None = None,
        raise_on_failure: bool = False,
        companion: Any = None,
        fresh_every: int | None = None,
    ) -> None:
        if not isinstance(simulator, BaseSimulator):
            raise TypeError(
                f"simulator must be a simsearch simulator, got {type(simulator).__name__}"
            )
        check_positive_int("n_samples (M)", n_samples)
        check_positive_int("epochs (ξ)", epochs)
        check_positive_int("batch_size", batch_size)
        self.simulator, self.model = simulator, model
        self.val_data = _as_val_data(val_data)
        self.n_samples, self.epochs, self.batch_size = n_samples, epochs, batch_size
        self.monitor, self.seed = monitor, int(seed)
        self.trainer_options = dict(trainer_options or {})
        self.metric, self.raise_on_failure = metric, raise_on_failure
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        if companion is not None and not _is_accumulated(companion):
            raise TypeError(
                f"companion must be an AccumulatedMainTaskModule, got {type(companion).__name__}")
        self.companion = companion
        self.is_sklearn = _is_sklearn(model)
        self.accumulated = _is_accumulated(model)
        if fresh_every is not None:
            check_positive_int("fresh_every", fresh_every)
            if not self.accumulated:
                raise ValueError("fresh_every needs an accumulated model (AccumulatedMainTaskModule): "
                                 "without one every trial trains a fresh model already")
        self.fresh_every = fresh_every
        # a fresh model's start: taken before a checkpoint is loaded into an accumulated model
        self._initial_state = (
            copy.deepcopy(model.state_dict()) if isinstance(model, torch.nn.Module) else None
        )
        if self.accumulated and self.checkpoint_path and self.checkpoint_path.exists():
            model.load(self.checkpoint_path)
        self.direction = direction or getattr(self._probe_model(), "direction", "maximize")
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {self.direction!r}")

    # -- the objective ------------------------------------------------------------------------
    def __call__(self, trial: optuna.Trial) -> float:
        self._check_study_direction(trial)
        psi = self.simulator.suggest(trial)
        return self.evaluate(trial, psi)

    def evaluate(self, trial: optuna.Trial, psi: Psi) -> float:
        """Run the simulate → train → evaluate (→ hook) phases for a given ψ."""
        seed = trial_seed(self.seed, trial.number)
        saved = copy.deepcopy(self.model.state_dict()) if self.accumulated else None
        saved_companion = None if self.companion is None else copy.deepcopy(
            self.companion.state_dict())

        def restore() -> None:
            if saved is not None:
                self.model.load_state_dict(saved)
            if saved_companion is not None:
                self.companion.load_state_dict(saved_companion)

        try:
            value = self._run(trial, psi, seed)
        except optuna.TrialPruned:
            restore()  # a pruned trial's data are not kept in the accumulated model either
            raise
        except PhaseError as exc:
            restore()
            trial.set_user_attr("fail_phase", exc.phase)
            trial.set_user_attr("fail_reason", str(exc))
            _logger.warning("Trial %d failed in phase %s: %s", trial.number, exc.phase, exc)
            if self.raise_on_failure:
                raise
            return math.nan
        if self.accumulated:
            self.model.trials_seen += 1
            if self.checkpoint_path:
                self.model.save(self.checkpoint_path)
        return value

    def _run(self, trial: optuna.Trial, psi: Psi, seed: int) -> float:
        start = time.perf_counter()
        batch = _phase("simulate", self.simulator.simulate, psi, self.n_samples, seed)
        if batch.x.is_floating_point() and not torch.isfinite(batch.x).all():
            raise PhaseError("simulate", ValueError("the simulator returned non-finite inputs x"))
        trial.set_user_attr("images", len(batch))
        trial.set_user_attr("simulate_s", time.perf_counter() - start)
        module = _phase("train", self._make_model, trial, seed)
        if self.is_sklearn:
            value = self._fit_sklearn(trial, module, batch)
        else:
            value = self._fit_lightning(trial, module, batch, seed)
        if self.companion is not None:
            reward = _phase("train", self._fine_tune_companion, batch, seed)
            trial.set_user_attr("accumulated_val_reward", reward)
        if self.fresh_every is not None and trial.number % self.fresh_every == 0:
            start = time.perf_counter()
            fresh = value if self.model.trials_seen == 0 else _phase(
                "train", self._fresh_reward, batch, seed)
            trial.set_user_attr("fresh_value", fresh)
            trial.set_user_attr("fresh_s", time.perf_counter() - start)
        hook = getattr(trial.study.sampler, "observe_training", None)
        if callable(hook):
            start = time.perf_counter()
            context = TrainingContext(trial, psi, self.simulator, batch, module, self.val_data, seed)
            _phase("hypergradient", hook, trial, context)
            trial.set_user_attr("hook_s", time.perf_counter() - start)
        return value

    # -- models -------------------------------------------------------------------------------
    def _probe_model(self) -> Any:
        if callable(self.model) and not isinstance(self.model, torch.nn.Module) and not (
            self.is_sklearn
        ):
            with torch.random.fork_rng(devices=[]):
                return self._call_factory(optuna.trial.FixedTrial({}), probe=True)
        return self.model

    def _call_factory(self, trial: Any, probe: bool = False) -> Any:
        required = [
            p for p in inspect.signature(self.model).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not required:  # a class or function with no required argument: () -> module
            return self.model()
        try:
            return self.model(trial)
        except ValueError:
            if probe:  # a factory that suggests its own hyper-parameters; direction unknown
                return None
            raise

    def _make_model(self, trial: optuna.Trial, seed: int) -> Any:
        if self.is_sklearn:
            from sklearn.base import clone

            return clone(self.model)
        if self.accumulated:
            return self.model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if isinstance(self.model, torch.nn.Module):
                module = copy.deepcopy(self.model)
                module.load_state_dict(self._initial_state)
                return module
            return self._call_factory(trial)

    def _fit_lightning(self, trial: optuna.Trial, module: Any, batch: SimulatedBatch, seed: int):
        from lightning_modules import MainTaskModule, PruningCallback, TensorBatches, quiet_trainer

        options = dict(self.trainer_options)
        if isinstance(module, MainTaskModule):  # evaluate and step without per-step overhead
            pruning = PruningCallback(trial, self.monitor, val_data=self.val_data)
            options.setdefault("limit_val_batches", 0)
            train = TensorBatches(batch.x, batch.y, self.batch_size, True, seed, chunk=True)
            val = None
        else:
            pruning = PruningCallback(trial, self.monitor)
            train = TensorBatches(batch.x, batch.y, self.batch_size, True, seed)
            val = TensorBatches(*self.val_data, batch_size=max(self.batch_size, 1024))
        trainer = quiet_trainer(self.epochs, [pruning], **options)
        start = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
        except Exception as exc:
            raise PhaseError("evaluate" if pruning.evaluating else "train", exc) from exc
        finally:
            trial.set_user_attr("train_s", time.perf_counter() - start - pruning.seconds)
            trial.set_user_attr("evaluate_s", pruning.seconds)
        pruning.check_pruned()
        if pruning.last_value is None:
            raise PhaseError("evaluate", RuntimeError("no validation epoch ran"))
        if not math.isfinite(pruning.last_value):
            raise PhaseError(
                "evaluate", FloatingPointError(f"validation {self.monitor} is {pruning.last_value}")
            )
        return pruning.last_value

    def _fine_tune_companion(self, batch: SimulatedBatch, seed: int) -> float:
        from lightning_modules import fit_tensors

        fit_tensors(self.companion, batch.x, batch.y, self.epochs, self.batch_size, seed,
                    **self.trainer_options)
        self.companion.trials_seen += 1
        return float(self.companion.evaluate(*self.val_data))

    def _fresh_reward(self, batch: SimulatedBatch, seed: int) -> float:
        """The validation reward of a model trained from the initial state on ``batch`` for ξ
        epochs, with the accumulated model's training seed (``fresh_every``)."""
        from lightning_modules import fit_tensors

        module = copy.deepcopy(self.model)
        module.load_state_dict(self._initial_state)
        fit_tensors(module, batch.x, batch.y, self.epochs, self.batch_size, seed,
                    **self.trainer_options)
        return float(module.evaluate(*self.val_data))

    def _fit_sklearn(self, trial: optuna.Trial, estimator: Any, batch: SimulatedBatch) -> float:
        x = batch.x.reshape(len(batch), -1).cpu().numpy()
        start = time.perf_counter()
        _phase("train", estimator.fit, x, batch.y.cpu().numpy())
        trial.set_user_attr("train_s", time.perf_counter() - start)
        xv = self.val_data[0].reshape(len(self.val_data[0]), -1).cpu().numpy()
        yv = self.val_data[1].cpu().numpy()
        start = time.perf_counter()
        if self.metric is None:
            value = float(_phase("evaluate", estimator.score, xv, yv))
        else:
            value = float(_phase("evaluate", lambda: self.metric(yv, estimator.predict(xv))))
        trial.set_user_attr("evaluate_s", time.perf_counter() - start)
        trial.report(value, 0)
        return value

    # -- checks -------------------------------------------------------------------------------
    def _check_study_direction(self, trial: optuna.Trial) -> None:
        directions = trial.study.directions
        if len(directions) != 1:
            return
        study_dir = "maximize" if directions[0] == optuna.study.StudyDirection.MAXIMIZE else (
            "minimize")
        if study_dir != self.direction:
            raise ValueError(
                f"direction: the objective's metric is to {self.direction}, but the study was "
                f"created with direction={study_dir!r}; create it with "
                f"optuna.create_study(direction={self.direction!r})"
            )


def ranking_values(
    trials: Sequence[optuna.trial.FrozenTrial], fresh: bool = True
) -> dict[int, float]:
    """Trial number → the value a recommendation ranks it by, over the COMPLETE trials.

    Where ``fresh`` is true and any of them recorded a finite ``fresh_value`` (``fresh_every``),
    only those trials rank, by that value: a fresh model's reward on the trial's own data, as a
    black-box trial at ψ_t is scored (from the accumulated model's initial weights), rather than
    the accumulated model's, which has also seen every earlier trial's data. Else every trial
    with a finite value ranks by its value.

    >>> import optuna
    >>> study = optuna.create_study(direction="maximize")
    >>> study.add_trial(optuna.trial.create_trial(value=0.9))
    >>> study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"fresh_value": 0.7}))
    >>> ranking_values(study.trials), ranking_values(study.trials, fresh=False)
    ({1: 0.7}, {0: 0.9, 1: 0.5})
    >>> recommended_trial(study).number, recommended_trial(study, fresh=False).number
    (1, 0)
    """
    done = [(t.number, t.value, t.user_attrs.get("fresh_value")) for t in trials
            if t.state == optuna.trial.TrialState.COMPLETE]
    checked = {n: f for n, _, f in done if fresh and f is not None and math.isfinite(f)}
    return checked or {n: v for n, v, _ in done if v is not None and math.isfinite(v)}


def recommended_trial(study: optuna.Study, fresh: bool = True) -> optuna.trial.FrozenTrial:
    """The trial that ranks first by :func:`ranking_values` in the study's direction (ties:
    the lowest number): ``study.best_trial``'s rule, by fresh values where the study has them.
    Raises ValueError when no COMPLETE trial has a finite value."""
    trials = study.get_trials(deepcopy=False)
    values = ranking_values(trials, fresh)
    if not values:
        raise ValueError("a recommendation needs at least one COMPLETE trial with a finite value, "
                         f"got none among the study's {len(trials)} trials")
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    number = max(values, key=lambda n: (sign * values[n], -n))
    return next(t for t in trials if t.number == number)


def _phase(name: str, fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except PhaseError:
        raise
    except optuna.TrialPruned:
        raise
    except Exception as exc:
        raise PhaseError(name, exc) from exc


def _as_val_data(val_data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(val_data, tuple | list) or len(val_data) != 2:
        raise ValueError("val_data must be a pair (x_val, y_val)")
    x, y = (torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
            for v in val_data)
    if len(x) == 0:
        raise ValueError("val_data is empty: expected at least 1 validation sample, got 0")
    if len(x) != len(y):
        raise ValueError(f"val_data: x and y differ in length: {len(x)} != {len(y)}")
    if x.is_floating_point():
        x = x.float()
    return x, y


def _is_sklearn(model: Any) -> bool:
    return hasattr(model, "fit") and hasattr(model, "predict") and not isinstance(
        model, torch.nn.Module
    )


def _is_accumulated(model: Any) -> bool:
    return hasattr(model, "trials_seen") and hasattr(model, "save") and isinstance(
        model, torch.nn.Module
    )
