"""ReinforceSampler on ``traffic-count`` (LTS §4.3, Fig. 4): reward per policy iteration from a random
and from an adversarial start, against the reward of a model trained on data from ψ_real.

Reward: −ℓ1 count error on the validation set of the problem's counting CNN trained from scratch
for ξ epochs on M images per trial (default: the problem's own trial settings). The ψ_real
reference is the mean reward of ``--reference`` trials of the same objective at ψ_real. Random
start: ψ drawn uniformly inside the bounds (seeded).
Adversarial start: every component at the bound farther from ψ_real. Reported: the mean reward of
each generation and the first generation whose mean reward has covered 90 % of the way from the
first generation's mean to the ψ_real reward.

Policy settings: ``--sigma`` (default √0.05) in ``--sigma-units`` (default unit-box), fixed unless
``--learn-sigma``; ``--normalize-advantage`` standardises Â within each generation. Record run
(BENCHMARKS.md, issue 4), one start per process, 200 generations, seed 0: σ = 0.35 learned with
standardised advantages reaches the 90 % level from both starts (random: generation 107,
adversarial: 195); σ = 0.5 reached it only from the adversarial start, σ = √0.05 (the default,
which trains a constant counter from the adversarial start) only from the random one.

    .venv/bin/python benchmarks/reinforce_traffic.py --generations 200 --population 4 \
        --starts adversarial --sigma 0.35 --learn-sigma --normalize-advantage
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import optuna

from samplers.reinforce import _KEY, ReinforceSampler
from simsearch.problems import get


def _progress(name: str, k: int, sampler: ReinforceSampler):
    """An Optuna callback printing each generation's mean reward as soon as it is complete (so a
    run cut short still shows its curve), and the mean unit-box σ of the policy after its update."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if (trial.number + 1) % k == 0:
            values = [t.value for t in study.trials[-k:] if t.value is not None]
            print(f"  {name}: generation {trial.number // k} mean reward {np.mean(values):.3f} "
                  f"(sd {np.std(values):.3f}, min {np.min(values):.3f}, max {np.max(values):.3f}), "
                  f"σ after its update {sampler.policy(study).sigma.mean():.3f}", flush=True)

    return callback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--population", type=int, default=4, help="K")
    parser.add_argument("--samples", type=int, default=None, help="M (default: the problem's)")
    parser.add_argument("--epochs", type=int, default=None, help="ξ (default: the problem's)")
    parser.add_argument("--starts", nargs="+", choices=("random", "adversarial"),
                        default=["random", "adversarial"])
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--sigma", type=float, default=0.05**0.5)
    parser.add_argument("--sigma-units", choices=("unit", "param"), default="unit",
                        help="σ in unit-box units or in each parameter's own units (LTS §2.3)")
    parser.add_argument("--learn-sigma", action="store_true")
    parser.add_argument("--normalize-advantage", action="store_true",
                        help="standardise the advantages within each generation")
    parser.add_argument("--reference", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = get("traffic-count")
    space = problem.simulator.space
    samples, epochs = args.samples or problem.n_samples, args.epochs or problem.epochs
    objective = problem.objective(n_samples=samples, epochs=epochs, seed=args.seed)
    print(f"# ReinforceSampler on traffic-count — {platform.node()}, K={args.population}, "
          f"lr={args.lr}, σ={args.sigma:.4g} ({args.sigma_units} units, "
          f"{'learned' if args.learn_sigma else 'fixed'}), Adam, advantages "
          f"{'standardised' if args.normalize_advantage else 'R − b'}, M={samples}, ξ={epochs}, "
          f"{args.generations} generations, seed {args.seed}")
    reference = optuna.create_study(direction=objective.direction)
    for _ in range(args.reference):
        trial = reference.ask()
        reference.tell(trial, objective.evaluate(trial, problem.real_psi))
    real = float(np.mean([t.value for t in reference.trials]))
    print(f"ψ_real reward (mean of {args.reference} trials): {real:.4f}")
    low, high = space.bounds()
    real_flat = space.to_flat(problem.real_psi)
    starts = {
        "random": space.from_flat(np.random.default_rng(args.seed).uniform(low, high)),
        "adversarial": space.from_flat(np.where(real_flat - low > high - real_flat, low, high)),
    }
    for name in args.starts:
        psi = starts[name]
        sampler = ReinforceSampler.for_simulator(problem.simulator, init=psi,
                                                 population_size=args.population,
                                                 learning_rate=args.lr, sigma=args.sigma,
                                                 sigma_units=args.sigma_units,
                                                 learn_sigma=args.learn_sigma,
                                                 normalize_advantage=args.normalize_advantage,
                                                 seed=args.seed)
        study = optuna.create_study(direction=objective.direction, sampler=sampler,
                                    pruner=optuna.pruners.NopPruner())  # every trial trains ξ epochs
        start = time.perf_counter()
        study.optimize(objective, n_trials=args.population * args.generations,
                       callbacks=[_progress(name, args.population, sampler)])
        by_generation: dict[int, list[float]] = {}
        for t in study.trials:
            if t.value is not None:
                by_generation.setdefault(t.system_attrs[_KEY]["generation"], []).append(t.value)
        means = [float(np.mean(by_generation[g])) for g in sorted(by_generation)]
        target = means[0] + 0.9 * (real - means[0])
        reached = next((g for g, m in enumerate(means) if m >= target), None)
        print(f"{name} start: {time.perf_counter() - start:.0f} s; mean reward per generation: "
              + ", ".join(f"{m:.3f}" for m in means))
        print(f"{name} start: 90 % level {target:.4f} "
              + (f"first reached at generation {reached}" if reached is not None
                 else "not reached"), flush=True)


if __name__ == "__main__":
    main()
