"""Is AutoSimulate's hypergradient a descent direction on the real problem? (issue 5, diagnosis)

At the declared ψ₀ of a problem, a model θ₀ is trained for ``--warmup`` trials' worth of epochs
(the state of the accumulated model after a few AutoSimulate iterations). The ground truth is
F(ψ) = L_val(θ(ψ)): θ₀ fine-tuned for ξ epochs on M samples from ψ (Alg. 1's inner step), scored
by its mean validation loss (``--val-loss``: ``train``, the model's training loss l as in
AutoSimulate Eq. 1a, or ``expected_error``, 1 − p(y | x)) and by the validation reward. Its
gradient in normalised coordinates u = (ψ − low)/(high − low) is estimated by central differences
with common random numbers (the same data seed and training seed at ψ₀ ± h e_i), averaged over
``--pairs`` seeds. Each variant's hypergradient ∂L̃/∂ψ (Eq. 8/11, :mod:`samplers.hypergradient`),
averaged over ``--batches`` data sets, is compared with it (cosine), and the first step from ψ₀
is evaluated directly, F after the step minus F at ψ₀ (the same common random numbers): the
sampler's step, 0.05 · ĝ/‖ĝ‖ (Euclidean length 0.05 in u), and per-coordinate Adam's first step,
0.05 · sign(ĝ) (the step rule before issue 5's fix).

    .venv/bin/python benchmarks/autosimulate_gradcheck.py --problem gmm2d
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import numpy as np
import optuna
import torch

from lightning_modules import fit_tensors
from samplers.hypergradient import METHODS, expected_error, hypergradient
from simsearch.problems import get


def _fine_tuned(problem, theta0, psi, seed: int):
    module = copy.deepcopy(theta0)
    batch = problem.simulator.simulate(psi, problem.n_samples, seed)
    return fit_tensors(module, batch.x, batch.y, problem.epochs, problem.batch_size, seed)


VAL_LOSSES = {"train": None, "expected_error": expected_error}


def _val(problem, module, val_loss) -> tuple[float, float]:
    """(mean validation loss, validation reward) of ``module``."""
    module.eval()
    x, y = problem.val
    with torch.no_grad():
        losses = module.per_sample_loss(x, y) if val_loss is None else val_loss(module(x), y)
    return float(losses.mean()), module.evaluate(x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="gmm2d")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=4, help="trials of ξ epochs before θ₀")
    parser.add_argument("--pairs", type=int, default=4, help="common-random-number seeds per ±h")
    parser.add_argument("--batches", type=int, default=4, help="data sets per hypergradient")
    parser.add_argument("--h", type=float, default=0.02, help="finite-difference step in u")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--val-loss", choices=sorted(VAL_LOSSES), default="train")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.manual_seed(args.seed)
    problem = get(args.problem)
    val_loss = VAL_LOSSES[args.val_loss]
    sim, space = problem.simulator, problem.simulator.space
    low, high = space.bounds()
    u0 = (space.to_flat(sim.init_psi()) - low) / (high - low)

    def psi_at(u: np.ndarray):
        return space.from_flat(low + np.clip(u, 0.0, 1.0) * (high - low))

    theta0 = problem.make_model()
    batch0 = sim.simulate(sim.init_psi(), problem.n_samples, 10_000 + args.seed)
    fit_tensors(theta0, batch0.x, batch0.y, problem.epochs * args.warmup, problem.batch_size, args.seed)
    seeds = [20_000 + 100 * args.seed + p for p in range(args.pairs)]

    def f(u: np.ndarray) -> np.ndarray:
        """(loss, reward) averaged over the common-random-number seeds."""
        return np.mean([_val(problem, _fine_tuned(problem, theta0, psi_at(u), s), val_loss)
                        for s in seeds], axis=0)

    start = time.perf_counter()
    f0 = f(u0)
    fd = np.zeros((len(u0), 2))
    for i in range(len(u0)):
        e = np.zeros(len(u0))
        e[i] = args.h
        fd[i] = (f(u0 + e) - f(u0 - e)) / (2 * args.h)
    fd_s = time.perf_counter() - start
    names = space.flat_names()
    print(f"problem {args.problem}: {len(u0)} coordinates of ψ; θ₀ = {args.warmup}×ξ epochs at ψ₀; "
          f"F = θ₀ fine-tuned ξ={problem.epochs} epochs on M={problem.n_samples}; "
          f"{args.pairs} CRN seeds, h = {args.h} (u units); {fd_s:.0f} s for the differences")
    print(f"F(ψ₀): val loss ({args.val_loss}) {f0[0]:.4f}, val reward {f0[1]:.4f}")
    cos_surrogate = float(fd[:, 0] @ -fd[:, 1] / (np.linalg.norm(fd[:, 0]) * np.linalg.norm(fd[:, 1])))
    print(f"cos(∇F_loss, −∇F_reward) = {cos_surrogate:+.3f} (do the loss and the reward agree?)")
    top = np.argsort(-np.abs(fd[:, 0]))[:5]
    print("largest |∂F_loss/∂u|: " + ", ".join(f"{names[i]} {fd[i, 0]:+.3f}" for i in top))

    def cos(a: np.ndarray) -> float:
        return float(a @ fd[:, 0] / (np.linalg.norm(a) * np.linalg.norm(fd[:, 0])))

    print("\n| method | cos(ĝ, ∇F_loss) | cos(ĝ_b, ∇F_loss) per data set | cos(sign ĝ, ∇F_loss) "
          "| ΔF_loss, step 0.05 ĝ/‖ĝ‖ | ΔF_reward | ΔF_loss, step 0.05 sign ĝ | ΔF_reward |")
    print("|---|---|---|---|---|---|---|---|")
    module = copy.deepcopy(theta0)
    for method in args.methods.split(","):
        grads = []
        for b in range(args.batches):
            batch = sim.simulate(sim.init_psi(), problem.n_samples, 30_000 + b)
            result = hypergradient(module, sim, sim.init_psi(), batch, problem.val, method, seed=b,
                                   val_loss=val_loss)
            grads.append(space.to_flat(result.grad) * (high - low))
        grads = np.array(grads)
        mean = grads.mean(0)

        per = [cos(g) for g in grads]
        scaled = f(u0 - 0.05 * mean / np.linalg.norm(mean)) - f0
        adam = f(u0 - 0.05 * np.sign(mean)) - f0  # per-coordinate Adam's first step
        print(f"| {method} | {cos(mean):+.3f} | {np.mean(per):+.3f} ± {np.std(per, ddof=1):.3f} "
              f"| {cos(np.sign(mean)):+.3f} | {scaled[0]:+.4f} | {scaled[1]:+.4f} "
              f"| {adam[0]:+.4f} | {adam[1]:+.4f} |")
    truth = f(u0 - 0.05 * fd[:, 0] / np.linalg.norm(fd[:, 0])) - f0
    print(f"| finite differences | +1.000 | – | {cos(np.sign(fd[:, 0])):+.3f} | {truth[0]:+.4f} "
          f"| {truth[1]:+.4f} | – | – |")


if __name__ == "__main__":
    main()
