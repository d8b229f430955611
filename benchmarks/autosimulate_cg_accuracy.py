"""How accurate is the exact-quadratic hypergradient for what its solve costs? (issue 5, cost goal)

The accumulated model is fine-tuned at the problem's declared ψ₀ for ``--warmup`` trials of ξ
epochs, each on a fresh data set of M (Alg. 1 with ψ held at ψ₀, so that every setting below sees
the same models θ_1, θ_2, …). At the last model θ_T and its last training data set, the
exact-quadratic hypergradient ∂L̃/∂ψ (Eq. 8, 11, 13; :func:`samplers.hypergradient.hypergradient`)
is computed with a **reference** solve: H on all M training samples, conjugate gradient to a
relative residual of ``--ref-tol`` with a cap of ``--ref-cap`` products, the Levenberg damping λ
started at the default and raised on negative curvature (§4.2).

Each setting (``hessian_samples`` × ``cg_max_iter`` × ``cg_tol``) is run as the sampler runs it:
a chain of solves at θ_{T−``--chain``} … θ_T, each warm-started from the previous one's v, with
the damping started, per ``mode``, at

* ``default``: the default λ in every trial (the sampler before this benchmark);
* ``carry``: the λ the previous trial's solve ended with (at the default in the chain's first);
* ``decay``: half that λ, but not below the default (Levenberg–Marquardt's decrease after a
  successful step, Moré 1978): it falls back when the curvature allows.

At θ_T it prints the H-vector products used, the final λ and residual, the cosine and the norm
ratio of v = (H + λI)⁻¹ g_val and of ∂L̃/∂ψ against the reference (the same batch, latents and
control variate, so only v differs), and the seconds of the whole hypergradient call (g_val, the
solve, the JVP of the M per-sample losses and the score function). The same for the linear and
approximate-quadratic variants, for scale (the linear row's v is g_val itself). Every figure is
repeated on ``--seeds`` independent warm-ups (and H subsamples): the mean and the minimum.

It also times one H-vector product per ``hessian_samples`` by double backward (the library's
:class:`~samplers.hypergradient.HessianVectorProduct`) and by forward-over-reverse
(``torch.func.jvp`` of ``torch.func.grad``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/autosimulate_cg_accuracy.py --problem traffic-count
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import numpy as np
import torch

from lightning_modules import fit_tensors
from samplers.hypergradient import (
    HessianVectorProduct,
    Hypergradient,
    _flat,
    _PerSampleLoss,
    _unflat,
    hypergradient,
    loss_gradient,
    select_parameters,
)
from simsearch.problems import get

MODES = ("default", "carry", "decay")
DEFAULT_DAMPING = 1e-2


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s]


def _floats(text: str) -> list[float]:
    return [float(s) for s in text.split(",") if s]


def _forward_over_reverse(module, params, x, y):
    """u ↦ H u by ``torch.func.jvp`` of ``torch.func.grad`` (the alternative to double backward)."""
    wrapper = _PerSampleLoss(module)
    names = [f"module.{n}" for n in params]
    primals = tuple(p.detach() for p in params.values())

    def loss(*theta):
        return torch.func.functional_call(wrapper, dict(zip(names, theta, strict=True)), (x, y)).mean()

    grad = torch.func.grad(loss, argnums=tuple(range(len(primals))))

    def hvp(u: torch.Tensor) -> torch.Tensor:
        return _flat(torch.func.jvp(grad, primals, tuple(_unflat(u, params).values()))[1])

    return hvp


def _time_hvps(module, batch, sizes: list[int], g: torch.Tensor, repeats: int = 3) -> None:
    params = select_parameters(module)
    print("| hessian_samples | build s (double backward) | product s, double backward "
          "| product s, forward-over-reverse | relative difference |")
    print("|---|---|---|---|---|")
    for n in sizes:
        x, y = batch.x[:n], batch.y[:n]
        start = time.perf_counter()
        double = HessianVectorProduct(module, params, x, y)
        build = time.perf_counter() - start
        forward = _forward_over_reverse(module, params, x, y)
        seconds = []
        for hvp in (double, forward):
            hvp(g)
            start = time.perf_counter()
            for _ in range(repeats):
                out = hvp(g)
            seconds.append((time.perf_counter() - start) / repeats)
        diff = float((double(g) - out).norm() / double(g).norm())
        print(f"| {n} | {build:.3f} | {seconds[0]:.3f} | {seconds[1]:.3f} | {diff:.1e} |")


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()))


def _grad_vector(result: Hypergradient) -> torch.Tensor:
    return torch.cat([g.reshape(-1).double() for g in result.grad.values()])


class _Chain:
    """The models θ_1 … θ_T of one warm-up and their training data sets."""

    def __init__(self, problem, module, models: list[dict], batches: list, seed: int) -> None:
        self.problem, self.module, self.models, self.batches, self.seed = (
            problem, module, models, batches, seed)

    def solve(self, t: int, method: str, **options) -> tuple[Hypergradient, float]:
        """The hypergradient at θ_t on its training data, and its seconds."""
        self.module.load_state_dict(self.models[t])
        sim = self.problem.simulator
        start = time.perf_counter()
        result = hypergradient(self.module, sim, sim.init_psi(), self.batches[t], self.problem.val,
                               method, seed=1000 * self.seed + t, **options)
        return result, time.perf_counter() - start


def _compare(result: Hypergradient, seconds: float, ref: Hypergradient) -> tuple[float, ...]:
    """(products, λ, residual, cos(v, v_ref), ‖v‖/‖v_ref‖, cos(∂L̃/∂ψ, ref), norm ratio, seconds)."""
    grad, ref_grad = _grad_vector(result), _grad_vector(ref)
    damping = float("nan") if np.isnan(result.cg_residual) else result.damping  # no solve: no λ
    return (result.cg_iterations, damping, result.cg_residual, _cos(result.v, ref.v),
            float(result.v.norm() / ref.v.norm()), _cos(grad, ref_grad),
            float(grad.norm() / ref_grad.norm()), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="traffic-count")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds --first-seed … --first-seed + --seeds − 1 (split runs)")
    parser.add_argument("--warmup", type=int, default=4, help="trials of ξ epochs before θ_T")
    parser.add_argument("--chain", type=int, default=2, help="solves before θ_T's, per setting")
    parser.add_argument("--hessian-samples", default="32,64,128,256")
    parser.add_argument("--caps", default="3,5,8,20")
    parser.add_argument("--tols", default="1e-3,1e-2")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--ref-tol", type=float, default=1e-6)
    parser.add_argument("--ref-cap", type=int, default=200)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    problem = get(args.problem)
    sim = problem.simulator
    psi = sim.init_psi()
    sizes, caps, tols = _ints(args.hessian_samples), _ints(args.caps), _floats(args.tols)
    modes = [m for m in args.modes.split(",") if m]
    if args.chain >= args.warmup:
        raise ValueError(f"--chain must be < --warmup ({args.warmup}), got {args.chain}")
    print(f"problem {args.problem}: M={problem.n_samples}, ξ={problem.epochs}; θ_T after "
          f"{args.warmup} trials of fresh data at ψ₀; chain of {args.chain} solves before θ_T's; "
          f"reference: H on all M, CG tol {args.ref_tol:g}, cap {args.ref_cap}; "
          f"{args.seeds} seeds; torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows: dict[tuple, list[tuple]] = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        torch.manual_seed(seed)  # the model's initialisation
        module = problem.make_model()
        models, batches = [], []
        for t in range(args.warmup):
            batch = sim.simulate(psi, problem.n_samples, 70_000 + 100 * seed + t)
            fit_tensors(module, batch.x, batch.y, problem.epochs, problem.batch_size, 100 * seed + t)
            models.append({k: v.detach().clone() for k, v in module.state_dict().items()})
            batches.append(batch)
        if seed == args.first_seed:
            g = loss_gradient(module.eval(), select_parameters(module), *problem.val)
            _time_hvps(module, batches[-1], sizes, g)
            print()
        chain = _Chain(problem, module, models, batches, seed)
        last = args.warmup - 1
        ref, _ = chain.solve(last, "quadratic", hessian_samples=None, cg_tol=args.ref_tol,
                             cg_max_iter=args.ref_cap)
        print(f"seed {seed}: reference {ref.cg_iterations} products, λ {ref.damping:.3g}, "
              f"residual {ref.cg_residual:.1e}")
        for method in ("linear", "approx_quadratic"):
            key = (method, "–" if method == "linear" else 128, "–", "–", "–")
            rows.setdefault(key, []).append(_compare(*chain.solve(last, method), ref))
        for n, cap, tol, mode in itertools.product(sizes, caps, tols, modes):
            if tol != tols[0] and cap != max(caps):
                continue  # other tolerances only at the largest cap
            warm, damping = None, DEFAULT_DAMPING
            for t in range(last - args.chain, last + 1):
                result, seconds = chain.solve(t, "quadratic", hessian_samples=n, cg_max_iter=cap,
                                              cg_tol=tol, warm_start=warm, damping=damping)
                warm = result.v
                damping = {"default": DEFAULT_DAMPING, "carry": result.damping,
                           "decay": max(DEFAULT_DAMPING, result.damping / 2)}[mode]
            rows.setdefault(("quadratic", n, cap, tol, mode), []).append(
                _compare(result, seconds, ref))

    print("\nmean (min over seeds) at θ_T; cos and ratio against the reference:\n")
    print("| method | hessian_samples | cg_max_iter | cg_tol | λ start | products | final λ "
          "| residual | cos(v, v_ref) | ‖v‖/‖v_ref‖ | cos(∂L̃/∂ψ, ref) | ‖∂L̃/∂ψ‖ ratio | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key, values in rows.items():
        a = np.array(values, dtype=float)
        mean, low = np.nanmean(a, axis=0), np.nanmin(a, axis=0)
        cells = [f"{mean[0]:.1f}", f"{mean[1]:.3g}", f"{mean[2]:.1e}",
                 f"{mean[3]:+.3f} ({low[3]:+.3f})", f"{mean[4]:.2f}",
                 f"{mean[5]:+.3f} ({low[5]:+.3f})", f"{mean[6]:.2f}", f"{mean[7]:.2f}"]
        print("| " + " | ".join(str(k) for k in key) + " | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
