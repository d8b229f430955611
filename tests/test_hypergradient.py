"""Ground-truth tests of AutoSimulate's hypergradient numerics (samplers/hypergradient.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Independent, Normal

from samplers.autosimulate import (
    AutoSimulateSampler,
    ChainMoments,
    adapt_step_scale,
    chain_shrinkage,
    descend,
    fisher_information,
    natural_gradient,
    score_rows,
    wald_shrinkage,
)
from samplers.hypergradient import (
    METHODS,
    HessianVectorProduct,
    _levenberg_solve,
    conjugate_gradient,
    directional_derivatives,
    expected_error,
    hypergradient,
    leave_one_out_baseline,
    loss_gradient,
    score_function_gradient,
    score_matrix,
    select_parameters,
)
from simsearch.parameters import Parameter
from simsearch.simulator import BlackBoxSimulator, SimulatedBatch, Simulator


def _spd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return a @ a.T / n + 0.05 * torch.eye(n, dtype=torch.float64)


def test_cg_matches_dense_solve_with_damping():
    a, lam = _spd(40, 0), 0.3
    b = torch.randn(40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    result = conjugate_gradient(lambda u: a @ u + lam * u, b, tol=1e-10, max_iter=200)
    exact = torch.linalg.solve(a + lam * torch.eye(40, dtype=torch.float64), b)
    assert result.converged
    torch.testing.assert_close(result.x, exact, rtol=1e-8, atol=1e-10)
    true_residual = float((b - (a @ result.x + lam * result.x)).norm() / b.norm())
    assert true_residual <= 1e-9


def test_cg_iteration_cap_reports_true_residual_and_warm_start_helps():
    a = _spd(40, 2)
    b = torch.ones(40, dtype=torch.float64)
    capped = conjugate_gradient(lambda u: a @ u, b, tol=1e-12, max_iter=3)
    assert capped.iterations == 3 and not capped.converged
    true_residual = float((b - a @ capped.x).norm() / b.norm())
    assert capped.residual == pytest.approx(true_residual, rel=1e-6)
    exact = torch.linalg.solve(a, b)
    warm = conjugate_gradient(lambda u: a @ u, b, x0=exact, tol=1e-8, max_iter=50)
    cold = conjugate_gradient(lambda u: a @ u, b, tol=1e-8, max_iter=50)
    assert warm.iterations == 1 and warm.converged  # one product to check the residual
    assert cold.iterations > 5


def test_cg_stops_on_negative_curvature():
    a = torch.diag(torch.tensor([1.0, -3.0], dtype=torch.float64))
    b = torch.tensor([1.0, 1.0], dtype=torch.float64)
    result = conjugate_gradient(lambda u: a @ u, b, tol=1e-8, max_iter=10)
    assert not result.converged
    torch.testing.assert_close(result.x, b)  # steepest-descent fallback (Nocedal & Wright 7.1)


def test_levenberg_solve_raises_damping_on_negative_curvature():
    a = torch.diag(torch.tensor([2.0, 1.0, -0.5], dtype=torch.float64))
    g = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    solved, used, lam = _levenberg_solve(lambda u: a @ u, g, 0.01, None, 1e-10, 50)
    assert lam > 0.5 and solved.converged and used <= 50
    torch.testing.assert_close(solved.x, torch.linalg.solve(a + lam * torch.eye(3, dtype=torch.float64), g))
    spd = torch.diag(torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64))
    _, _, unchanged = _levenberg_solve(lambda u: spd @ u, g, 0.01, None, 1e-10, 50)
    assert unchanged == 0.01


class _Mlp(torch.nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
        ).double()

    def forward(self, x):
        return self.net(x)

    def per_sample_loss(self, x, y):
        return torch.nn.functional.cross_entropy(self(x), y, reduction="none")


def _data(n: int = 24, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _explicit_hessian(module, params, x, y):
    names = list(params)
    sizes = [p.numel() for p in params.values()]
    shapes = [p.shape for p in params.values()]

    def mean_loss(flat):
        pieces = torch.split(flat, sizes)
        theta = {n: t.reshape(s) for n, t, s in zip(names, pieces, shapes, strict=True)}
        return torch.nn.functional.cross_entropy(torch.func.functional_call(module, theta, (x,)), y)

    flat0 = torch.cat([p.detach().reshape(-1) for p in params.values()])
    return torch.autograd.functional.hessian(mean_loss, flat0)


@pytest.mark.parametrize("theta", [None, "net.2"])
def test_hvp_matches_explicit_hessian(theta):
    module = _Mlp()
    x, y = _data()
    params = select_parameters(module, theta)
    hess = _explicit_hessian(module, params, x, y)
    u = torch.randn(hess.shape[0], generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    hvp = HessianVectorProduct(module, params, x, y)
    torch.testing.assert_close(hvp(u), hess @ u, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(hvp(2 * u), 2 * (hess @ u), rtol=1e-9, atol=1e-12)  # reusable


@pytest.mark.parametrize("chunk_size", [128, 5, 1])
def test_directional_derivatives_match_per_sample_gradients(chunk_size):
    module = _Mlp(1)
    x, y = _data(17)
    params = select_parameters(module)
    dim = sum(p.numel() for p in params.values())
    v = torch.randn(dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    d = directional_derivatives(module, params, x, y, v, chunk_size)
    expected = []
    for k in range(len(x)):
        loss = module.per_sample_loss(x[k : k + 1], y[k : k + 1]).sum()
        grads = torch.autograd.grad(loss, list(params.values()))
        expected.append(float(torch.cat([g.reshape(-1) for g in grads]) @ v))
    torch.testing.assert_close(d, torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_loss_gradient_chunks_agree():
    module = _Mlp(2)
    x, y = _data(50)
    params = select_parameters(module)
    torch.testing.assert_close(
        loss_gradient(module, params, x, y, chunk_size=7),
        loss_gradient(module, params, x, y), rtol=1e-10, atol=1e-12,
    )


def test_select_parameters_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown \\['net.9'\\]"):
        select_parameters(_Mlp(), ["net.9"])
    assert list(select_parameters(_Mlp(), lambda n: n.endswith("bias"))) == ["net.0.bias", "net.2.bias"]


def test_leave_one_out_baseline_is_mean_of_others():
    d = torch.tensor([1.0, 4.0, -2.0, 5.0])
    expected = torch.tensor([(d.sum() - v) / 3 for v in d])
    torch.testing.assert_close(leave_one_out_baseline(d), expected)


class _CatNormal(Simulator):
    """A discrete latent with logits in ψ and a continuous one with mean in ψ."""

    def __init__(self):
        super().__init__([Parameter("logits", -3.0, 3.0, [0.2, -0.4, 0.9], shape=(3,)),
                          Parameter("mu", -2.0, 2.0, 0.7)])

    def distributions(self, psi, n):
        return {"c": Categorical(logits=psi["logits"].expand(n, 3)),
                "u": Normal(psi["mu"].expand(n), 1.0)}

    def render(self, latents):
        return latents["u"].unsqueeze(1), latents["c"]


def test_score_function_gradient_discrete_and_continuous_unbiased():
    sim, n = _CatNormal(), 200_000
    psi = sim.init_psi()
    table = torch.tensor([1.0, -2.0, 3.0])
    batch = sim.simulate(psi, n, seed=0)
    f = table[batch.latents["c"]] + batch.latents["u"] ** 2
    grad = score_function_gradient(sim, batch.latents, psi, f - f.mean())
    # Closed form: E f = softmax(logits)·table + mu² + 1.
    logits = psi["logits"].double().requires_grad_(True)
    mu = psi["mu"].double().requires_grad_(True)
    exact = torch.autograd.grad(torch.softmax(logits, 0) @ table.double() + mu**2 + 1, [logits, mu])
    # Monte-Carlo standard errors from the per-sample terms (closed-form scores).
    p = torch.softmax(psi["logits"].double(), 0)
    w = (f - f.mean()).double()
    score_logits = torch.nn.functional.one_hot(batch.latents["c"], 3).double() - p
    terms = torch.cat([score_logits * w[:, None],
                       ((batch.latents["u"].double() - psi["mu"].double()) * w)[:, None]], dim=1)
    se = terms.std(dim=0) / math.sqrt(n)
    est = torch.cat([grad["logits"].double(), grad["mu"].double().reshape(1)])
    truth = torch.cat([exact[0], exact[1].reshape(1)])
    assert torch.all((est - truth).abs() <= 4 * se + 1e-4), (est, truth, se)


# -- the whole hypergradient against the true bilevel gradient (ridge regression) ----------------

W_TRUE = torch.tensor([1.5, -2.0], dtype=torch.float64)
RIDGE = 0.1
NOISE = 0.5


class _GaussianInputs(Simulator):
    """x ~ N(mu, diag(exp(log_sigma))²), y = x·w + ε, ε ~ N(0, 0.5²)."""

    def __init__(self, mu_range: float = 3.0):
        super().__init__([Parameter("mu", -mu_range, mu_range, [0.3, -0.2], shape=(2,)),
                          Parameter("log_sigma", -2.0, 2.0, [0.1, -0.3], shape=(2,))])

    def distributions(self, psi, n):
        return {"x": Independent(Normal(psi["mu"].expand(n, 2), psi["log_sigma"].exp().expand(n, 2)), 1),
                "eps": Normal(torch.zeros(n), NOISE)}

    def render(self, latents):
        x = latents["x"]
        return x, x @ W_TRUE.float() + latents["eps"]


class _Ridge(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(2, 1, bias=False).double()

    def forward(self, x):
        return self.net(x)

    def per_sample_loss(self, x, y):
        return (self.net(x).squeeze(1) - y) ** 2 + RIDGE * self.net.weight.pow(2).sum()


def _theta_star(mu, log_sigma):
    """Population ridge solution: (E[xxᵀ] + λI)⁻¹ E[xy], E[xxᵀ] = diag(σ²) + μμᵀ."""
    s = torch.diag(torch.exp(2 * log_sigma)) + torch.outer(mu, mu)
    return torch.linalg.solve(s + RIDGE * torch.eye(2, dtype=torch.float64), s @ W_TRUE)


def _ridge_val_set() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    xv = torch.randn(300, 2, generator=g, dtype=torch.float64) * torch.tensor([0.5, 1.5]) + torch.tensor(
        [1.0, -0.5])
    return xv, xv @ W_TRUE + NOISE * torch.randn(300, generator=g, dtype=torch.float64)


def _ridge_val_loss(xv, yv, mu, log_sigma) -> torch.Tensor:
    """L_val(θ*(ψ)): the mean validation loss of the closed-form inner solution."""
    theta = _theta_star(mu, log_sigma)
    return ((xv @ theta - yv) ** 2).mean() + RIDGE * theta.pow(2).sum()


def test_quadratic_hypergradient_matches_bilevel_gradient_of_ridge_regression():
    sim = _GaussianInputs()
    psi = sim.init_psi()
    xv, yv = _ridge_val_set()
    # True gradient of L_val(θ*(ψ)) by autograd through the closed-form inner solution.
    mu = psi["mu"].double().requires_grad_(True)
    log_sigma = psi["log_sigma"].double().requires_grad_(True)
    val_loss = _ridge_val_loss(xv, yv, mu, log_sigma)
    true = torch.cat([t.reshape(-1) for t in torch.autograd.grad(val_loss, [mu, log_sigma])])

    model = _Ridge()
    with torch.no_grad():
        model.net.weight.copy_(_theta_star(psi["mu"].double(), psi["log_sigma"].double())[None])
    estimates = []
    for r in range(8):
        batch = sim.simulate(psi, 10_000, seed=r)
        result = hypergradient(model, sim, psi, batch, (xv, yv), "quadratic", damping=0.0,
                               cg_tol=1e-12, cg_max_iter=10, hessian_samples=None)
        assert result.cg_residual < 1e-8 and result.cg_iterations <= 3
        estimates.append(torch.cat([result.grad["mu"], result.grad["log_sigma"]]).double())
    est = torch.stack(estimates)
    mean, se = est.mean(0), est.std(0) / math.sqrt(len(est))
    assert torch.all((mean - true).abs() <= 4 * se + 0.02 * true.abs()), (mean, true, se)
    # The estimate is informative, not noise around zero: its error is small next to the signal.
    assert float((mean - true).norm()) < 0.2 * float(true.norm())


@pytest.mark.parametrize("shrinkage", [False, True])
@pytest.mark.parametrize("method", ["quadratic", "linear"])
def test_sampler_steps_descend_the_true_bilevel_objective_of_ridge_regression(method, shrinkage):
    """The sampler's step (samplers.autosimulate.descend: sign, units of ψ, step rule) applied to
    the estimated hypergradient lowers the true L_val(θ*(ψ)), with θ retrained exactly (closed
    form) at every ψ; also with each step shrunk by its James–Stein factor, as the sampler's
    ``shrinkage="james_stein"`` does."""
    sim, model = _GaussianInputs(), _Ridge()
    xv, yv = _ridge_val_set()
    psi, m, v = sim.init_psi(), np.zeros(sim.space.dim), 0.0

    def true_loss(p):
        return float(_ridge_val_loss(xv, yv, p["mu"].double(), p["log_sigma"].double()))

    losses = [true_loss(psi)]
    for t in range(1, 16):
        with torch.no_grad():
            model.net.weight.copy_(_theta_star(psi["mu"].double(), psi["log_sigma"].double())[None])
        batch = sim.simulate(psi, 4000, seed=t)
        result = hypergradient(model, sim, psi, batch, (xv, yv), method, hessian_samples=None)
        scores = score_matrix(sim, batch.latents, psi)
        rho = wald_shrinkage(score_rows(sim.space, scores), result.weights.numpy()).factor
        flat, m, v = descend(sim.space, psi, result.grad, scores, m, v, t, STEP_SIZE,
                             shrink_factor=rho if shrinkage else 1.0)
        psi = sim.space.from_flat(flat)
        losses.append(true_loss(psi))
    best = _ridge_best_val_loss(xv, yv, sim)
    assert losses[1] < losses[0] and max(losses[1:]) < losses[0], losses
    assert losses[-1] - best < 0.1 * (losses[0] - best), (losses, best)


STEP_SIZE = AutoSimulateSampler().step_size  # the sampler's default


def _ridge_chain(method, growth, shrink, steps=15):
    """The sampler's chain on the closed-form ridge problem (θ retrained exactly at every ψ):
    estimated hypergradient, :func:`adapt_step_scale` (sign along the last step, and whether
    L_val fell) and restart as in ``observe_training``,
    :func:`descend`. Returns the true losses, the step factors and, per step t ≥ 1, the true
    directional derivative of L_val(θ*(ψ)) along the step that led to ψ_t."""
    sim, model = _GaussianInputs(), _Ridge()
    xv, yv = _ridge_val_set()
    low, high = sim.space.bounds()
    psi, m, v, scale, previous = sim.init_psi(), np.zeros(sim.space.dim), 0.0, 1.0, None
    losses, scales, true_slopes = [], [], []
    for t in range(1, steps + 1):
        mu = psi["mu"].double().requires_grad_(True)
        log_sigma = psi["log_sigma"].double().requires_grad_(True)
        loss = _ridge_val_loss(xv, yv, mu, log_sigma)
        loss.backward()
        losses.append(float(loss.detach()))
        true_u = torch.cat([mu.grad, log_sigma.grad]).numpy() * (high - low)
        with torch.no_grad():
            model.net.weight.copy_(_theta_star(mu.detach(), log_sigma.detach())[None])
        batch = sim.simulate(psi, 4000, seed=t)
        result = hypergradient(model, sim, psi, batch, (xv, yv), method, hessian_samples=None)
        restart = False
        if previous is not None:
            displacement = (sim.space.to_flat(psi) - previous) / (high - low)
            true_slopes.append(float(true_u @ displacement))
            grad_u = sim.space.to_flat(result.grad) * (high - low)
            improved = losses[-1] < losses[-2]  # the sampler's L_val: θ* on the validation set
            scale, restart = adapt_step_scale(scale, grad_u, displacement, growth, shrink,
                                              (0.1, 10.0), improved)
        scales.append(scale)
        previous = sim.space.to_flat(psi)
        flat, m, v = descend(sim.space, psi, result.grad, score_matrix(sim, batch.latents, psi), m, v,
                             t, STEP_SIZE * scale, restart=restart)
        psi = sim.space.from_flat(flat)
    return losses, scales, true_slopes, _ridge_best_val_loss(xv, yv, sim)


@pytest.mark.parametrize("method", ["quadratic", "linear"])
def test_adaptive_step_grows_while_it_descends_and_shrinks_after_an_overshoot(method):
    """On the closed-form ridge problem the step factor grows while the true L_val(θ*(ψ)) falls,
    shrinks first where the last step had truly overshot (the true directional derivative along
    it is > 0 at the new ψ), and the chain gets within 10 % of the gap to the optimum in fewer
    steps than the fixed step does."""
    losses, scales, slopes, best = _ridge_chain(method, 1.5, 0.5)
    fixed, fixed_scales, _, _ = _ridge_chain(method, 1.0, 1.0)
    assert fixed_scales == [1.0] * 15
    first_shrink = next(i for i in range(1, 15) if scales[i] < scales[i - 1])
    assert first_shrink >= 3, scales  # grew for at least three steps first ...
    assert all(b > a for a, b in zip(scales[:first_shrink - 1], scales[1:first_shrink], strict=True))
    assert all(b < a for a, b in zip(losses[:first_shrink - 1], losses[1:first_shrink], strict=True))
    assert slopes[first_shrink - 1] > 0, slopes  # ... and shrank after a true overshoot
    gap = losses[0] - best

    def steps_to_10_percent(curve):
        return next(i for i, loss in enumerate(curve) if loss - best < 0.1 * gap)

    assert steps_to_10_percent(losses) < steps_to_10_percent(fixed), (losses, fixed)
    # Without the momentum's restart the shrinking steps keep drifting the old way (gap ≈ 2 %).
    assert losses[-1] - best < 0.01 * gap, (losses, best)


def _ridge_best_val_loss(xv, yv, sim) -> float:
    """min over the box of L_val(θ*(ψ)), by projected Adam on the exact (autograd) gradient."""
    psi = sim.init_psi()
    mu = psi["mu"].double().requires_grad_(True)
    log_sigma = psi["log_sigma"].double().requires_grad_(True)
    opt = torch.optim.Adam([mu, log_sigma], lr=0.02)
    for _ in range(2000):
        opt.zero_grad()
        _ridge_val_loss(xv, yv, mu, log_sigma).backward()
        opt.step()
        with torch.no_grad():
            mu.clamp_(-3.0, 3.0)
            log_sigma.clamp_(-2.0, 2.0)
    return float(_ridge_val_loss(xv, yv, mu, log_sigma).detach())


def test_variants_refuse_bad_input():
    class Opaque(BlackBoxSimulator):
        def __init__(self):
            super().__init__([Parameter("a", 0.0, 1.0, 0.5)])

        def sample(self, psi, n, generator):
            return torch.zeros(n, 1), torch.zeros(n)

    sim = Opaque()
    batch = SimulatedBatch({}, torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(TypeError, match="black-box simulator"):
        hypergradient(_Ridge(), sim, sim.init_psi(), batch, (torch.zeros(2, 1), torch.zeros(2)))
    gsim = _GaussianInputs()
    gbatch = gsim.simulate(gsim.init_psi(), 8, seed=0)
    with pytest.raises(ValueError, match="method must be one of"):
        hypergradient(_Ridge(), gsim, gsim.init_psi(), gbatch, (gbatch.x, gbatch.y), "cubic")
    with pytest.raises(TypeError, match="per_sample_loss"):
        hypergradient(torch.nn.Linear(2, 1), gsim, gsim.init_psi(), gbatch, (gbatch.x, gbatch.y))
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"chunk_size must be an int >= 1, got {bad!r}"):
            hypergradient(_Ridge(), gsim, gsim.init_psi(), gbatch, (gbatch.x, gbatch.y),
                          chunk_size=bad)


@pytest.mark.parametrize("method", METHODS)
def test_chunks_leave_the_hypergradient_unchanged(method):
    """The d_k and no_val's losses in chunks of 7 (uneven: 60 = 8 × 7 + 4) give the values of
    one pass."""
    sim = _GaussianInputs()
    psi = sim.init_psi()
    batch = sim.simulate(psi, 60, seed=1)
    val = sim.simulate({"mu": torch.tensor([1.0, 0.0]), "log_sigma": torch.zeros(2)}, 30, seed=2)
    model = _Ridge()
    whole, chunked = (hypergradient(model, sim, psi, batch, (val.x, val.y), method, chunk_size=c)
                      for c in (1000, 7))
    torch.testing.assert_close(chunked.weights, whole.weights, rtol=1e-10, atol=1e-12)
    for name in whole.grad:
        torch.testing.assert_close(chunked.grad[name], whole.grad[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["approx_quadratic", "linear", "no_val"])
def test_cheaper_variants_follow_their_formulas(method):
    """Each variant equals the score-function estimate with its own d_k (Table 1)."""
    sim = _GaussianInputs()
    psi = sim.init_psi()
    model = _Ridge()
    batch = sim.simulate(psi, 60, seed=1)
    val = sim.simulate({"mu": torch.tensor([1.0, 0.0]), "log_sigma": torch.zeros(2)}, 100, seed=2)
    result = hypergradient(model, sim, psi, batch, (val.x, val.y), method)
    x, y = batch.x.double(), batch.y.double()
    params = select_parameters(model)
    losses = model.per_sample_loss(x, y)
    if method == "no_val":
        d, sign = losses.detach(), 1.0
    else:
        v = loss_gradient(model, params, val.x.double(), val.y.double())
        if method == "approx_quadratic":
            v = HessianVectorProduct(model, params, x, y)(v)
        d = torch.stack([torch.autograd.grad(lk, model.net.weight, retain_graph=True)[0].reshape(-1) @ v
                         for lk in losses]).detach()
        sign = -1.0
    expected = score_function_gradient(sim, batch.latents, psi, sign * (d - leave_one_out_baseline(d)))
    for k in expected:
        torch.testing.assert_close(result.grad[k], expected[k], rtol=1e-4, atol=1e-6)


def test_val_loss_option_replaces_the_validation_loss_only():
    """g_val is the gradient of the given validation loss; H and d_k still use the training loss."""
    sim, model = _GaussianInputs(), _Ridge()
    psi = sim.init_psi()
    batch = sim.simulate(psi, 60, seed=1)
    val = sim.simulate({"mu": torch.tensor([1.0, 0.0]), "log_sigma": torch.zeros(2)}, 100, seed=2)

    def l1(out, y):
        return (out.squeeze(1) - y).abs()

    result = hypergradient(model, sim, psi, batch, (val.x, val.y), "approx_quadratic", val_loss=l1)
    params = select_parameters(model)
    xv, yv = val.x.double(), val.y.double()
    g_val = torch.autograd.grad(l1(model.net(xv), yv).mean(), model.net.weight)[0].reshape(-1)
    v = HessianVectorProduct(model, params, batch.x.double(), batch.y.double())(g_val)
    d = directional_derivatives(model, params, batch.x.double(), batch.y.double(), v)
    expected = score_function_gradient(sim, batch.latents, psi, -(d - leave_one_out_baseline(d)))
    for k in expected:
        torch.testing.assert_close(result.grad[k], expected[k], rtol=1e-4, atol=1e-6)


def test_expected_error_is_one_minus_the_probability_of_the_label():
    out = torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(50) % 4
    ce = torch.nn.functional.cross_entropy(out, y, reduction="none")
    torch.testing.assert_close(expected_error(out, y), 1.0 - torch.exp(-ce))


def test_control_variate_reduces_variance_without_bias():
    """No-val at θ = 0 far from the origin: every loss is large and positive, the case the
    baseline is for (the losses vary much less than their mean)."""
    sim, model = _GaussianInputs(), _Ridge()
    psi = {"mu": torch.tensor([2.0, -1.5]), "log_sigma": torch.tensor([-1.0, -1.0])}
    with torch.no_grad():
        model.net.weight.zero_()
    val = (torch.zeros(1, 2), torch.zeros(1))
    runs = {True: [], False: []}
    for r in range(40):
        batch = sim.simulate(psi, 200, seed=r)
        for cv in runs:
            result = hypergradient(model, sim, psi, batch, val, "no_val", control_variate=cv)
            runs[cv].append(torch.cat([result.grad["mu"], result.grad["log_sigma"]]).double())
    with_cv, without = torch.stack(runs[True]), torch.stack(runs[False])
    assert float(with_cv.var(0).sum()) < 0.2 * float(without.var(0).sum())
    # Unbiased: E[(x·w + ε)²] = wᵀ(diag σ² + μμᵀ)w + 0.25, differentiated in closed form.
    mu = psi["mu"].double().requires_grad_(True)
    log_sigma = psi["log_sigma"].double().requires_grad_(True)
    loss = W_TRUE @ (torch.diag(torch.exp(2 * log_sigma)) + torch.outer(mu, mu)) @ W_TRUE
    true = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, [mu, log_sigma])])
    se = with_cv.std(0) / math.sqrt(len(with_cv))
    assert torch.all((with_cv.mean(0) - true).abs() <= 4 * se), (with_cv.mean(0), true, se)


# -- the step's metric: the Fisher information of q_ψ ----------------------------------------


def test_score_matrix_rows_are_the_per_sample_gradients_of_log_prob():
    sim = _CatNormal()
    psi = sim.init_psi()
    batch = sim.simulate(psi, 7, seed=3)
    scores = score_matrix(sim, batch.latents, psi)
    assert scores["logits"].shape == (7, 3) and scores["mu"].shape == (7,)
    for k in range(7):
        one = {name: value[k : k + 1] for name, value in batch.latents.items()}
        exact = score_function_gradient(sim, one, psi, torch.ones(1))
        torch.testing.assert_close(scores["logits"][k], exact["logits"])
        torch.testing.assert_close(scores["mu"][k], exact["mu"])


def _gaussian_fisher_u(sim, psi) -> np.ndarray:
    """Closed form: x ~ N(μ, diag σ²) with ψ = (μ, log σ) has Fisher diag(1/σ², 2); in u each
    coordinate is multiplied by its range squared (ε ~ N(0, 0.5²) does not depend on ψ)."""
    low, high = sim.space.bounds()
    sigma = psi["log_sigma"].double().exp().numpy()
    return np.diag(np.concatenate([1.0 / sigma**2, [2.0, 2.0]]) * (high - low) ** 2)


def test_fisher_information_matches_the_closed_form_for_a_gaussian():
    sim = _GaussianInputs()
    psi = sim.init_psi()
    batch = sim.simulate(psi, 40_000, seed=0)
    fisher = fisher_information(sim.space, score_matrix(sim, batch.latents, psi))
    exact = _gaussian_fisher_u(sim, psi)
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
    # Monte-Carlo error of a mean of 40,000 products of unit-variance scores: ~ 1.5 % of the scale
    np.testing.assert_allclose(fisher / scale, exact / scale, atol=0.05)


def test_first_step_moves_q_psi_by_the_step_size_in_kl_whatever_the_box():
    """The natural-gradient step's first move changes q_ψ by KL ≈ step_size²/2 and is the same
    step in ψ for any bounds (the Fisher metric is the simulator's, not the box's). The
    Euclidean step in u of the old rule fails both: widening μ's box tenfold made its step in ψ
    tenfold longer."""
    psi = _GaussianInputs().init_psi()
    grad = {"mu": torch.tensor([0.3, -1.0]), "log_sigma": torch.tensor([0.5, 0.2])}
    steps = []
    for mu_range in (3.0, 30.0):
        sim = _GaussianInputs(mu_range)
        batch = sim.simulate(psi, 40_000, seed=1)
        flat, _, _ = descend(sim.space, psi, grad, score_matrix(sim, batch.latents, psi),
                             np.zeros(4), 0.0, 1, 0.1)
        steps.append(sim.space.from_flat(flat))
    for name in ("mu", "log_sigma"):
        torch.testing.assert_close(steps[0][name], steps[1][name], rtol=0.03, atol=1e-4)
    mu0, s0 = psi["mu"].double(), psi["log_sigma"].double().exp()
    mu1, s1 = steps[0]["mu"].double(), steps[0]["log_sigma"].double().exp()
    kl = float((torch.log(s1 / s0) + (s0**2 + (mu0 - mu1) ** 2) / (2 * s1**2) - 0.5).sum())
    assert kl == pytest.approx(0.1**2 / 2, rel=0.1)
    # a descent step: it has a positive inner product with the gradient
    delta = torch.cat([steps[0][n] - psi[n] for n in ("mu", "log_sigma")])
    assert float(delta @ torch.cat([grad["mu"], grad["log_sigma"]])) < 0


def test_natural_gradient_ignores_directions_that_do_not_change_q():
    """A softmax's logits shifted together leave q unchanged: F is singular along (1, …, 1) and
    the natural gradient has no component there."""
    sim = _CatNormal()
    psi = sim.init_psi()
    batch = sim.simulate(psi, 20_000, seed=2)
    fisher = fisher_information(sim.space, score_matrix(sim, batch.latents, psi))
    grad_u = np.array([0.4, -0.1, 0.2, 1.0])
    direction, sq_norm = natural_gradient(grad_u, fisher)
    assert abs(direction[:3].sum()) < 1e-6 * np.abs(direction[:3]).max()
    assert sq_norm > 0 and np.isfinite(direction).all()


# -- the noise of one trial's natural gradient (samplers.autosimulate.wald_shrinkage) -----------

def _regression_data(k: int, p: int, seed: int):
    """Correlated, non-centred scores of very different scales (K × p)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(p, p)) + 2 * np.eye(p)
    return (rng.standard_t(5, size=(k, p)) @ mix + 0.3) * np.logspace(-1, 1, p), rng


def test_wald_statistic_equals_a_dense_least_squares_fit():
    """W = ‖Pw‖² / (‖w − Pw‖² / (K − p)) from numpy's least-squares fit of w on the scores."""
    for seed, scale in enumerate((0.0, 0.01, 0.3)):
        s, rng = _regression_data(150, 5, seed)
        w = scale * 10 * s @ (rng.normal(size=5) / np.linalg.norm(s, axis=0)) + rng.normal(size=150)
        coef, residual, rank, _ = np.linalg.lstsq(s, w, rcond=None)
        fitted = s @ coef
        wald = float(fitted @ fitted) / (float(residual[0]) / (150 - rank))
        result = wald_shrinkage(s, w)
        assert result.rank == rank == 5
        assert result.wald == pytest.approx(wald, rel=1e-9)
        assert result.factor == pytest.approx(max(0.0, 1.0 - 5 / wald), rel=1e-9)


def test_natural_gradient_is_the_regression_of_the_weights_on_the_scores():
    """Hypergradient.weights are Eq. 11's weights as used: the gradient is the mean of score ×
    weight, the natural gradient F_u⁺ ∂L̃/∂u is their least-squares coefficient on the scores
    (module docstring of samplers.autosimulate), and K · its squared Fisher length is ‖Pw‖²."""
    sim, model = _GaussianInputs(), _Ridge()
    psi = sim.init_psi()
    batch = sim.simulate(psi, 400, seed=3)
    for method in ("linear", "no_val"):
        result = hypergradient(model, sim, psi, batch, _ridge_val_set(), method)
        rows = score_rows(sim.space, score_matrix(sim, batch.latents, psi))
        w = result.weights.numpy()
        low, high = sim.space.bounds()
        grad_u = sim.space.to_flat(result.grad) * (high - low)
        np.testing.assert_allclose(grad_u, rows.T @ w / len(w), rtol=1e-4, atol=1e-7)
        direction, sq_norm = natural_gradient(rows.T @ w / len(w), rows.T @ rows / len(w))
        coef, residual, _, _ = np.linalg.lstsq(rows, w, rcond=None)
        np.testing.assert_allclose(direction, coef, rtol=1e-6, atol=1e-9)
        fitted = rows @ coef
        assert len(w) * sq_norm == pytest.approx(float(fitted @ fitted), rel=1e-6)


def test_wald_statistic_is_chi_square_under_the_null_and_shrinkage_vanishes_without_signal():
    """w independent of the scores: W's mean over many draws is p (K − p)/(K − p − 2), the mean
    of p · F(p, K − p) ≈ χ²_p, and ρ = 0 in most draws (P(F ≤ 1) ≈ 0.6 for p = 4); with a strong
    planted linear signal ρ → 1."""
    k, p = 100, 4
    walds, factors = [], []
    for seed in range(2000):
        s, rng = _regression_data(k, p, seed)
        w = rng.standard_t(6, size=k) * (1 + rng.random(k))  # noise, not Gaussian
        result = wald_shrinkage(s, w)
        walds.append(result.wald)
        factors.append(result.factor)
    assert np.mean(walds) == pytest.approx(p * (k - p) / (k - p - 2), abs=0.25)
    assert np.mean(np.array(factors) == 0.0) > 0.5
    assert np.mean(factors) < 0.2
    for seed in range(20):
        s, rng = _regression_data(k, p, seed)
        w = 30 * s @ (rng.normal(size=p) / np.linalg.norm(s, axis=0)) + rng.normal(size=k)
        assert wald_shrinkage(s, w).factor > 0.95


def test_wald_shrinkage_edge_cases():
    s = np.array([[1.0, 1.0], [2.0, 2.0], [-1.0, -1.0]])  # rank 1: q changes along one direction
    def fields(r):
        return r.factor, r.wald, r.rank

    assert fields(wald_shrinkage(s, np.array([1.0, 2.0, -1.0]))) == (1.0, math.inf, 1)  # exact fit
    assert wald_shrinkage(s, np.zeros(3)).factor == 0.0
    assert fields(wald_shrinkage(np.zeros((3, 2)), np.ones(3))) == (0.0, 0.0, 0)
    assert wald_shrinkage(s[:1], np.array([1.0])).factor == 1.0  # K ≤ p: no noise estimate
    with pytest.raises(ValueError, match=r"scores_u must be \(K, p\) with K = len\(weights\) = 2"):
        wald_shrinkage(s, np.ones(2))


# -- the noise of the chain's mean natural gradient across trials (chain_shrinkage) -------------

def _chains(mu: np.ndarray, n_chains: int, steps: int, beta: float, seed: int):
    """``n_chains`` chains of ``steps`` i.i.d. natural gradients ñ ~ N(μ, C) in the metric F,
    their moments and their weighted means m̂."""
    rng = np.random.default_rng(seed)
    p = len(mu)
    root = rng.normal(size=(p, p)) / math.sqrt(p)
    fisher = root @ root.T + 0.5 * np.eye(p)
    noise = np.diag(np.linspace(0.5, 2.0, p))
    out = []
    for _ in range(n_chains):
        moments = ChainMoments(np.zeros(p), 0.0, 0.0, 0.0)
        for _ in range(steps):
            d = mu + noise @ rng.normal(size=p)
            moments = moments.update(d, float(d @ fisher @ d), beta)
        out.append(moments)
    return out, fisher


@pytest.mark.parametrize("steps", [2, 5, 30])
def test_chain_noise_estimate_is_unbiased_for_the_noise_of_the_weighted_mean(steps):
    """σ̂²_m = (q̂ − ‖m̂‖²_F) / (n − 1), the noise chain_shrinkage divides by ‖m̂‖²_F
    (ChainMoments.signal_and_noise), has the mean of ‖m̂ − μ‖²_F over many chains of independent
    gradients (Monte Carlo ground truth), for an EMA of 2, 5 and 30 trials (effective sizes
    1.99, 4.89, 17.45); and the signal is ‖m̂‖²_F."""
    mu = np.array([0.3, -0.2, 0.1, 0.0, 0.4])
    chains, fisher = _chains(mu, 4000, steps, 0.9, seed=steps)
    truth, estimate = [], []
    for c in chains:
        m_hat = c.mean / c.weight
        signal, noise = c.signal_and_noise(fisher)
        assert signal == pytest.approx(float(m_hat @ fisher @ m_hat), rel=1e-12)
        truth.append(float((m_hat - mu) @ fisher @ (m_hat - mu)))
        estimate.append(noise)
    assert np.mean(estimate) == pytest.approx(np.mean(truth), rel=0.06)
    one = ChainMoments(np.zeros(5), 0.0, 0.0, 0.0).update(mu, float(mu @ fisher @ mu), 0.9)
    assert one.signal_and_noise(fisher)[1] is None  # one trial: no noise estimate


def test_chain_shrinkage_vanishes_on_noise_and_keeps_a_resolved_mean():
    """Gradients that are pure noise across trials: ρ_c = 0 on most chains, about 0.2 on average;
    a mean gradient 5× the noise: ρ_c > 0.9 on every chain."""
    p = 5
    noise_only, fisher = _chains(np.zeros(p), 500, 10, 0.9, seed=1)
    factors = np.array([chain_shrinkage(c, fisher) for c in noise_only])
    assert np.mean(factors == 0.0) > 0.5 and np.mean(factors) < 0.25, factors.mean()
    resolved, fisher = _chains(np.full(p, 5.0), 100, 10, 0.9, seed=2)
    assert min(chain_shrinkage(c, fisher) for c in resolved) > 0.9
