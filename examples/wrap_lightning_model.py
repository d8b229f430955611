"""User story: "I have my own LightningModule; use it, unmodified, as the main task model."

``MyClassifier`` is an ordinary LightningModule: automatic optimisation, ``self.log("val_acc")`` in
its validation step. :class:`simsearch.SimulatorObjective` trains a fresh one per trial on data
simulated from the trial's ψ, reports ``val_acc`` to Optuna after every epoch (so the pruner can stop
bad trials early) and returns the last value.

    .venv/bin/python examples/wrap_lightning_model.py --trials 20
"""

from __future__ import annotations

import argparse

import optuna
import pytorch_lightning as pl
import torch

from simsearch import SimulatorObjective
from simsearch.problems import get


class MyClassifier(pl.LightningModule):
    """The user's model, written without simsearch in mind."""

    def __init__(self, hidden: int = 32, lr: float = 1e-2) -> None:
        super().__init__()
        self.lr = lr
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(dim=1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main(argv: list[str] | None = None) -> optuna.Study:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args(argv)

    problem = get("gmm2d")
    objective = SimulatorObjective(
        problem.simulator, MyClassifier, problem.val,
        n_samples=500, epochs=5, batch_size=100, monitor="val_acc", direction="maximize",
    )
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )
    study.optimize(objective, n_trials=args.trials)
    states = [t.state.name for t in study.trials]
    print(f"best val_acc {study.best_value:.3f}; {states.count('PRUNED')} of {len(states)} trials pruned")
    return study


if __name__ == "__main__":
    main()
