"""Optuna pruning for the ``pytorch_lightning`` namespace.

optuna-integration's ``PyTorchLightningPruningCallback`` targets the ``lightning`` namespace; a
``pytorch_lightning.Trainer`` refuses callbacks from that namespace, so simsearch ships its own.
"""

from __future__ import annotations

import math

import optuna
import pytorch_lightning as pl

__all__ = ["PruningCallback"]


class PruningCallback(pl.Callback):
    """Report ``monitor`` to the trial after every validation epoch and stop when pruned.

    The trainer is asked to stop (``trainer.should_stop``) rather than interrupted, so that
    Lightning tears down cleanly; call :meth:`check_pruned` after ``fit`` to raise
    ``optuna.TrialPruned``.

    Args:
        trial: the running trial.
        monitor: the name the module logs its validation metric under.
        step_offset: added to the epoch number, so that several ``fit`` calls in one trial
            report increasing steps.
    """

    def __init__(self, trial: optuna.Trial, monitor: str = "val_reward", step_offset: int = 0):
        self.trial, self.monitor, self.step_offset = trial, monitor, step_offset
        self.pruned_at: int | None = None
        self.last_value: float | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.monitor not in trainer.callback_metrics:
            raise KeyError(
                f"the module logged no {self.monitor!r} during validation; it logged "
                f"{sorted(trainer.callback_metrics)} (pass monitor=... to the objective)"
            )
        value = float(trainer.callback_metrics[self.monitor])
        self.last_value = value
        step = self.step_offset + trainer.current_epoch
        if math.isfinite(value):
            self.trial.report(value, step)
        if self.trial.should_prune():
            self.pruned_at = step
            trainer.should_stop = True

    def check_pruned(self) -> None:
        """Raise ``optuna.TrialPruned`` if the pruner stopped the training."""
        if self.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at step {self.pruned_at}")
