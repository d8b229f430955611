"""Cost of one AutoSimulate iteration against a trial without the hook (issue 5).

For one problem (default ``traffic-count``), same M, ξ and accumulated model: run ``--trials``
trials with the hook removed (the sampler's ``observe_training`` switched off, so the trial is
generate + fine-tune + evaluate) and ``--trials`` trials of each AutoSimulate variant with default
settings (exact quadratic: default CG cap). Reports the median trial duration and the ratio
(with hook) / (without hook); the goal is ≤ 2 for the exact quadratic variant. The first trial of
every run (warm-up) is dropped.

    .venv/bin/python benchmarks/autosimulate_cost.py --problem traffic-count --trials 6
"""

from __future__ import annotations

import argparse
import platform
import statistics
import warnings

import optuna
import torch

from samplers.autosimulate import AutoSimulateSampler
from samplers.hypergradient import METHODS
from simsearch.problems import get


def _run(problem, method: str, trials: int, seed: int, hook: bool) -> dict[str, float]:
    objective = problem.objective(accumulate=True, seed=seed)
    sampler = AutoSimulateSampler(method, init=problem.simulator, seed=seed)
    if not hook:
        sampler.observe_training = None  # the objective calls no hook: ψ stays at the start point
    study = optuna.create_study(direction=objective.direction, sampler=sampler,
                                pruner=optuna.pruners.NopPruner())
    study.optimize(objective, n_trials=trials + 1)
    done = [t for t in study.trials[1:] if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) != trials:
        raise RuntimeError(f"{method}: {trials - len(done)} trials did not complete: "
                           f"{[t.user_attrs.get('fail_reason') for t in study.trials]}")
    return {
        "trial_s": statistics.median(t.duration.total_seconds() for t in done),
        "hook_s": statistics.median(t.user_attrs.get("hook_s", 0.0) for t in done),
        "cg": statistics.median(t.system_attrs.get("autosimulate:cg_iterations", 0) for t in done),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="traffic-count")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = get(args.problem)
    print(f"problem {args.problem}: M={problem.n_samples}, ξ={problem.epochs}, "
          f"batch {problem.batch_size}; {args.trials} timed trials per row (median); "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads")
    base = _run(problem, "quadratic", args.trials, args.seed, hook=False)
    print("| run | median trial s | median hook s | median CG products | ratio to no hook |")
    print("|---|---|---|---|---|")
    print(f"| no hook (generate + fine-tune + evaluate) | {base['trial_s']:.3f} | – | – | 1.00 |")
    for method in METHODS:
        row = _run(problem, method, args.trials, args.seed, hook=True)
        print(f"| {method} | {row['trial_s']:.3f} | {row['hook_s']:.3f} | {row['cg']:g} | "
              f"{row['trial_s'] / base['trial_s']:.2f} |")


if __name__ == "__main__":
    main()
