"""A quiet ``pytorch_lightning.Trainer`` for trials, and fast in-memory batches.

Inside an Optuna study a trainer is built for every trial, so everything a trainer does by default
for a single long run (progress bar, model summary, logger and checkpoint directories, sanity
validation, "GPU available" banners, the few-workers warning) is turned off. ``TensorBatches``
slices whole batches out of in-memory tensors: per-sample ``Dataset.__getitem__`` calls and
``default_collate`` would dominate the step time of the small models simulators are tuned with.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence

import lightning_fabric.utilities.registry as lightning_registry
import pytorch_lightning as pl
import torch

__all__ = ["TensorBatches", "fit_tensors", "quiet_trainer"]

_BANNER_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "pytorch_lightning.accelerators.cuda",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


_SILENCED = False


def _silence_trial_noise() -> None:
    """Once per process: hide Lightning's per-fit banners and warnings that say nothing to a
    user running many short trials (changing logging levels or warning filters on every fit
    clears their caches, which costs more than the fit of a small model)."""
    global _SILENCED
    if _SILENCED:
        return
    for name in _BANNER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (
        ".*does not have many workers.*",
        ".*is smaller than the logging interval.*",
        ".*but have no `val_dataloader`.*",
        ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
    ):
        warnings.filterwarnings("ignore", message)
    _SILENCED = True


@functools.cache
def _entry_points_once(group: str) -> tuple[importlib.metadata.EntryPoint, ...]:
    """``importlib.metadata.entry_points(group=group)``, read once per process."""
    return tuple(importlib.metadata.entry_points(group=group))


_ENTRY_POINTS_LOCK = threading.Lock()


def _trainer_reading_entry_points_once(**options) -> pl.Trainer:
    """``pl.Trainer(**options)`` with the external-callback entry points read once per process.

    Every ``Trainer`` looks up the callback factories other packages register
    (``pytorch_lightning.callbacks_factory``) by reading the metadata of every installed
    distribution, which in a profile of a trial was most of the construction and grows with the
    environment. The lookup is cached for the duration of
    this construction only; the factories themselves are still called for every trainer, so each
    gets fresh callback instances. The lock keeps concurrent trials (``n_jobs > 1``) from
    restoring each other's lookup.
    """
    if not hasattr(lightning_registry, "entry_points"):  # a Lightning that looks them up elsewhere
        return pl.Trainer(**options)
    with _ENTRY_POINTS_LOCK:
        original = lightning_registry.entry_points
        lightning_registry.entry_points = _entry_points_once
        try:
            return pl.Trainer(**options)
        finally:
            lightning_registry.entry_points = original


def quiet_trainer(max_epochs: int, callbacks: Sequence[pl.Callback] = (), **overrides) -> pl.Trainer:
    """A Trainer that leaves no files behind and prints nothing per trial.

    ``accelerator="auto"`` uses a GPU when one is present. ``overrides`` are passed to
    ``pl.Trainer`` and win over the quiet defaults.
    """
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {max_epochs!r}")
    _silence_trial_noise()
    options = dict(
        max_epochs=max_epochs,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )
    options.update(overrides)
    return _trainer_reading_entry_points_once(**options)


class TensorBatches:
    """Iterate ``(x[idx], y[idx])`` batches over in-memory tensors.

    With ``shuffle=True`` each pass uses a fresh permutation from a generator seeded once, so
    the sequence of epochs is reproducible. With ``chunk=True`` a pass yields a single item, the
    list of all its minibatches, for modules that step through them in one ``training_step``
    (``MainTaskModule`` does).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        chunk: bool = False,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.chunk = chunk
        self._generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return 1 if self.chunk else -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator:
        if self.chunk:
            yield list(self._minibatches())
        else:
            yield from self._minibatches()

    def _minibatches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, generator=self._generator)
            for i in range(0, n, self.batch_size):
                idx = order[i : i + self.batch_size]
                yield self.x[idx], self.y[idx]
        else:
            for i in range(0, n, self.batch_size):
                yield self.x[i : i + self.batch_size], self.y[i : i + self.batch_size]



def fit_tensors(
    module: pl.LightningModule,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch_size: int,
    seed: int,
    **trainer_options,
) -> pl.LightningModule:
    """Train ``module`` on (x, y) for ``epochs`` with a quiet trainer and no validation loop.

    Shuffling and any randomness in training depend on ``seed`` only; the global RNG is left as
    it was. Returns ``module``.
    """
    from lightning_modules.main_task import MainTaskModule

    chunk = isinstance(module, MainTaskModule)
    trainer = quiet_trainer(epochs, **{"limit_val_batches": 0, **trainer_options})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        trainer.fit(module, train_dataloaders=TensorBatches(x, y, batch_size, True, seed, chunk=chunk))
    return module
