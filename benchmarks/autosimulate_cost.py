"""Cost of one AutoSimulate iteration against a trial without the hook (issue 5).

For one problem (default ``traffic-count``), same M, ξ and accumulated model: run ``--trials``
trials with the hook removed (the sampler's ``observe_training`` switched off, so the trial is
generate + fine-tune + evaluate) and ``--trials`` trials of each AutoSimulate variant with default
settings (exact quadratic: default CG cap). Reports the median trial duration and the ratio
(with hook) / (without hook); the goal is ≤ 2 for the exact quadratic variant. The first trial of
every run (warm-up) is dropped. Beside the wall-clock duration, each trial's CPU seconds of this
process (``time.process_time`` between the ends of consecutive trials), which other processes on
a shared machine disturb less. With ``--repeats R`` the whole set of rows is run R times in turn
(no hook, then every variant), so that a change of the machine's load falls on all rows alike;
each cell is then the median over the R repeats. ``--chunk-sizes`` runs every variant at each
given ``chunk_size`` (samples per pass of the d_k's JVP), e.g. the default beside
one pass over all M samples. ``--fresh-every k`` sets the variants' ``fresh_every`` (default: the
sampler's, 2): every k-th trial also trains a fresh model on its own data, so the trials differ in
cost; the column "mean fresh-model s per trial" spreads that time over all trials, and "ratio of
means" compares mean trial durations, which count it in full. A second table splits the mean
trial into its phases (the trials' ``simulate_s``, ``train_s``, ``evaluate_s``, ``hook_s`` and
``fresh_s``) and gives the ratio of means without the fresh model: the issue's "generate +
fine-tune + hypergradient" (and the evaluation both kinds of trial do).

    .venv/bin/python benchmarks/autosimulate_cost.py --problem traffic-count --trials 6
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import optuna
import torch

from samplers.autosimulate import AutoSimulateSampler
from samplers.hypergradient import CHUNK_SIZE, METHODS
from simsearch.problems import get

PHASES = ("simulate", "train", "evaluate", "hook", "fresh")  # the trials' *_s user attrs


def _run(problem, method: str, trials: int, seed: int, hook: bool,
         chunk_size: int = CHUNK_SIZE, **options) -> dict[str, float]:
    objective = problem.objective(accumulate=True, seed=seed)
    sampler = AutoSimulateSampler(method, init=problem.simulator, seed=seed, chunk_size=chunk_size,
                                  **options)
    if hook:
        sampler.prepare(objective)  # the objective's fresh_every: the sampler's
    else:  # the objective calls no hook and trains no fresh model: ψ stays at the start point
        sampler.observe_training = None
    study = optuna.create_study(direction=objective.direction, sampler=sampler,
                                pruner=optuna.pruners.NopPruner())
    ends: list[float] = []
    study.optimize(objective, n_trials=trials + 1,
                   callbacks=[lambda study, trial: ends.append(time.process_time())])
    done = [t for t in study.trials[1:] if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) != trials:
        raise RuntimeError(f"{method}: {trials - len(done)} trials did not complete: "
                           f"{[t.user_attrs.get('fail_reason') for t in study.trials]}")
    return {
        "trial_s": statistics.median(t.duration.total_seconds() for t in done),
        "cpu_s": statistics.median(b - a for a, b in zip(ends[:-1], ends[1:], strict=True)),
        "hook_s": statistics.median(t.user_attrs.get("hook_s", 0.0) for t in done),
        "cg": statistics.median(t.system_attrs.get("autosimulate:cg_iterations", 0) for t in done),
        "mean_s": statistics.mean(t.duration.total_seconds() for t in done),
        **{f"{phase}_mean": statistics.mean(t.user_attrs.get(f"{phase}_s", 0.0) for t in done)
           for phase in PHASES},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="traffic-count")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1,
                        help="run all rows this many times in turn; cells are medians over them")
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[CHUNK_SIZE],
                        help="run every variant at each of these chunk_size values (samples per "
                             "pass of the d_k's JVP; one larger than M = one pass)")
    parser.add_argument("--fresh-every", default=None,
                        help="AutoSimulate's fresh_every: an int k, or 'off' (default: the "
                             "sampler's)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = get(args.problem)
    options = {} if args.fresh_every is None else {
        "fresh_every": None if args.fresh_every == "off" else int(args.fresh_every)}
    fresh = options.get("fresh_every", AutoSimulateSampler().fresh_every)
    print(f"fresh_every {fresh}; problem {args.problem}: M={problem.n_samples}, ξ={problem.epochs}, "
          f"batch {problem.batch_size}; {args.trials} timed trials per row (median), "
          f"{args.repeats} repeat(s); "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads")
    rows: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.repeats):
        rows.setdefault("no hook", []).append(_run(problem, "quadratic", args.trials, args.seed,
                                                   hook=False))
        for chunk_size in args.chunk_sizes:
            for method in METHODS:
                label = method if args.chunk_sizes == [CHUNK_SIZE] else f"{method}, chunk {chunk_size}"
                rows.setdefault(label, []).append(_run(problem, method, args.trials, args.seed,
                                                       hook=True, chunk_size=chunk_size, **options))
    base = rows.pop("no hook")
    print("| run | median trial s | median CPU s | median hook s | median CG products "
          "| ratio to no hook (wall) | ratio (CPU) | mean fresh-model s per trial | ratio of means (wall) |")
    print("|---|---|---|---|---|---|---|---|---|")

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"| no hook (generate + fine-tune + evaluate) | {median(base, 'trial_s'):.3f} "
          f"| {median(base, 'cpu_s'):.3f} | – | – | 1.00 | 1.00 | – | 1.00 |")
    for method, runs in rows.items():
        wall = statistics.median(r["trial_s"] / b["trial_s"] for r, b in zip(runs, base, strict=True))
        cpu = statistics.median(r["cpu_s"] / b["cpu_s"] for r, b in zip(runs, base, strict=True))
        means = statistics.median(r["mean_s"] / b["mean_s"] for r, b in zip(runs, base, strict=True))
        print(f"| {method} | {median(runs, 'trial_s'):.3f} | {median(runs, 'cpu_s'):.3f} "
              f"| {median(runs, 'hook_s'):.3f} | {median(runs, 'cg'):g} | {wall:.2f} | {cpu:.2f} "
              f"| {median(runs, 'fresh_mean'):.3f} | {means:.2f} |")
    print("\nmean seconds per trial by phase (median over repeats), and the ratio of mean trial "
          "times without the fresh model (generate + fine-tune + evaluate + hypergradient):\n")
    print("| run | " + " | ".join(f"{phase} s" for phase in PHASES) + " | ratio without fresh |")
    print("|---|" + "---|" * (len(PHASES) + 1))
    for method, runs in {"no hook": base, **rows}.items():
        bare = statistics.median((r["mean_s"] - r["fresh_mean"]) / b["mean_s"]
                                 for r, b in zip(runs, base, strict=True))
        print(f"| {method} | " + " | ".join(f"{median(runs, f'{phase}_mean'):.3f}"
                                           for phase in PHASES) + f" | {bare:.2f} |")
    if args.repeats > 1:
        for key, what in (("trial_s", "ratios per repeat (wall)"),
                          ("mean_s", "ratios of means per repeat (wall)")):
            print(f"{what}: " + "; ".join(
                f"{method} " + ", ".join(f"{r[key] / b[key]:.2f}"
                                         for r, b in zip(runs, base, strict=True))
                for method, runs in rows.items()))


if __name__ == "__main__":
    main()
