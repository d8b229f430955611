"""Optuna pruning for the ``pytorch_lightning`` namespace.

optuna-integration's ``PyTorchLightningPruningCallback`` targets the ``lightning`` namespace; a
``pytorch_lightning.Trainer`` refuses callbacks from that namespace, so simsearch ships its own.
"""

from __future__ import annotations

import math
import time

import optuna
import pytorch_lightning as pl
import torch

__all__ = ["PruningCallback"]


class PruningCallback(pl.Callback):
    """Report the validation metric to the trial after every epoch and stop when pruned.

    Two ways to obtain the metric:

    * default: read ``monitor`` from what the module logged in Lightning's validation loop;
    * ``val_data=(x, y)``: call ``pl_module.evaluate(x, y)`` at the end of each training epoch
      (a ``MainTaskModule`` method) — one forward pass, without the validation loop's per-epoch
      machinery; use it with ``limit_val_batches=0``.

    The trainer is asked to stop (``trainer.should_stop``) rather than interrupted, so that
    Lightning tears down cleanly; call :meth:`check_pruned` after ``fit`` to raise
    ``optuna.TrialPruned``. ``seconds`` accumulates the time spent evaluating and ``evaluating``
    is True while an evaluation runs (to tell training failures from evaluation failures).

    Args:
        trial: the running trial.
        monitor: the name the module logs its validation metric under.
        val_data: evaluate directly on these tensors instead of reading ``monitor``.
        step_offset: added to the epoch number, so that several ``fit`` calls in one trial
            report increasing steps.

    >>> import optuna
    >>> callback = PruningCallback(optuna.trial.FixedTrial({}), monitor="val_acc")
    >>> callback.check_pruned()  # nothing reported yet, nothing pruned
    """

    def __init__(
        self,
        trial: optuna.Trial,
        monitor: str = "val_reward",
        val_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        step_offset: int = 0,
    ) -> None:
        self.trial, self.monitor, self.val_data = trial, monitor, val_data
        self.step_offset = step_offset
        self.pruned_at: int | None = None
        self.last_value: float | None = None
        self.seconds, self.evaluating, self._start = 0.0, False, 0.0

    # -- direct evaluation ----------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.val_data is None:
            return
        self._begin()
        value = pl_module.evaluate(*self.val_data)
        self._end()
        self._report(trainer, value)

    # -- Lightning's validation loop --------------------------------------------------------------
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._begin()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.val_data is not None:
            self._end()
            return
        if self.monitor not in trainer.callback_metrics:  # still evaluating: an evaluate failure
            raise KeyError(
                f"the module logged no {self.monitor!r} during validation; it logged "
                f"{sorted(trainer.callback_metrics)} (pass monitor=... to the objective)"
            )
        self._end()
        self._report(trainer, float(trainer.callback_metrics[self.monitor]))

    def check_pruned(self) -> None:
        """Raise ``optuna.TrialPruned`` if the pruner stopped the training."""
        if self.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at step {self.pruned_at}")

    def _begin(self) -> None:
        self.evaluating, self._start = True, time.perf_counter()

    def _end(self) -> None:
        self.evaluating = False
        self.seconds += time.perf_counter() - self._start

    def _report(self, trainer: pl.Trainer, value: float) -> None:
        self.last_value = value
        if len(self.trial.study.directions) > 1:  # Optuna prunes single-objective studies only
            return
        step = self.step_offset + trainer.current_epoch
        if math.isfinite(value):
            self.trial.report(value, step)
        if self.trial.should_prune():
            self.pruned_at = step
            trainer.should_stop = True
