"""Time the ReinforceSampler itself adds per trial on a study with 1,000 completed trials, against TPE.

Search space: ``gmm2d``'s 16 float parameters; objective: a cheap quadratic (so the objective's time
does not matter). Each sampler gets a study holding 1,000 completed trials — the ReinforceSampler's
own (so its storage carries the policy chain), TPE's filled with random points (TPE keeps no state
beyond the trials) — then runs ``--trials`` more. Timed: the wall time spent inside the sampler's
methods (``infer_relative_search_space``, ``sample_relative``, ``sample_independent``,
``before_trial``, ``after_trial``), per trial, median over the timed trials. Goal: ReinforceSampler /
TPE ≤ 0.2, both measured in the same run.

    .venv/bin/python benchmarks/reinforce_overhead.py --completed 1000 --trials 30
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time

import numpy as np
import optuna

from samplers.reinforce import ReinforceSampler
from simsearch.problems import get

METHODS = ("infer_relative_search_space", "sample_relative", "sample_independent",
           "before_trial", "after_trial")


def _timed(sampler: optuna.samplers.BaseSampler, clock: list[float]) -> None:
    """Wrap the sampler's methods so the time spent inside them accumulates in ``clock[0]``."""
    for name in METHODS:
        method = getattr(sampler, name)

        @functools.wraps(method)
        def wrapper(*args, _method=method, **kwargs):
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                clock[0] += time.perf_counter() - start

        setattr(sampler, name, wrapper)


def _per_trial(study: optuna.Study, objective, trials: int) -> float:
    clock, seconds = [0.0], []
    _timed(study.sampler, clock)
    for _ in range(trials):
        clock[0] = 0.0
        study.optimize(objective, n_trials=1)
        seconds.append(clock[0])
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completed", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get("gmm2d").simulator.search_space()
    centre = {n: 0.25 * d.low + 0.75 * d.high for n, d in space.items()}

    def objective(trial: optuna.Trial) -> float:
        return -sum((trial.suggest_float(n, d.low, d.high) - centre[n]) ** 2
                    for n, d in space.items())

    reinforce = optuna.create_study(
        direction="maximize", sampler=ReinforceSampler(search_space=space, seed=0))
    start = time.perf_counter()
    reinforce.optimize(objective, n_trials=args.completed)
    fill_s = time.perf_counter() - start
    tpe = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    rng = np.random.default_rng(0)
    for _ in range(args.completed):
        params = {n: float(rng.uniform(d.low, d.high)) for n, d in space.items()}
        tpe.add_trial(optuna.trial.create_trial(
            params=params, distributions=space,
            value=-sum((v - centre[n]) ** 2 for n, v in params.items())))
    r = _per_trial(reinforce, objective, args.trials)
    t = _per_trial(tpe, objective, args.trials)
    print(f"# {platform.node()}, {len(space)} float parameters, in-memory storage, "
          f"{args.completed} completed trials, median over {args.trials} timed trials")
    print(f"filling the ReinforceSampler study with {args.completed} trials took {fill_s:.1f} s "
          f"(policy generation {reinforce.sampler.policy(reinforce).generation})")
    print("| sampler | sampler time per trial (ms) |")
    print("|---|---|")
    print(f"| ReinforceSampler (K = 8) | {1e3 * r:.2f} |")
    print(f"| TPESampler | {1e3 * t:.2f} |")
    print(f"ratio ReinforceSampler / TPE = {r / t:.3f} (goal ≤ 0.2)")


if __name__ == "__main__":
    main()
