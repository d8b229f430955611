"""ReinforceSampler on ``gmm2d`` with injected faults (issue 7): does it still improve?

For each seed: one ``simsearch`` worker (:func:`simsearch.workers.run_worker`, Journal file) runs
``--generations`` × K trials of gmm2d whose simulator raises in 20 % of the trials and whose model's
loss is NaN in 10 % (:class:`simsearch.faults.FaultySimulator`, decided by the trial seed). The
policy starts at a deliberately bad ψ (every class mean at 4, LTS Fig. 4's adversarial start); the
reward is a fresh MLP's validation accuracy after ξ = 3 epochs on M = 100 samples. Printed per seed:
the failed trials by phase, the mean reward of the completed members of the first generation and of
the last ``--last`` generations; R̄, the mean reward of ``--evals`` clean trials (no faults; fresh
data and model each, seeds unused by the study) at the start ψ and at the final policy mean ω; and
``problem.score`` (a fresh model on 2,000 clean samples, test accuracy) of both.

    .venv/bin/python benchmarks/reinforce_faults.py --seeds 0 1 2 3 4 --generations 30
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import tempfile
import time
import warnings

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from samplers.reinforce import ReinforceSampler
from simsearch.faults import FaultySimulator
from simsearch.problems import get, mean_std
from simsearch.workers import open_storage, run_worker

OPTIONS = {"n_samples": 100, "epochs": 3, "batch_size": 20}  # M, ξ of every trial


def mean_reward(problem, params: dict, seed: int, n: int) -> float:
    """R̄(ψ): the mean reward of ``n`` clean trials at ψ (fresh data and model in each)."""
    study = optuna.create_study(direction="maximize")
    for _ in range(n):
        study.enqueue_trial(params)
    study.optimize(problem.objective(seed=10_000 + seed, **OPTIONS), n_trials=n)
    return float(np.mean([t.value for t in study.trials]))


def run(seed: int, generations: int, k: int, lr: float, last: int, evals: int,
        tmp: str) -> dict[str, float]:
    problem = get("gmm2d")
    sim = problem.simulator
    start = {"means": torch.full_like(sim.init_psi()["means"], 4.0),
             "log_std": sim.init_psi()["log_std"]}
    sampler = ReinforceSampler.for_simulator(sim, init=start, population_size=k, learning_rate=lr,
                                             seed=seed)
    faulty = FaultySimulator(sim, raise_rate=0.2, nan_loss_rate=0.1)
    objective = faulty.objective(problem, seed=seed, **OPTIONS)
    study = optuna.create_study(storage=open_storage(f"journal:{tmp}/seed{seed}.log"),
                                sampler=sampler, direction="maximize",
                                pruner=optuna.pruners.NopPruner())
    run_worker(study, objective, n_trials=generations * k)
    rewards = collections.defaultdict(list)
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            rewards[t.system_attrs["reinforce:state"]["generation"]].append(t.value)
    phases = collections.Counter(t.user_attrs["fail_phase"] for t in study.trials
                                 if t.state == TrialState.FAIL)
    final = sampler.policy(study)
    return {
        "failed_simulate": phases["simulate"], "failed_train": phases["train"],
        "trials": len(study.trials), "final_generation": final.generation,
        "first": float(np.mean(rewards[0])),
        "last": float(np.mean([r for g in range(generations - last, generations) for r in rewards[g]])),
        "reward_start": mean_reward(problem, sim.space.to_params(start), seed, evals),
        "reward_final": mean_reward(problem, final.params, seed, evals),
        "score_start": problem.score(start, seed)["test"],
        "score_final": problem.score(sim.space.from_params(final.params), seed)["test"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--population", type=int, default=4, help="K")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--last", type=int, default=5, help="generations averaged at the end")
    parser.add_argument("--evals", type=int, default=8, help="clean trials per R̄")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("simsearch").setLevel(logging.ERROR)  # one line per failed trial otherwise
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{os.getloadavg()[0]:.1f}; K={args.population}, lr={args.lr}, "
          f"{args.generations} generations, faults: 20 % raise + 10 % NaN loss")
    print("| seed | trials | failed: simulate / train | generation 0 reward | last "
          f"{args.last} generations reward | R̄ start ψ | R̄ final ω | test acc. start ψ | "
          "test acc. final ω |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            r = run(seed, args.generations, args.population, args.lr, args.last, args.evals, tmp)
            rows.append(r)
            print(f"| {seed} | {r['trials']} | {r['failed_simulate']} / {r['failed_train']} | "
                  f"{r['first']:.3f} | {r['last']:.3f} | {r['reward_start']:.3f} | "
                  f"{r['reward_final']:.3f} | {r['score_start']:.3f} | {r['score_final']:.3f} |",
                  flush=True)
    cols = ("first", "last", "reward_start", "reward_final", "score_start", "score_final")
    stats = {c: mean_std([r[c] for r in rows]) for c in cols}
    print("| mean ± std | | | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in stats.values()) + " |")
    improved = sum(r["last"] > r["first"] for r in rows)
    higher = sum(r["reward_final"] > r["reward_start"] for r in rows)
    better = sum(r["score_final"] > r["score_start"] for r in rows)
    print(f"reward improved (last generations > generation 0) in {improved}/{len(rows)} seeds; "
          f"R̄ final ω > R̄ start ψ in {higher}/{len(rows)}; "
          f"test accuracy final ω > start ψ in {better}/{len(rows)}; "
          f"final policy generation {rows[0]['final_generation']}; {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
