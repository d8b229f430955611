"""Main task models (MTM): any ``torch.nn.Module`` with a per-sample loss and a validation metric.

The MTM h_θ is the inner problem of both papers (LTS Eq. 1b, AutoSimulate Eq. 1b): it is trained on
simulated data and its validation metric is the reward. :class:`MainTaskModule` is trained from
scratch in each trial; :class:`AccumulatedMainTaskModule` keeps θ across trials and fine-tunes it on
each new data set (LTS §4.3 "accumulated main task model"; AutoSimulate Alg. 1 "fine-tune model for
ε epochs"). Both expose :meth:`MainTaskModule.per_sample_loss`, the unreduced losses l(ζ_k, θ) that
AutoSimulate differentiates.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> module = MainTaskModule(net, loss="cross_entropy", metric="accuracy")
>>> module.per_sample_loss(torch.zeros(5, 2), torch.zeros(5, dtype=torch.long)).shape
torch.Size([5])
>>> module.direction
'maximize'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "METRICS", "AccumulatedMainTaskModule", "MainTaskModule"]

PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y.long(), reduction="none")


def _l1(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out - y.to(out.dtype)).abs().reshape(out.shape[0], -1).mean(dim=1)


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out - y.to(out.dtype)).pow(2).reshape(out.shape[0], -1).mean(dim=1)


def _pixel_bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(out, y.to(out.dtype), reduction="none")
    return bce.reshape(out.shape[0], -1).mean(dim=1)


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.argmax(dim=1) == y.long()).float().mean()


def _neg_l1(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -(out - y.to(out.dtype)).abs().mean()


def _iou(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    pred, truth = out > 0, y > 0.5
    union = (pred | truth).sum()
    return (pred & truth).sum() / union.clamp(min=1)


#: Built-in per-sample losses, by name: each maps (outputs, targets) to a loss per sample.
LOSSES: dict[str, PerSampleLoss] = {
    "cross_entropy": _cross_entropy,
    "l1": _l1,
    "mse": _mse,
    "pixel_bce": _pixel_bce,
}
#: Built-in validation metrics, by name, with the direction in which they improve.
METRICS: dict[str, tuple[Metric, str]] = {
    "accuracy": (_accuracy, "maximize"),
    "neg_l1": (_neg_l1, "maximize"),
    "iou": (_iou, "maximize"),
    "neg_mse": (lambda o, y: -_mse(o, y).mean(), "maximize"),
}


class MainTaskModule(pl.LightningModule):
    """Wrap a network with its per-sample loss and validation metric.

    Args:
        net: the network h_θ.
        loss: a name from :data:`LOSSES` or ``f(outputs, y) -> (n,)`` unreduced losses.
        metric: a name from :data:`METRICS` or ``f(outputs, y) -> scalar``; computed once per
            validation epoch on the whole validation set and logged as ``val_reward``.
        direction: ``"maximize"`` or ``"minimize"``; defaults to the named metric's direction.
        lr, weight_decay: Adam's settings.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        loss: str | PerSampleLoss = "cross_entropy",
        metric: str | Metric = "accuracy",
        direction: str | None = None,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.net = net
        self.loss_fn = _lookup("loss", loss, LOSSES)
        if isinstance(metric, str):
            self.metric_fn, default_direction = _lookup("metric", metric, METRICS)
        else:
            self.metric_fn, default_direction = metric, "maximize"
        self.direction = direction or default_direction
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {self.direction!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.automatic_optimization = False
        self.val_reward: float | None = None
        self._val_outputs: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []
        self._epoch_loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def per_sample_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """l(ζ_k, θ) for every sample k, shape ``(n,)`` (not reduced)."""
        return self.loss_fn(self(x), y)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        """One optimiser step on a minibatch ``(x, y)``, or one per minibatch of a list of them.

        Optimisation is manual so that a whole epoch can arrive as one list (see
        ``TensorBatches(chunk=True)``): Lightning's per-step machinery then runs once per epoch,
        which on small simulator models costs more than the step itself. In full precision the
        loss is back-propagated and the torch optimiser stepped directly (Lightning's wrappers
        only add hook calls there); otherwise through Lightning, which handles loss scaling.
        """
        minibatches = [batch] if isinstance(batch[0], torch.Tensor) else batch
        plain = self.trainer.precision == "32-true"
        optimizer = self.optimizers(use_pl_optimizer=not plain)
        backward = torch.Tensor.backward if plain else self.manual_backward
        for x, y in minibatches:
            loss = self.per_sample_loss(x, y).mean()
            optimizer.zero_grad()
            backward(loss)
            optimizer.step()
            self._epoch_loss = self._epoch_loss + loss.detach().cpu()
        return loss

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Move a chunk of minibatches with one ``.to`` per tensor.

        Lightning's generic transfer walks the list of ``(x, y)`` pairs recursively, which costs
        more per epoch than the steps of a small model; a single minibatch takes that path.
        """
        if isinstance(batch, list):
            return [(x.to(device), y.to(device)) for x, y in batch]
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_train_epoch_start(self) -> None:
        self._epoch_loss = torch.zeros(())

    def on_train_epoch_end(self) -> None:
        if not torch.isfinite(self._epoch_loss):
            raise FloatingPointError(
                f"training loss became {float(self._epoch_loss)} in epoch {self.current_epoch}"
            )

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self._val_outputs.append(self(x).detach())
        self._val_targets.append(y)

    def on_validation_epoch_end(self) -> None:
        out, y = torch.cat(self._val_outputs), torch.cat(self._val_targets)
        self._val_outputs, self._val_targets = [], []
        reward = self.metric_fn(out, y)
        self.val_reward = float(reward)
        self.log("val_reward", reward, prog_bar=False, logger=False)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
        """The metric on (x, y), outside a Trainer (used for test sets)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        outs = [self(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
        self.train(was_training)
        return float(self.metric_fn(torch.cat(outs), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class AccumulatedMainTaskModule(MainTaskModule):
    """A main task module whose θ is kept across trials and fine-tuned on each new data set.

    The objective detects this class and reuses the same instance in every trial instead of
    starting from a fresh model. :meth:`save` / :meth:`load` write and read θ (and the number of
    trials it has seen) so that a study can resume in a new process.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trials_seen = 0

    @classmethod
    def from_module(cls, module: MainTaskModule) -> AccumulatedMainTaskModule:
        """An accumulated module sharing ``module``'s network, loss, metric and optimiser settings."""
        return cls(module.net, module.loss_fn, module.metric_fn, module.direction, module.lr,
                   module.weight_decay)

    def save(self, path: str | os.PathLike) -> None:
        """Write θ atomically (a crash mid-write never leaves a half-written file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        torch.save({"state_dict": self.state_dict(), "trials_seen": self.trials_seen}, tmp)
        os.replace(tmp, path)

    def load(self, path: str | os.PathLike) -> AccumulatedMainTaskModule:
        """Restore θ written by :meth:`save`; returns ``self``."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.load_state_dict(state["state_dict"])
        self.trials_seen = int(state["trials_seen"])
        return self


def _lookup(kind: str, value, table: dict):
    if callable(value):
        return value
    if value not in table:
        raise ValueError(f"unknown {kind} {value!r}; known: {sorted(table)} or a callable")
    return table[value]
