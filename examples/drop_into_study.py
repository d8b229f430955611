"""User story: "I already tune my model with Optuna; now I want the simulator's knobs in the study too."

The objective below existed before simsearch: it tuned a learning rate and a hidden width on a fixed
synthetic data set. Adding simulator parameters takes one call, ``simulator.suggest(trial)``; the
data are then drawn from the suggested ψ (seeded by the trial number, so the study is reproducible).
Every sampler sees one flat search space: the user's own parameters and ``means[i,j,k]`` /
``log_std[i,j,k]``.

    .venv/bin/python examples/drop_into_study.py --trials 40
"""

from __future__ import annotations

import argparse

import optuna
import torch

from simsearch.problems import get


def main(argv: list[str] | None = None) -> optuna.Study:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args(argv)

    problem = get("gmm2d")  # any simsearch simulator works the same way
    simulator = problem.simulator
    x_val, y_val = problem.val

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)  # the user's existing knobs
        width = trial.suggest_int("width", 8, 64, log=True)
        psi = simulator.suggest(trial)  # <- the one added line
        batch = simulator.simulate(psi, n=500, seed=trial.number)

        torch.manual_seed(trial.number)  # the user's own training loop, unchanged
        net = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.ReLU(), torch.nn.Linear(width, 2))
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(5):
            for i in range(0, len(batch), 100):
                loss = torch.nn.functional.cross_entropy(net(batch.x[i : i + 100]), batch.y[i : i + 100])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            return float((net(x_val).argmax(1) == y_val).float().mean())

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=args.trials)
    best = study.best_trial
    print(f"best validation accuracy {best.value:.3f} with lr={best.params['lr']:.4f}, "
          f"width={best.params['width']} and ψ = {simulator.space.from_params(best.params)}")
    return study


if __name__ == "__main__":
    main()
