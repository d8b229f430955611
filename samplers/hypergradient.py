"""AutoSimulate's hypergradient ∂L̃_val/∂ψ through a trained main task model (AutoSimulate §4).

For a model θ̂ trained on data drawn with simulator parameters ψ, and the latents s_k of its
K training samples ζ_k = r(s_k), AutoSimulate (Eq. 8, 11, 13; Table 1; Alg. 1) computes::

    g_val = ∇_θ L_val(θ̂)                                  mean per-sample loss on validation data
    v     = (H + λI)⁻¹ g_val   "quadratic"                 conjugate gradient on H-vector products
          =  H g_val           "approx_quadratic"          one H-vector product
          =  g_val             "linear"
    d_k   = ∇_θ l(ζ_k, θ̂) · v                             all K at once: one forward-mode JVP
    ∂L̃/∂ψ = −(1/K) Σ_k ∇_ψ log q_ψ(s_k) · (d_k − b_k)     score function, Eq. 11

H = ∇²_θ (1/K) Σ_k l(ζ_k, θ̂) is the Hessian of the training loss, λ the Levenberg damping of §4.2
and b_k a leave-one-out control variate (the mean of the other K − 1 values of d), which leaves the
estimator unbiased because b_k does not depend on s_k. The ``"no_val"`` ablation (Table 1, last row;
Table 4) uses no validation data: d_k = l(ζ_k, θ̂) and ∂L̃/∂ψ = +(1/K) Σ_k ∇_ψ log q_ψ(s_k)·(d_k − b_k),
the gradient of the model's expected training loss, so descending it finds the data the model fits
best. Table 1 prints a "+" before the approximate-quadratic term; for a positive-definite H that
direction ascends the linear variant's objective, so the same "−" is used for the three
validation-based variants (DESIGN.md §7).

The signs follow the implicit-function theorem: with ∇_θ L_train(θ*(ψ), ψ) = 0,
dθ*/dψ = −H⁻¹ ∂²L_train/∂θ∂ψ, so dL_val(θ*(ψ))/dψ = −∂/∂ψ E_ψ[∇_θ l]ᵀ H⁻¹ g_val (Eq. 8).

>>> import torch
>>> from simsearch.problems import get
>>> problem = get("gmm2d")
>>> sim, module = problem.simulator, problem.make_model()
>>> batch = sim.simulate(sim.init_psi(), n=64, seed=0)
>>> result = hypergradient(module, sim, sim.init_psi(), batch, problem.val, "quadratic")
>>> sorted(result.grad), tuple(result.grad["means"].shape)
(['log_std', 'means'], (2, 2, 2))
>>> result.cg_iterations <= 10
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from simsearch.parameters import Psi
from simsearch.simulator import BaseSimulator, SimulatedBatch

__all__ = [
    "CHUNK_SIZE",
    "METHODS",
    "CGResult",
    "HessianVectorProduct",
    "Hypergradient",
    "check_chunk_size",
    "conjugate_gradient",
    "directional_derivatives",
    "expected_error",
    "hypergradient",
    "leave_one_out_baseline",
    "loss_gradient",
    "score_function_gradient",
    "score_matrix",
    "select_parameters",
]

#: The approximations of Δθ̂ of AutoSimulate's Table 1, by name.
METHODS = ("quadratic", "approx_quadratic", "linear", "no_val")

#: Samples per pass of the d_k's JVP (and of no_val's losses). Chunks keep a CNN's activations
#: small enough for the CPU's caches: on traffic-count (1,000 images of 64 × 64) the exact-
#: quadratic hook took 0.58 s in chunks of 128 against 0.97 s in one pass, and the trial 1.61×
#: a trial without the hook instead of 1.87× (BENCHMARKS.md, issue 5, "Chunked JVP"). Each d_k
#: depends on sample k only (eval mode), so the values do not change.
CHUNK_SIZE = 128


def check_chunk_size(chunk_size: int) -> None:
    """Refuse a ``chunk_size`` that is not an int >= 1 (ValueError naming it)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")

ThetaSelector = Sequence[str] | str | Callable[[str], bool] | None


def select_parameters(module: torch.nn.Module, theta: ThetaSelector = None) -> dict[str, torch.Tensor]:
    """θ: the trainable parameters of ``module`` the hypergradient differentiates.

    Args:
        theta: ``None`` for every parameter with ``requires_grad``; a name or a list of names or
            prefixes (``"net.4"`` selects ``net.4.weight`` and ``net.4.bias``); or a predicate
            ``name -> bool``. Restricting θ to the last layers is AutoSimulate's "frozen layers"
            (Table 5): H, g_val and d_k then involve only those parameters.

    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    >>> list(select_parameters(net, "1"))
    ['1.weight', '1.bias']
    """
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if theta is None:
        chosen = named
    elif callable(theta):
        chosen = [(n, p) for n, p in named if theta(n)]
    else:
        prefixes = [theta] if isinstance(theta, str) else list(theta)

        def under(name: str, prefix: str) -> bool:
            return name == prefix or name.startswith(prefix + ".")

        unknown = [q for q in prefixes if not any(under(n, q) for n, _ in named)]
        if unknown:
            raise ValueError(
                f"theta: expected names or prefixes of trainable parameters "
                f"{[n for n, _ in named]}, got unknown {unknown}"
            )
        chosen = [(n, p) for n, p in named if any(under(n, q) for q in prefixes)]
    if not chosen:
        raise ValueError(
            f"theta selects no trainable parameter; trainable: {[n for n, _ in named]}"
        )
    return dict(chosen)


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat(vector: torch.Tensor, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split the last dimension of ``vector`` into tensors shaped like ``params`` (leading
    dimensions, e.g. one row per sample, are kept)."""
    out, i, lead = {}, 0, vector.shape[:-1]
    for name, p in params.items():
        out[name] = vector[..., i : i + p.numel()].reshape(*lead, *p.shape)
        i += p.numel()
    return out


ValLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``f(outputs, y) -> (n,)`` per-sample validation losses of the model's outputs ``module(x)``."""


def expected_error(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 − softmax(outputs)_y: the probability that a classifier sampling its prediction errs.

    A smooth, bounded stand-in for the 0-1 error whose mean the reward (accuracy) counts; unlike
    the cross-entropy it does not grow without bound on confidently wrong samples, so a few of
    them cannot dominate g_val (BENCHMARKS.md, issue 5: on gmm2d and digits the validation
    cross-entropy can fall while the accuracy falls).

    >>> expected_error(torch.tensor([[0.0, 0.0], [10.0, -10.0]]), torch.tensor([1, 0])).tolist()
    [0.5, 0.0]
    """
    return 1.0 - torch.softmax(outputs, dim=1).gather(1, y.long().unsqueeze(1)).squeeze(1)


def loss_gradient(
    module: torch.nn.Module,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    chunk_size: int = 4096,
    loss: ValLoss | None = None,
) -> torch.Tensor:
    """∇_θ (1/n) Σ_k l(z_k, θ) as a flat vector, accumulated over chunks of ``chunk_size``;
    l is ``module.per_sample_loss`` unless ``loss(module(x), y)`` is given."""
    check_chunk_size(chunk_size)
    n, total = len(x), None
    for i in range(0, n, chunk_size):
        xs, ys = x[i : i + chunk_size], y[i : i + chunk_size]
        losses = module.per_sample_loss(xs, ys) if loss is None else loss(module(xs), ys)
        loss_sum = losses.sum() / n
        grads = torch.autograd.grad(loss_sum, list(params.values()), materialize_grads=True)
        flat = _flat(grads).detach()
        total = flat if total is None else total + flat
    return total


class HessianVectorProduct:
    """u ↦ H u, H = ∇²_θ (1/n) Σ_k l(ζ_k, θ), by double backward.

    The gradient graph is built once (``create_graph=True``); each product is then one backward
    pass through it (AutoSimulate §4.2: "Hessian-vector product requires only one forward and
    backward pass, same as a gradient").

    >>> net = torch.nn.Linear(2, 1, bias=False)
    >>> net.per_sample_loss = lambda x, y: (net(x).squeeze(1) - y) ** 2
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    >>> hvp = HessianVectorProduct(net, dict(net.named_parameters()), x, torch.zeros(2))
    >>> hvp(torch.tensor([1.0, 1.0])).tolist()   # H = XᵀX = diag(1, 4)
    [1.0, 4.0]
    """

    def __init__(
        self,
        module: torch.nn.Module,
        params: Mapping[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> None:
        self._params = list(params.values())
        loss = module.per_sample_loss(x, y).mean()
        grads = torch.autograd.grad(loss, self._params, create_graph=True, materialize_grads=True)
        self._grad = _flat(grads)
        self.dim = self._grad.numel()

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        if not self._grad.requires_grad:  # the loss is linear in θ: H = 0
            return torch.zeros_like(u)
        hu = torch.autograd.grad(
            self._grad, self._params, grad_outputs=u, retain_graph=True, materialize_grads=True
        )
        return _flat(hu).detach()


@dataclass(frozen=True)
class CGResult:
    """A conjugate-gradient solve: the solution, products used, ‖b − Ax‖/‖b‖, whether the
    tolerance was met (False after the iteration cap or a direction of non-positive curvature),
    and, when such a direction p stopped the solve, its Rayleigh quotient pᵀAp/pᵀp ≤ 0."""

    x: torch.Tensor
    iterations: int
    residual: float
    converged: bool
    negative_curvature: float | None = None


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    tol: float = 1e-3,
    max_iter: int = 20,
) -> CGResult:
    """Solve A x = b for a symmetric A given only u ↦ A u (Shewchuk 1994, §B2).

    This minimises Q(x) = ½xᵀAx − bᵀx (AutoSimulate Eq. 13a). It stops when the (recursively
    updated) residual satisfies ‖r‖ ≤ tol·‖b‖, after ``max_iter`` products, or on a direction p
    with pᵀAp ≤ 0 (A not positive definite despite damping): then, as in Nocedal & Wright's
    Newton–CG (Alg. 7.1), the iterate so far is returned, or b itself when that happens on the
    first direction from x = 0. ``x0`` warm-starts the solve (one extra product).

    >>> a = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
    >>> result = conjugate_gradient(lambda u: a @ u, torch.tensor([1.0, 2.0]), tol=1e-6)
    >>> [round(v, 4) for v in result.x.tolist()], result.iterations
    ([0.0909, 0.6364], 2)
    """
    if not tol > 0:
        raise ValueError(f"cg_tol must be > 0, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"cg_max_iter must be an int >= 1, got {max_iter!r}")
    b_norm = float(b.norm())
    if b_norm == 0.0:
        return CGResult(torch.zeros_like(b), 0, 0.0, True)
    iterations = 0
    if x0 is None:
        x, r = torch.zeros_like(b), b.clone()
    else:
        x = x0.detach().clone().to(b)
        r = b - matvec(x)
        iterations = 1
    p, rr = r.clone(), r.dot(r)
    steps, negative = 0, None
    while math.sqrt(float(rr)) > tol * b_norm and steps < max_iter:
        ap = matvec(p)
        steps += 1
        curvature = p.dot(ap)
        if curvature <= 0:
            negative = float(curvature / p.dot(p))
            if steps == 1 and x0 is None:
                x = b.clone()
                rr = (b - matvec(x)).pow(2).sum()
                steps += 1
            break
        alpha = rr / curvature
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    residual = math.sqrt(float(rr)) / b_norm
    return CGResult(x, iterations + steps, residual, residual <= tol, negative)


class _PerSampleLoss(torch.nn.Module):
    """``forward(x, y)`` = ``module.per_sample_loss(x, y)``, so ``torch.func.functional_call``
    can evaluate the per-sample losses at substituted parameters."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.module.per_sample_loss(x, y)


def directional_derivatives(
    module: torch.nn.Module,
    params: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    v: torch.Tensor,
    chunk_size: int = CHUNK_SIZE,
) -> torch.Tensor:
    """d_k = ∇_θ l(ζ_k, θ) · v for every sample k, shape ``(n,)``.

    One forward-mode JVP of θ ↦ (l(ζ_1, θ), …, l(ζ_n, θ)) in direction v gives all n values at
    the cost of about one forward pass, instead of n per-sample backward passes; it runs on
    chunks of ``chunk_size`` samples (the values are the same: each d_k depends on sample k only,
    the model being in eval mode).
    """
    check_chunk_size(chunk_size)
    wrapper = _PerSampleLoss(module)
    names = [f"module.{n}" for n in params]
    primals = tuple(p.detach() for p in params.values())
    tangents = tuple(t.to(p) for t, p in zip(_unflat(v, params).values(), primals, strict=True))

    def directional(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        def losses(*theta: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(wrapper, dict(zip(names, theta, strict=True)), (xs, ys))

        return torch.func.jvp(losses, primals, tangents)[1].detach()

    return torch.cat([directional(x[i : i + chunk_size], y[i : i + chunk_size])
                      for i in range(0, len(x), chunk_size)])


def leave_one_out_baseline(d: torch.Tensor) -> torch.Tensor:
    """b_k = mean of the other n − 1 values of d (a control variate independent of sample k).

    >>> leave_one_out_baseline(torch.tensor([1.0, 2.0, 6.0])).tolist()
    [4.0, 3.5, 1.5]
    """
    n = d.numel()
    if n < 2:
        return torch.zeros_like(d)
    return (d.sum() - d) / (n - 1)


def _log_q(
    simulator: BaseSimulator, latents: Mapping[str, torch.Tensor], psi: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(ψ as fresh leaf tensors that require grad, log q_ψ(s_k) per sample at them)."""
    psi_var = {
        k: torch.as_tensor(v, dtype=torch.float32).detach().clone().requires_grad_(True)
        for k, v in psi.items()
    }
    return psi_var, simulator.log_prob(dict(latents), psi_var)


def score_function_gradient(
    simulator: BaseSimulator,
    latents: Mapping[str, torch.Tensor],
    psi: Mapping[str, torch.Tensor],
    weights: torch.Tensor,
) -> Psi:
    """(1/n) Σ_k ∇_ψ log q_ψ(s_k) · w_k (AutoSimulate Eq. 11 as a mean; REINFORCE, Williams 1992).

    Works for continuous and discrete latents alike: only ``simulator.log_prob`` is
    differentiated, never the renderer.
    """
    psi_var, log_q = _log_q(simulator, latents, psi)
    surrogate = (log_q * weights.detach().to(log_q)).mean()
    grads = torch.autograd.grad(surrogate, list(psi_var.values()), materialize_grads=True)
    return {k: g.detach() for k, g in zip(psi_var, grads, strict=True)}


def score_matrix(
    simulator: BaseSimulator,
    latents: Mapping[str, torch.Tensor],
    psi: Mapping[str, torch.Tensor],
) -> Psi:
    """The per-sample scores ∇_ψ log q_ψ(s_k): for each parameter a tensor ``(n, *shape)``.

    Their mean outer product is the empirical Fisher information of q_ψ, the metric of the
    sampler's step (:func:`samplers.autosimulate.fisher_information`). g(w) = ∇_ψ Σ_k w_k log q_ψ(s_k)
    is linear in w, so ∂g_j/∂w is the j-th score component of every sample: one backward pass
    per component of ψ (not per sample) through ``simulator.log_prob``.
    """
    psi_var, log_q = _log_q(simulator, latents, psi)
    w = torch.zeros_like(log_q, requires_grad=True)
    g = _flat(torch.autograd.grad(log_q, list(psi_var.values()), grad_outputs=w,
                                  create_graph=True, materialize_grads=True))
    columns = []
    for j in range(g.numel()):
        (column,) = torch.autograd.grad(g[j], w, retain_graph=True, allow_unused=True)
        columns.append(torch.zeros_like(log_q) if column is None else column)
    return _unflat(torch.stack(columns, dim=1).detach(), psi_var)


def _levenberg_solve(
    hvp: Callable[[torch.Tensor], torch.Tensor],
    g: torch.Tensor,
    damping: float,
    warm_start: torch.Tensor | None,
    tol: float,
    max_iter: int,
) -> tuple[CGResult, int, float]:
    """(H + λI)⁻¹ g by CG, raising λ when CG meets negative curvature (AutoSimulate §4.2: the
    Levenberg term exists because "the Hessian might have negative eigenvalues").

    A direction p with Rayleigh quotient κ = pᵀ(H + λI)p / pᵀp ≤ 0 shows that λ is too small; the
    solve restarts with λ − 2κ, which makes that quotient |κ| > 0. All solves share ``max_iter``
    products. Returns the last solve, the products used and the final λ.
    """
    used = 0
    while True:
        solved = conjugate_gradient(
            lambda u, lam=damping: hvp(u) + lam * u, g, warm_start, tol, max_iter - used
        )
        used += solved.iterations
        if solved.negative_curvature is None or used >= max_iter:
            return solved, used, damping
        damping = max(damping - 2.0 * solved.negative_curvature, 2.0 * damping, 1e-8)
        warm_start = None


@dataclass(frozen=True)
class Hypergradient:
    """∂L̃/∂ψ with its diagnostics: ‖∂L̃/∂ψ‖, CG products and final relative residual (0 and NaN
    for the variants that solve nothing), the damping λ finally used, v (the warm start of the
    next solve; None for ``"no_val"``), and the per-sample weights w_k of Eq. 11 as used, sign
    and control variate included: ``grad`` = (1/K) Σ_k ∇_ψ log q_ψ(s_k) · w_k (shape ``(K,)``,
    float64), which :func:`samplers.autosimulate.wald_shrinkage` regresses on the scores."""

    grad: Psi
    norm: float
    cg_iterations: int
    cg_residual: float
    damping: float
    v: torch.Tensor | None
    weights: torch.Tensor


def _subsample(
    x: torch.Tensor, y: torch.Tensor, n: int | None, generator: torch.Generator, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    if n is None or n >= len(x):
        return x, y
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{what} must be None or an int >= 1, got {n!r}")
    idx = torch.randperm(len(x), generator=generator)[:n].to(x.device)
    return x[idx], y[idx]


def hypergradient(
    module: torch.nn.Module,
    simulator: BaseSimulator,
    psi: Mapping[str, torch.Tensor],
    batch: SimulatedBatch,
    val_data: tuple[torch.Tensor, torch.Tensor],
    method: str = "quadratic",
    *,
    theta: ThetaSelector = None,
    damping: float = 1e-2,
    cg_tol: float = 1e-3,
    cg_max_iter: int = 5,
    warm_start: torch.Tensor | None = None,
    hessian_samples: int | None = 64,
    val_samples: int | None = None,
    val_loss: ValLoss | None = None,
    control_variate: bool = True,
    chunk_size: int = CHUNK_SIZE,
    seed: int = 0,
) -> Hypergradient:
    """∂L̃_val/∂ψ at ψ for the trained ``module`` and its training ``batch`` (see module docstring).

    Args:
        module: the trained model; any ``torch.nn.Module`` with ``per_sample_loss(x, y) -> (n,)``.
            It is evaluated in eval mode (no dropout; batch-norm running statistics).
        simulator, psi, batch: the simulator, the ψ the batch was drawn with, and the batch
            (its ``latents`` feed the score function, its (x, y) the losses).
        val_data: (x_val, y_val); g_val is the gradient of their mean per-sample loss.
        method: one of :data:`METHODS`.
        theta: which parameters θ to differentiate (see :func:`select_parameters`).
        damping: λ ≥ 0 of (H + λI) (Levenberg, §4.2); ``"quadratic"`` only. Raised automatically
            when CG meets negative curvature (see :func:`_levenberg_solve`).
        cg_tol, cg_max_iter, warm_start: the conjugate-gradient solve (``"quadratic"`` only);
            a ``warm_start`` of the wrong length is ignored.
        hessian_samples: estimate H on this many training samples drawn at random (cost control:
            an H-vector product on all of a CNN's M samples costs about one training epoch);
            ``None`` uses all.
        val_samples: estimate g_val on this many validation samples drawn at random.
        val_loss: the per-sample validation loss ``f(module(x), y)`` whose mean L_val is (Eq. 1a);
            default ``module.per_sample_loss``, the training loss l, as in the paper. For a
            classifier scored by accuracy, :func:`expected_error` follows the reward more closely.
        control_variate: subtract the leave-one-out baseline from d_k.
        chunk_size: samples per pass of the d_k's JVP and of no_val's losses (time and
            memory; the values do not change).
        seed: seeds the subsamples.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not simulator.has_log_prob:
        raise TypeError(
            f"AutoSimulate needs a simulator with a tractable q_ψ(s) (log_prob); "
            f"{type(simulator).__name__} is a black-box simulator"
        )
    if not callable(getattr(module, "per_sample_loss", None)):
        raise TypeError(
            f"module must have per_sample_loss(x, y) -> (n,) unreduced losses, got "
            f"{type(module).__name__} without it"
        )
    if not damping >= 0:
        raise ValueError(f"damping (λ) must be >= 0, got {damping!r}")
    check_chunk_size(chunk_size)
    params = select_parameters(module, theta)
    first = next(iter(params.values()))
    device, dtype = first.device, first.dtype

    def on_device(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)

    x, y = on_device(batch.x), on_device(batch.y)
    generator = torch.Generator().manual_seed(int(seed))
    was_training = module.training
    module.eval()
    try:
        cg_iterations, cg_residual, v, sign = 0, math.nan, None, -1.0
        if method == "no_val":
            with torch.no_grad():
                d = torch.cat([module.per_sample_loss(x[i : i + chunk_size], y[i : i + chunk_size])
                               for i in range(0, len(x), chunk_size)])
            sign = 1.0
        else:
            xv, yv = _subsample(*val_data, val_samples, generator, "val_samples")
            v = loss_gradient(module, params, on_device(xv), on_device(yv), loss=val_loss)
            if method != "linear":
                hvp = HessianVectorProduct(
                    module, params, *_subsample(x, y, hessian_samples, generator, "hessian_samples")
                )
                if method == "approx_quadratic":
                    v, cg_iterations = hvp(v), 1
                else:
                    if warm_start is not None and warm_start.numel() != v.numel():
                        warm_start = None
                    solved, cg_iterations, damping = _levenberg_solve(
                        hvp, v, damping, warm_start, cg_tol, cg_max_iter
                    )
                    v, cg_residual = solved.x, solved.residual
            d = directional_derivatives(module, params, x, y, v, chunk_size)
    finally:
        module.train(was_training)
    d = d.double().cpu()
    weights = sign * (d - leave_one_out_baseline(d) if control_variate else d)
    grad = score_function_gradient(simulator, batch.latents, psi, weights)
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grad.values()))
    return Hypergradient(grad, norm, cg_iterations, cg_residual, damping, v, weights)
