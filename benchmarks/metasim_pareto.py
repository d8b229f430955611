"""A two-objective study on ``digits``: task reward (real validation accuracy) and distribution gap (MMD²).

Each trial suggests ψ, trains the problem's CNN on M simulated digits, scores it on the real validation
digits, and measures the unbiased MMD² (Meta-Sim Eq. 1, random-conv features, median bandwidth) between
the same simulated digits and the real validation inputs. Optuna's multi-objective TPE sampler searches;
the first trial is the default ψ. Plots every trial and the Pareto front to ``docs/``.

    .venv/bin/python benchmarks/metasim_pareto.py --trials 30
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from pathlib import Path

import matplotlib
import numpy as np
import optuna
import torch
from scipy.stats import spearmanr

from simsearch import problems
from simsearch.gap_objective import DistributionGapObjective

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    docs = Path(__file__).resolve().parents[1] / "docs"
    parser.add_argument("--png", default=str(docs / "metasim_digits_pareto.png"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    print(f"{date}; {platform.node()}; torch {torch.__version__}; {args.threads} thread(s)")
    problem = problems.get("digits")
    objective = problem.objective(seed=args.seed)
    gap = DistributionGapObjective(problem.val[0], objective=objective, multi_objective=True)
    sampler = optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=10)
    study = optuna.create_study(directions=gap.directions, sampler=sampler)
    study.enqueue_trial(problem.simulator.space.to_params(problem.simulator.init_psi()))
    start = time.perf_counter()
    study.optimize(gap, n_trials=args.trials)
    seconds = time.perf_counter() - start
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    reward = np.array([t.values[0] for t in done])
    mmd = np.array([t.values[1] for t in done])
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    rho = spearmanr(reward, mmd)
    print(f"{len(done)} complete trials of {len(study.trials)} in {seconds:.0f} s "
          f"(M = {objective.n_samples}, ξ = {objective.epochs} epochs)")
    print(f"default ψ (trial 0): val accuracy {done[0].values[0]:.3f}, MMD² {done[0].values[1]:.4f}")
    print(f"Spearman correlation of reward and MMD² over trials: {rho.statistic:.2f} (p = {rho.pvalue:.3g})")
    print("\n| Pareto trial | Val accuracy | MMD² |\n|---|---|---|")
    for t in front:
        print(f"| {t.number} | {t.values[0]:.3f} | {t.values[1]:.4f} |")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(mmd, reward, s=14, color="0.6", label="trials")
    ax.step([t.values[1] for t in front], [t.values[0] for t in front], where="post", color="C3")
    ax.scatter([t.values[1] for t in front], [t.values[0] for t in front], s=30, color="C3",
               label="Pareto front")
    ax.scatter([done[0].values[1]], [done[0].values[0]], marker="*", s=120, color="C0", label="default ψ")
    ax.set_xlabel("MMD² to real validation digits (minimise)")
    ax.set_ylabel("real validation accuracy (maximise)")
    ax.set_title(f"digits: reward vs distribution gap, {len(done)} TPE trials", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    print(f"\nplot: {args.png}")


if __name__ == "__main__":
    main()
