"""gmm2d reference points (LTS Table 2 rows) and TPE's best ψ after 60 trials.

For each seed: a fresh model (MLP, and the RBF SVM of the paper) is trained on data from each
reference source — the default ψ, the 1-component-per-class simulator fitted to p's moments, and the
oracle (data from p itself) — with the problem's evaluation size (M = 2,000, ξ = 10) and scored on the
held-out test set. Then a TPE study (seeded) runs 60 trials of the default objective (M = 500, ξ = 5,
MLP) and the best trial's ψ is scored the same way.

    .venv/bin/python benchmarks/gmm2d_references.py [--seeds 5] [--trials 60]
"""

from __future__ import annotations

import argparse
import platform
import time

import optuna
import torch

from simsearch.problems import get, mean_std


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=60)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = get("gmm2d")
    seeds = list(range(args.seeds))
    rows: dict[str, dict[str, list[float]]] = {}
    for name, source in problem.reference_sources().items():
        for model in problem.models:
            rows.setdefault(name, {}).setdefault(model, [])
            for seed in seeds:
                rows[name][model].append(problem.score(source, seed, model=model)["test"])
    name = f"TPE, best of {args.trials} trials"
    rows[name] = {m: [] for m in problem.models}
    started = time.perf_counter()
    for seed in seeds:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(problem.objective(seed=seed), n_trials=args.trials)
        psi = problem.simulator.space.from_params(study.best_trial.params)
        for model in problem.models:
            rows[name][model].append(problem.score(psi, seed, model=model)["test"])
    tpe_s = time.perf_counter() - started

    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: "
          f"{platform.machine()}, {torch.get_num_threads()} torch threads; seeds {seeds}")
    print(f"TPE studies: {args.trials} trials x {len(seeds)} seeds in {tpe_s:.0f} s\n")
    models = list(problem.models)
    print("| training data | " + " | ".join(f"test accuracy, {m}" for m in models) + " |")
    print("|---|" + "---|" * len(models))
    for row, by_model in rows.items():
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in (mean_std(by_model[k]) for k in models)]
        print(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
