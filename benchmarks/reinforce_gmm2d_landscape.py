"""The reward landscape ReinforceSampler climbs on ``gmm2d`` (LTS §2.2, Eq. 2): J_σ(ω) = E_{ψ~N(ω, σ²)}[R(ψ)].

REINFORCE ascends J_σ, the reward smoothed by the policy's own noise, not R itself. This script
estimates J_σ (mean reward of ``--draws`` seeded draws ψ ~ N(ω, σ²) in the sampler's unit-box
coordinates, clipped onto the box as the sampler does) at the simulator's default ψ, at the centre
of the bounds and at a good 2-component ψ (the one of
``tests/test_problems.py::test_a_good_two_component_psi_exists``), for several σ, and along the
straight line from the default ψ to the good ψ. R is the benchmark's reward: validation accuracy of
the problem's RBF SVM trained on M = 500 samples from ψ.

    .venv/bin/python benchmarks/reinforce_gmm2d_landscape.py
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from optuna._transform import _SearchSpaceTransform

from simsearch.objective import trial_seed
from simsearch.problems import get

#: Per class one x-wide Gaussian on the row holding two of its blobs and one narrow Gaussian on the
#: other row's centre (test_a_good_two_component_psi_exists).
GOOD_PSI = {
    "means": torch.tensor([[[0.0, 1.5], [0.0, -1.5]], [[0.0, 1.5], [0.0, -1.5]]]),
    "log_std": torch.log(torch.tensor([[[3.0, 0.6], [0.6, 0.6]], [[0.6, 0.6], [3.0, 0.6]]])),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=40, help="draws per estimate of J_σ")
    parser.add_argument("--sigmas", type=float, nargs="+",
                        default=[0.0, 0.02, 0.05, 0.1, math.sqrt(0.05)])
    parser.add_argument("--line-sigmas", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--line-points", type=int, default=11)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    problem = get("gmm2d")
    simulator, space = problem.simulator, problem.simulator.space
    trans = _SearchSpaceTransform(space.search_space(), transform_0_1=True)
    (xv, yv), rng = problem.val, np.random.RandomState(args.seed)

    def reward(unit: np.ndarray, seed: int) -> float:
        psi = space.from_params(trans.untransform(np.clip(unit, 0.0, 1.0)))
        batch = simulator.simulate(psi, problem.n_samples, seed=seed)
        model = problem.models["svm"]().fit(batch.x.numpy(), batch.y.numpy())
        return float(model.score(xv.numpy(), yv.numpy()))

    def smoothed(omega: np.ndarray, sigma: float) -> tuple[float, float]:
        rewards = [reward(omega + sigma * rng.standard_normal(len(omega)), trial_seed(args.seed, i))
                   for i in range(args.draws)]
        return float(np.mean(rewards)), float(np.std(rewards))

    points = {"default ψ": trans.transform(space.to_params(simulator.init_psi())),
              "centre of the bounds": np.full(len(trans.bounds), 0.5),
              "good ψ": trans.transform(space.to_params(GOOD_PSI))}
    print(f"# J_σ on gmm2d: mean ± sd of R over {args.draws} draws ψ ~ N(ω, σ²) (unit-box σ), "
          f"R = SVM validation accuracy, M = {problem.n_samples}")
    print("\n| ω | " + " | ".join(f"σ = {s:.3g}" for s in args.sigmas) + " |")
    print("|---|" + "---|" * len(args.sigmas))
    for name, omega in points.items():
        cells = [smoothed(omega, s) for s in args.sigmas]
        print(f"| {name} | " + " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in cells) + " |",
              flush=True)
    start, end = points["default ψ"], points["good ψ"]
    alphas = np.linspace(0.0, 1.0, args.line_points)
    print(f"\nstraight line default ψ → good ψ (unit-box length {np.linalg.norm(end - start):.2f}), "
          f"J_σ at α = " + ", ".join(f"{a:.1f}" for a in alphas))
    for s in args.line_sigmas:
        line = [smoothed((1 - a) * start + a * end, s)[0] for a in alphas]
        print(f"σ = {s:.3g}: " + " ".join(f"{v:.3f}" for v in line), flush=True)


if __name__ == "__main__":
    main()
