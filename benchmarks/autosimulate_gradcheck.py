"""Is AutoSimulate's hypergradient a descent direction on the real problem? (issue 5, diagnosis)

At the declared ψ₀ of a problem, a model θ₀ is trained for ``--warmup`` trials' worth of epochs,
on one data set or (``--warmup-data fresh``) on a fresh one per trial as the accumulated model is
(its state after a few AutoSimulate iterations). The ground truth is
F(ψ) = L_val(θ(ψ)): θ₀ fine-tuned for ξ epochs on M samples from ψ (Alg. 1's inner step), scored
by its mean validation loss (``--val-loss``: ``train``, the model's training loss l as in
AutoSimulate Eq. 1a, or ``expected_error``, 1 − p(y | x)) and by the validation reward. Its
gradient in normalised coordinates u = (ψ − low)/(high − low) is estimated by central differences
with common random numbers (the same data seed and training seed at ψ₀ ± h e_i), averaged over
``--pairs`` seeds. Each variant's hypergradient ∂L̃/∂ψ (Eq. 8/11, :mod:`samplers.hypergradient`),
averaged over ``--batches`` data sets, is compared with it (cosine), and the first step from ψ₀
is evaluated directly, F after the step minus F at ψ₀ (the same common random numbers): the
sampler's step, 0.05 · ĝ/‖ĝ‖ (Euclidean length 0.05 in u; ``--step``), and per-coordinate Adam's
first step, 0.05 · sign(ĝ) (the step rule before issue 5's fix). For scale, the same step along
∇F scored on other seeds than those ∇F was estimated with, and along ``--random-directions``
random directions; and per variant the opposite step (+0.05 ĝ/‖ĝ‖: does every move along ĝ
raise the loss?) and ĝ's largest components. ``adam_diag`` and ``adam_linear`` are the linear
variant with the fine-tuning's Adam preconditioner (:func:`_adam_hypergradient`).

Two checks of the hypergradient's assumptions come first (issue 5, digits):

* θ₀ at a minimum of the training loss? Eq. 4–8 assume ∇_θ L_train(θ̂, ψ) = 0. Printed: L_train and
  ‖∇_θ L_train‖ at θ₀ on its own (last) training data and on 10·M fresh samples from ψ₀ (the
  expectation over q_ψ₀ that Eq. 8 differentiates), beside the same at the untrained model.
* The score-function term alone (Eq. 11). With v fixed (the linear variant's v = g_val at θ₀),
  G(ψ) = E_ψ[∇_θ l(z, θ₀) · v] is a plain expectation whose gradient Eq. 11 estimates. ∇G from
  central differences (``--score-n`` samples per point, common random numbers) is compared with the
  score-function estimate on ``--score-batches`` data sets of M, with and without the baseline
  (``control_variate``), and on ``--score-n`` samples (bias: is ``log_prob`` the density
  ``simulate`` samples?). The relative error is E_b‖ĝ_b − ∇G‖² / ‖∇G‖².

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
from samplers.autosimulate import fisher_information, natural_gradient
from samplers.hypergradient import (
    METHODS,
    directional_derivatives,
    expected_error,
    hypergradient,
    leave_one_out_baseline,
    loss_gradient,
    score_function_gradient,
    score_matrix,
    select_parameters,
)
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


def _train_loss_and_grad_norm(module, batch) -> str:
    """"L_train, ‖∇_θ L_train‖" of ``module`` (eval mode) on ``batch``."""
    module.eval()
    params = select_parameters(module)
    with torch.no_grad():
        loss = float(module.per_sample_loss(batch.x, batch.y).mean())
    return f"{loss:.3f}, {float(loss_gradient(module, params, batch.x, batch.y).norm()):.4f}"


def _score_check(problem, module, val_loss, psi_at, u0, to_u, args) -> None:
    """The score-function term alone against central differences of G (module docstring)."""
    sim = problem.simulator
    module.eval()
    params = select_parameters(module)
    v = loss_gradient(module, params, *problem.val, loss=val_loss)

    def d_of(batch) -> torch.Tensor:
        return directional_derivatives(module, params, batch.x, batch.y, v).double()

    def g(u: np.ndarray, seed: int) -> float:
        return float(d_of(sim.simulate(psi_at(u), args.score_n, seed)).mean())

    seeds = [40_000 + s for s in range(2)]
    fd = np.zeros(len(u0))
    for i in range(len(u0)):
        e = np.zeros(len(u0))
        e[i] = args.h
        fd[i] = np.mean([(g(u0 + e, s) - g(u0 - e, s)) / (2 * args.h) for s in seeds])

    def estimate(batch, centred: bool) -> np.ndarray:
        d = d_of(batch)
        w = d - leave_one_out_baseline(d) if centred else d
        return to_u(score_function_gradient(sim, batch.latents, psi_at(u0), w))

    def cos(a: np.ndarray) -> float:
        return float(a @ fd / (np.linalg.norm(a) * np.linalg.norm(fd)))

    print(f"\nscore-function term alone: ∇G, G = E_ψ[∇_θ l · g_val] at θ₀, central differences on "
          f"{args.score_n} samples × {len(seeds)} CRN seeds; ‖∇G‖ = {np.linalg.norm(fd):.3g}")
    print("\n| estimate | cos(mean, ∇G) | cos per data set | relative error per data set |")
    print("|---|---|---|---|")
    batches = [sim.simulate(psi_at(u0), problem.n_samples, 50_000 + b)
               for b in range(args.score_batches)]
    big = sim.simulate(psi_at(u0), args.score_n, 60_000)
    for centred in (False, True):
        est = np.array([estimate(b, centred) for b in batches])
        per = [cos(e) for e in est]
        rel = np.mean(np.sum((est - fd) ** 2, axis=1)) / np.sum(fd**2)
        print(f"| M = {problem.n_samples}, {'baseline' if centred else 'no baseline'} "
              f"| {cos(est.mean(0)):+.3f} | {np.mean(per):+.3f} ± {np.std(per, ddof=1):.3f} "
              f"| {rel:.2f} |")
    print(f"| {args.score_n} samples, baseline | {cos(estimate(big, True)):+.3f} | – | – |")


ADAM_METHODS = ("adam_diag", "adam_linear")


def _adam_hypergradient(problem, module, batch, val_loss, method: str):
    """The linear variant with the fine-tuning's Adam preconditioner (a diagnostic; not a sampler
    variant). Adam restarted on a data set moves θ by about −η Σ_t ḡ/√s per coordinate, s = E[g²]
    over minibatches of the problem's batch size (ḡ their mean), here measured at θ₀ on ``batch``.
    ``adam_diag`` holds the preconditioner fixed: v = g_val/(√s + 1e-8); ``adam_linear`` uses the
    derivative of ḡ/√(ḡ² + σ²) in ḡ: v = g_val · (s − ḡ²)/s^{3/2}. Then Eq. 11 as for ``linear``."""
    module.eval()
    params = select_parameters(module)
    g_val = loss_gradient(module, params, *problem.val, loss=val_loss)
    size = problem.batch_size
    grads = torch.stack([loss_gradient(module, params, batch.x[i : i + size], batch.y[i : i + size])
                         for i in range(0, len(batch.x), size)])
    s, mean = grads.pow(2).mean(0), grads.mean(0)
    if method == "adam_diag":
        p = 1.0 / (s.sqrt() + 1e-8)
    else:
        p = (s - mean**2).clamp(min=0.0) / s.clamp(min=1e-16) ** 1.5
    d = directional_derivatives(module, params, batch.x, batch.y, g_val * p).double()
    sim = problem.simulator
    return score_function_gradient(sim, batch.latents, sim.init_psi(), -(d - leave_one_out_baseline(d)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="gmm2d")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=4, help="trials of ξ epochs before θ₀")
    parser.add_argument("--warmup-data", choices=("one", "fresh"), default="one",
                        help="θ₀'s warm-up: all its epochs on one data set, or ξ epochs on each of "
                             "--warmup fresh data sets (the accumulated model's history)")
    parser.add_argument("--pairs", type=int, default=4, help="common-random-number seeds per ±h")
    parser.add_argument("--batches", type=int, default=4, help="data sets per hypergradient")
    parser.add_argument("--h", type=float, default=0.02, help="finite-difference step in u")
    parser.add_argument("--random-directions", type=int, default=4,
                        help="steps along random directions, for scale")
    parser.add_argument("--step", type=float, default=0.05, help="length of the steps tried, in u")
    parser.add_argument("--fisher-steps", default="0.1,0.3,1",
                        help="lengths, in the Fisher metric of q_ψ₀, of the natural-gradient steps tried")
    parser.add_argument("--methods", default=",".join(METHODS + ADAM_METHODS))
    parser.add_argument("--val-loss", choices=sorted(VAL_LOSSES), default="train")
    parser.add_argument("--score-n", type=int, default=20_000,
                        help="samples per point of G's differences (0: skip the score check)")
    parser.add_argument("--score-batches", type=int, default=8)
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
    fresh = sim.simulate(sim.init_psi(), 10 * problem.n_samples, 10_001 + args.seed)
    norms = [_train_loss_and_grad_norm(theta0, data) for data in (batch0, fresh)]
    if args.warmup_data == "one":
        fit_tensors(theta0, batch0.x, batch0.y, problem.epochs * args.warmup, problem.batch_size,
                    args.seed)
    else:
        for t in range(args.warmup):
            if t:
                batch0 = sim.simulate(sim.init_psi(), problem.n_samples, 11_000 + 100 * args.seed + t)
            fit_tensors(theta0, batch0.x, batch0.y, problem.epochs, problem.batch_size, args.seed + t)
    norms += [_train_loss_and_grad_norm(theta0, data) for data in (batch0, fresh)]
    print(f"L_train, ‖∇_θ L_train‖ on θ₀'s (last) training data / on {len(fresh.x)} fresh samples "
          f"from ψ₀: untrained {norms[0]} / {norms[1]}; θ₀ ({args.warmup}×ξ epochs, "
          f"{args.warmup_data} data) {norms[2]} / {norms[3]}")

    def to_u(grad) -> np.ndarray:
        return space.to_flat(grad) * (high - low)

    if args.score_n:
        _score_check(problem, copy.deepcopy(theta0), val_loss, psi_at, u0, to_u, args)
    seeds = [20_000 + 100 * args.seed + p for p in range(args.pairs)]

    def f_per_seed(u: np.ndarray, crn=seeds) -> np.ndarray:
        """(loss, reward) for each common-random-number seed, shape (pairs, 2)."""
        return np.array([_val(problem, _fine_tuned(problem, theta0, psi_at(u), s), val_loss)
                         for s in crn])

    def f(u: np.ndarray, crn=seeds) -> np.ndarray:
        """(loss, reward) averaged over the common-random-number seeds."""
        return f_per_seed(u, crn).mean(0)

    start = time.perf_counter()
    f0 = f(u0)
    fd_seed = np.zeros((len(u0), args.pairs))  # ∂F_loss/∂u_i for each seed
    fd = np.zeros((len(u0), 2))
    for i in range(len(u0)):
        e = np.zeros(len(u0))
        e[i] = args.h
        diff = (f_per_seed(u0 + e) - f_per_seed(u0 - e)) / (2 * args.h)
        fd_seed[i], fd[i] = diff[:, 0], diff.mean(0)
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
    if args.pairs > 1:  # is ∇F resolved? the seeds' differences against each other
        unit = fd_seed / np.linalg.norm(fd_seed, axis=0)
        agree = (unit.T @ unit)[np.triu_indices(args.pairs, 1)]
        print(f"‖∇F_loss‖ = {np.linalg.norm(fd[:, 0]):.3f}; cos between two seeds' differences: "
              f"{agree.mean():+.3f} (mean of {len(agree)} pairs)")

    def cos(a: np.ndarray) -> float:
        return float(a @ fd[:, 0] / (np.linalg.norm(a) * np.linalg.norm(fd[:, 0])))

    print("\n| method | cos(ĝ, ∇F_loss) | cos(ĝ_b, ∇F_loss) per data set | cos(sign ĝ, ∇F_loss) "
          f"| ΔF_loss, step {args.step} ĝ/‖ĝ‖ | ΔF_reward | ΔF_loss, step {args.step} sign ĝ "
          "| ΔF_reward |")
    print("|---|---|---|---|---|---|---|---|")
    module = copy.deepcopy(theta0)
    batches = [sim.simulate(sim.init_psi(), problem.n_samples, 30_000 + b) for b in range(args.batches)]
    start = time.perf_counter()
    fishers = [fisher_information(space, score_matrix(sim, b.latents, sim.init_psi())) for b in batches]
    fisher_s = (time.perf_counter() - start) / len(batches)
    fisher = np.mean(fishers, axis=0)
    lengths = [float(x) for x in args.fisher_steps.split(",") if x]
    details = []
    natural_rows = []

    def natural_step(direction: np.ndarray, length: float) -> np.ndarray:
        """ΔF of the step −length · ñ/‖ñ‖_F, with its Euclidean length in u appended."""
        step = length * direction / np.sqrt(direction @ fisher @ direction)
        return np.append(f(u0 - step) - f0, np.linalg.norm(step))

    for method in args.methods.split(","):
        grads = []
        for b, batch in enumerate(batches):
            if method in ADAM_METHODS:
                grads.append(to_u(_adam_hypergradient(problem, module, batch, val_loss, method)))
                continue
            result = hypergradient(module, sim, sim.init_psi(), batch, problem.val, method, seed=b,
                                   val_loss=val_loss)
            grads.append(to_u(result.grad))
        grads = np.array(grads)
        mean = grads.mean(0)

        per = [cos(g) for g in grads]
        scaled = f(u0 - args.step * mean / np.linalg.norm(mean)) - f0
        adam = f(u0 - args.step * np.sign(mean)) - f0  # per-coordinate Adam's first step
        print(f"| {method} | {cos(mean):+.3f} | {np.mean(per):+.3f} ± {np.std(per, ddof=1):.3f} "
              f"| {cos(np.sign(mean)):+.3f} | {scaled[0]:+.4f} | {scaled[1]:+.4f} "
              f"| {adam[0]:+.4f} | {adam[1]:+.4f} |")
        unit = mean / np.linalg.norm(mean)
        opposite = f(u0 + args.step * unit) - f0
        top = np.argsort(-np.abs(unit))[:3]
        direction, _ = natural_gradient(mean, fisher)
        old = args.step * np.sqrt(unit @ fisher @ unit)
        natural_rows.append((method, old, [natural_step(direction, x) for x in lengths]))
        details.append(f"{method}: the opposite step +{args.step} ĝ/‖ĝ‖: ΔF_loss {opposite[0]:+.4f}, "
                       f"ΔF_reward {opposite[1]:+.4f}; largest components of ĝ/‖ĝ‖: "
                       + ", ".join(f"{names[i]} {unit[i]:+.2f}" for i in top))
    truth = f(u0 - args.step * fd[:, 0] / np.linalg.norm(fd[:, 0])) - f0
    print(f"| finite differences | +1.000 | – | {cos(np.sign(fd[:, 0])):+.3f} | {truth[0]:+.4f} "
          f"| {truth[1]:+.4f} | – | – |")
    held_out = [s + 50 for s in seeds]  # ∇F was fitted to ``seeds``: its step scored on others
    truth = f(u0 - args.step * fd[:, 0] / np.linalg.norm(fd[:, 0]), held_out) - f(u0, held_out)
    print(f"| finite differences, step scored on {args.pairs} other seeds | – | – | – "
          f"| {truth[0]:+.4f} | {truth[1]:+.4f} | – | – |")
    rng = np.random.default_rng(args.seed)
    for r in range(args.random_directions):
        e = rng.normal(size=len(u0))
        step = f(u0 - args.step * e / np.linalg.norm(e)) - f0
        print(f"| random direction {r} | {cos(e):+.3f} | – | – | {step[0]:+.4f} | {step[1]:+.4f} "
              "| – | – |")
    print("\n" + "\n".join(details))
    print(f"\nnatural-gradient steps −η ñ/‖ñ‖_F, ñ = F_u⁺ĝ, F_u = the empirical Fisher information of "
          f"q_ψ₀ in u on the {args.batches} data sets ({fisher_s:.3f} s per data set of M); "
          f"ΔF_loss / ΔF_reward (Euclidean length in u):\n")
    print("| direction | Fisher length of the step " + f"{args.step} ĝ/‖ĝ‖ | "
          + " | ".join(f"η = {x:g}" for x in lengths) + " |")
    print("|---|---|" + "---|" * len(lengths))
    for r in range(args.random_directions):
        e = rng.normal(size=len(u0))
        natural_rows.append((f"random direction {r}", args.step * np.sqrt(e @ fisher @ e) / np.linalg.norm(e),
                             [natural_step(e, x) for x in lengths]))
    for name, old, cells in natural_rows:
        print(f"| {name} | {old:.2f} | " + " | ".join(
            f"{c[0]:+.4f} / {c[1]:+.4f} ({c[2]:.4f})" for c in cells) + " |")


if __name__ == "__main__":
    main()
