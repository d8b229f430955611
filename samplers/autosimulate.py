"""AutoSimulate (Behl et al., ECCV 2020) as an Optuna sampler: one trial per iteration (Alg. 1).

Each trial evaluates ψ_t: the objective draws a data set from ψ_t, fine-tunes the accumulated main
task model θ̂ on it ("fine-tune model for ε epochs", Alg. 1) and calls :meth:`observe_training`,
where the sampler computes the hypergradient ∂L̃_val/∂ψ of Eq. 8/11 with one of the approximations
of Table 1 (:mod:`samplers.hypergradient`), takes a step and stores ψ_{t+1} on the trial, in the
study's storage. The next trial — in this process or any other sharing the storage — proposes it.

**Step rule.** Eq. 12/13b is plain gradient descent with a fixed α, and the paper leaves the
metric and the schedule of the step open. The four variants' gradients differ in scale by orders
of magnitude ((H + λI)⁻¹ amplifies flat directions, H shrinks them, the no-val gradient is in
units of loss), so one α diverges for some and crawls for others; and equal lengths in the box do
not mean equal changes of the data: on digits a step of 0.05 of the box along ĝ moved the mean
rotation by 11–15° against a rotation spread of 5° and raised the loss whichever way it went
(BENCHMARKS.md, issue 5). The sampler therefore takes, as its documented choice, **natural-
gradient** steps (Amari 1998) in the Fisher metric of the simulator's own q_ψ, in coordinates
u = (ψ − low) / (high − low) ∈ [0, 1]:

* F_u = (1/K) Σ_k s_k s_kᵀ, the empirical Fisher information from the scores s_k = ∇_u log q_ψ(s_k)
  of the trial's K training latents (:func:`samplers.hypergradient.score_matrix`, the same
  ``log_prob`` as Eq. 11; one backward pass per component of ψ);
* the direction ñ = F_u⁺ ∂L̃/∂u (the least-squares regression of Eq. 11's per-sample weights on the
  scores) and its squared Fisher length ∂L̃/∂uᵀ F_u⁺ ∂L̃/∂u;
* Adam (Kingma & Ba 2015) on ñ with **one** second moment for the whole vector (the running mean
  of the squared Fisher length): the step, ``step_size`` · m̂ / √v̂, is invariant to a rescaling
  of the gradient, so all four variants share one ``step_size``, and its first step changes q_ψ
  by a KL divergence of about ``step_size``²/2 (times ρ², the noise factor below, with the default
  ``shrinkage``), on every problem and whatever the box. The
  momentum averages the noise of the one-data-set estimate; when successive estimates disagree,
  or the gradient shrinks against the earlier ones that v̂ remembers, ‖m̂‖ falls below √v̂ and
  the step shrinks. (A step size decaying as 1/√t was tried and dropped: on the closed-form
  ridge problem of ``tests/test_hypergradient.py`` 15 such steps stayed far from the optimum.)

**Step length along the chain** (2026-12-03): each trial's step is ``step_size`` · c_t, where c_t
doubles after a step that still descends at the new ψ (the new ∂L̃/∂ψ along it is negative) and
lowered the fine-tuned model's validation loss, and halves, with a restart of Adam's momentum,
after one that did not, within ``step_scale_range`` (:func:`adapt_step_scale`; Rprop's sign test
and a trust region's success test, per study and from the storage; ``"no_val"``, without a
validation loss, keeps the fixed length), starting from c_0 = ``step_scale_init`` (default: the cap).
The default range is [0.1, 10]. Longer steps gain faster where the start is far from a good ψ
(traffic-count) and drift away from a good start (digits), where the success test is fooled:
L_val falls with the accumulated model's own training whatever ψ does. The next factor reduces
that drift; it does not stop it. Since the recommendation ranks trials by fresh values
(``fresh_every``, :meth:`AutoSimulateSampler.best_params`), a drifting chain no longer drags the
recommended ψ with it (trial 0, the start, stays a candidate), and the long first step was
adopted (2026-12-06, BENCHMARKS.md, issue 5, "Fresh values").

**Noise across trials** (option ``chain_shrinkage``, default since 2026-12-06). Each trial's
natural gradient ñ_t comes from a new data set and a model retrained on it; near a good ψ
successive ñ_t scatter about a mean that is small against that scatter (digits: one data set's
estimate agrees with the finite-difference gradient at cos 0.1–0.3, BENCHMARKS.md, issue 5),
far from one they agree. The step is multiplied by ρ_c = max(0, 1 − σ̂²_m / ‖m̂‖²), the
positive-part James–Stein factor of the chain's exponentially weighted mean m̂ of the ñ_t
(weights β₁) against its noise σ̂²_m, estimated from the same weighted moments
(:func:`chain_shrinkage`, :class:`ChainMoments`): ρ_c ≈ 1 where the recent gradients agree,
≈ 0 where they scatter about nothing. On seeds 10–15 it kept cap 3's gain on traffic-count
at two thirds (+0.139 against +0.207 without it) and cut its loss on digits from −0.021 to
−0.007 (BENCHMARKS.md, issue 5, "Noise across trials"). On the record seeds 0–2 digits still
ended 0.02 below its start: the early steps away from it agree from one trial to the next, a
bias of the accumulated model's hypergradient that no noise test removes.

**Noise-aware step length** (option ``shrinkage``, default ``"james_stein"`` since 2026-12-05).
ñ is the least-squares fit of the trial's per-sample weights on its scores, so the same K
samples say how well they resolve it: the Wald statistic W of that regression is about χ²_p
when the true gradient is zero (p = rank F_u). The step is multiplied by the positive-part
James–Stein factor ρ = max(0, 1 − p/W) (:func:`wald_shrinkage`; Stein 1961, Baranchik 1970),
an estimate of signal / (signal + noise): ρ enters Adam's first moment and not its second, so a
trial whose gradient is not resolved (W ≲ p) adds nothing to the momentum and the step's length
becomes about ``step_size`` · c_t · ρ (· ρ_c, below). It was meant for a chain that starts near a good ψ
(digits, where one data set's gradient is mostly noise: BENCHMARKS.md, issue 5). Measured on
seeds 10–12 of all three built-in problems (2026-12-05), the median ρ was 0.84–0.97, on digits
and on gmm2d's plateau too, and rarely below 0.5: W measures the noise of the weights given
the trained model and v, not the variation of the model and v from one data set to the next,
which dominates there; so the steps shrink by some 5–15 %, not to zero.

The default ``step_size`` 0.1 is the largest of the lengths 0.1, 0.3, 1 at which every variant's
first step lowered the validation loss on both gmm2d and digits in
``benchmarks/autosimulate_gradcheck.py`` (BENCHMARKS.md, issue 5); on traffic-count longer steps
descended further, and with a fixed length the default was slower there than the old rule. On
the record runs of 2026-12-03 the adaptive length did not make it faster at 5,000 images either
(BENCHMARKS.md, issue 5: the headline is not met). Per-coordinate Adam (the rule
before issue 5) would take first steps of ``step_size`` · sign(g), moving every coordinate by the
same fraction of its range whether its component of the gradient is signal or noise. The step
is projected onto the box, so ψ stays inside the bounds. The Adam moments travel with ψ_{t+1} in
the storage.

**State in the storage** (trial system attributes, prefix ``autosimulate:``): ``parent`` (the trial
whose ψ_{t+1} this trial proposes, −1 at the start), and after :meth:`observe_training`: ``step``
(t + 1), ``psi_next``, ``adam_m``, ``adam_v``, ``step_scale`` (the factor c_t of ``step_size`` this
step used), ``val_loss`` (L_val of the fine-tuned model; None with a fixed length),
``shrinkage`` (the factor ρ of :func:`wald_shrinkage` the step used; 1 without shrinkage),
``chain_mean`` and ``chain_moments`` (:class:`ChainMoments`), ``chain_shrinkage`` (ρ_c of
:func:`chain_shrinkage`; 1 when off), and
the diagnostics ``wald`` (W, None when infinite), ``score_rank`` (p), ``grad_norm``
(‖∂L̃/∂ψ‖), ``cg_iterations``, ``cg_residual``, ``damping`` (the λ finally used) and
``seconds``. A trial proposes the ``psi_next`` of the COMPLETE trial with the
most steps (ties: the highest number); FAIL, PRUNED and RUNNING trials are ignored, so after a
crash a new process continues from the last completed trial, and the accumulated model from the
objective's ``checkpoint_path``. Until a trial has completed, trials propose the start point:
``init`` (a simulator's declared ψ), else the centre of each range. Pruning would cut the
accumulated model's fine-tuning short and a pruned trial gives no step: use
``optuna.pruners.NopPruner()``.

**Several workers on one study.** Each worker process fine-tunes its own accumulated model; ψ and
the Adam state are shared through the storage. A worker whose parent is already being evaluated
by a RUNNING trial proposes the parent's ψ_{t+1} plus a Gaussian jitter of ``JITTER`` (0.05 of each
range), so concurrent workers evaluate distinct nearby points; each completed
trial extends the chain from its own parent, and the longest chain is continued. A trial left
RUNNING by a crashed process looks like such a worker until Optuna fails it as stale: use a
storage with a heartbeat (``RDBStorage(url, heartbeat_interval=..., grace_period=...)``) and the
resumed study continues exactly from the last completed ψ_{t+1}; without one, the first resumed
proposal carries the jitter.

>>> import optuna
>>> from simsearch.problems import get
>>> problem = get("gmm2d")
>>> objective = problem.objective(accumulate=True, seed=0, n_samples=100, epochs=1)
>>> sampler = AutoSimulateSampler("linear", init=problem.simulator, seed=0)
>>> study = optuna.create_study(direction="maximize", sampler=sampler)
>>> study.optimize(objective, n_trials=2)
>>> next_psi = study.trials[0].system_attrs["autosimulate:psi_next"]
>>> next_psi == study.trials[1].params
True
"""

from __future__ import annotations

import math
import threading
import time
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import torch
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from samplers.hypergradient import (
    CHUNK_SIZE,
    METHODS,
    ThetaSelector,
    ValLoss,
    check_chunk_size,
    hypergradient,
    score_matrix,
)
from simsearch.objective import recommended_trial
from simsearch.parameters import ParameterSpace
from simsearch.simulator import BaseSimulator
from simsearch.validation import check_positive_int

__all__ = [
    "SHRINKAGES",
    "AutoSimulateSampler",
    "ChainMoments",
    "Shrinkage",
    "adam_step",
    "adapt_step_scale",
    "chain_shrinkage",
    "descend",
    "fisher_information",
    "natural_gradient",
    "score_rows",
    "start_damping",
    "wald_shrinkage",
]

_KEY = "autosimulate:"
JITTER = 0.05  # std of a concurrent proposal's jitter, as a fraction of each parameter's range
#: The values of AutoSimulateSampler's ``shrinkage`` option (:func:`wald_shrinkage`).
SHRINKAGES = (None, "james_stein")


def score_rows(space: ParameterSpace, scores: Mapping[str, torch.Tensor]) -> np.ndarray:
    """The per-sample scores s_k = ∇_u log q_ψ(s_k) = ∇_ψ log q_ψ(s_k) · (high − low) in
    coordinates u normalised to the box, one row per sample (``(n, d)``, ``space.flat_names()``
    order), from :func:`samplers.hypergradient.score_matrix`'s per-parameter scores."""
    low, high = space.bounds()
    n = len(next(iter(scores.values())))
    return np.concatenate([np.asarray(scores[p.name].detach().cpu(), np.float64).reshape(n, -1)
                           for p in space.parameters], axis=1) * (high - low)


def fisher_information(space: ParameterSpace, scores: Mapping[str, torch.Tensor]) -> np.ndarray:
    """F_u = (1/n) Σ_k s_k s_kᵀ: the empirical Fisher information of q_ψ on the trial's latents,
    in coordinates u normalised to the box (:func:`score_rows`).

    ``scores`` are :func:`samplers.hypergradient.score_matrix`'s per-sample scores. ½ ΔuᵀF_uΔu is
    the KL divergence between q_ψ and q_ψ moved by Δu, to second order (Amari 1998).
    """
    flat = score_rows(space, scores)
    return flat.T @ flat / len(flat)


def natural_gradient(grad_u: np.ndarray, fisher_u: np.ndarray, rcond: float = 1e-6
                     ) -> tuple[np.ndarray, float]:
    """(F⁺g, gᵀF⁺g): the natural gradient (Amari 1998) and its squared length in the Fisher
    metric. The pseudo-inverse drops directions in which q_ψ does not change (a softmax's logits
    shifted together), in which the score-function gradient has no component either.

    >>> d, sq = natural_gradient(np.array([2.0, 1.0]), np.diag([4.0, 0.25]))
    >>> d.tolist(), sq
    ([0.5, 4.0], 5.0)
    """
    direction = np.linalg.pinv(fisher_u, rcond=rcond, hermitian=True) @ grad_u
    return direction, float(grad_u @ direction)


@dataclass(frozen=True)
class Shrinkage:
    """:func:`wald_shrinkage`'s result: the factor ρ ∈ [0, 1], the Wald statistic W (``inf``
    when the scores fit the weights exactly or leave no degree of freedom for the noise) and p,
    the rank of the scores (the number of directions in which q_ψ changes)."""

    factor: float
    wald: float
    rank: int


def wald_shrinkage(scores_u: np.ndarray, weights: np.ndarray, rcond: float = 1e-6) -> Shrinkage:
    """How much of one trial's natural gradient is signal: the positive-part James–Stein factor
    ρ = max(0, 1 − p / W) of the Wald statistic W of the natural gradient.

    With S the ``(K, p)`` matrix of scores (:func:`score_rows`) and w Eq. 11's per-sample weights
    (:attr:`samplers.hypergradient.Hypergradient.weights`), ∂L̃/∂u = Sᵀw / K and F_u = SᵀS / K, so
    the natural gradient F_u⁺ ∂L̃/∂u = (SᵀS)⁺Sᵀw is the least-squares coefficient of w regressed
    on the scores (no intercept). With P the projection onto S's column space (directions with
    eigenvalue of F_u below ``rcond`` × the largest dropped, as in :func:`natural_gradient`),
    p = rank P and σ̂² = ‖w − Pw‖² / (K − p) the residual variance,

        W = ‖Pw‖² / σ̂² = K · (∂L̃/∂u)ᵀ F_u⁺ (∂L̃/∂u) / σ̂²,

    the Wald (F-test) statistic of "the coefficients are zero": about χ²_p when w does not
    depend linearly on the scores (the true gradient is zero), and p + (noncentrality) in
    expectation otherwise. So 1 − p/W estimates signal / (signal + noise) of the natural
    gradient — the plug-in Wiener factor — and ρ = max(0, 1 − p/W) is the positive-part
    James–Stein shrinkage of the estimate towards 0 (James & Stein 1961; Baranchik 1970, "A
    family of minimax estimators of the mean of a multivariate normal distribution", whose
    family max(0, 1 − c/W) dominates the raw estimate for 0 < c ≤ 2(p − 2); c = p is in it for
    p > 4 with σ̂² estimated on many degrees of freedom, and the built-in problems have
    p = 16–23). The homoscedastic σ̂² is an approximation: where the noise of w_k grows with |s_k|
    and the scores are heavy-tailed, W exceeds p under a zero gradient and ρ stays above 0 (a
    t₃-score check in review: mean ρ 0.35–0.55 on pure noise at p = 16). W sees only the noise of
    the weights given the trained model; on the built-in problems it was 10–50 × p, so ρ was
    0.8–0.97 on most steps, while the noise that moves the chain comes from retraining the model
    on each new data set (BENCHMARKS.md, issue 5).

    ρ = 0 when no direction is resolved (Pw = 0); ρ = 1 when nothing estimates the noise
    (K ≤ p, or w lies in the span of the scores).

    >>> s = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
    >>> r = wald_shrinkage(s, np.array([1.0, 0.0, 0.0, 1.0]))
    >>> round(r.wald, 9), round(r.factor, 9), r.rank   # ‖Pw‖² = 5/3, σ̂² = (1/3) / (4 − 2)
    (10.0, 0.8, 2)
    """
    s, w = np.asarray(scores_u, np.float64), np.asarray(weights, np.float64)
    k = len(w)
    if s.ndim != 2 or len(s) != k:
        raise ValueError(f"scores_u must be (K, p) with K = len(weights) = {k}, got shape {s.shape}")
    eigenvalues, vectors = np.linalg.eigh(s.T @ s / k)
    keep = eigenvalues > rcond * max(float(eigenvalues[-1]), 0.0)
    rank = int(keep.sum())
    if rank == 0:
        return Shrinkage(0.0, 0.0, 0)
    basis = s @ vectors[:, keep] / np.sqrt(eigenvalues[keep] * k)  # orthonormal columns spanning S
    fitted = basis @ (basis.T @ w)
    explained, residual = float(fitted @ fitted), float((w - fitted) @ (w - fitted))
    if explained == 0.0:
        return Shrinkage(0.0, 0.0, rank)
    if k <= rank or residual <= 1e-12 * explained:  # an exact fit, up to rounding
        return Shrinkage(1.0, math.inf, rank)
    wald = explained / (residual / (k - rank))
    return Shrinkage(max(0.0, 1.0 - rank / wald), wald, rank)


@dataclass(frozen=True, eq=False)
class ChainMoments:
    """Exponentially weighted sums over a chain's trials i of the natural gradient ñ_i and of
    its squared Fisher length ñ_iᵀF_iñ_i, with weights w_i = (1 − β) β^(t−i) and their sums
    Σw_i, Σw_i² (:func:`chain_shrinkage`). Zero before the first trial."""

    mean: np.ndarray
    sq_norm: float
    weight: float
    weight_sq: float

    def update(self, direction: np.ndarray, sq_norm: float, beta: float) -> ChainMoments:
        """The moments after one more trial with natural gradient ``direction``."""
        return ChainMoments(beta * self.mean + (1 - beta) * direction,
                            beta * self.sq_norm + (1 - beta) * sq_norm,
                            beta * self.weight + (1 - beta),
                            beta ** 2 * self.weight_sq + (1 - beta) ** 2)

    def signal_and_noise(self, fisher_u: np.ndarray) -> tuple[float, float | None]:
        """(‖m̂‖²_F, σ̂²_m) of :func:`chain_shrinkage`; σ̂²_m is None while the effective number
        of trials n ≤ 1 (nothing measures the noise yet)."""
        n = self.weight ** 2 / self.weight_sq if self.weight_sq > 0 else 0.0
        m_hat = self.mean / self.weight if self.weight > 0 else self.mean
        signal = float(m_hat @ fisher_u @ m_hat)
        if n <= 1 + 1e-9:
            return signal, None
        return signal, max(self.sq_norm / self.weight - signal, 0.0) / (n - 1)


def chain_shrinkage(moments: ChainMoments, fisher_u: np.ndarray) -> float:
    """How much of the chain's recent mean natural gradient is signal, across data sets: the
    positive-part James–Stein factor ρ_c = max(0, 1 − σ̂²_m / ‖m̂‖²_F) of the weighted mean
    m̂ = Σw_iñ_i / Σw_i against its own noise.

    Each trial's ñ_i comes from a new data set and the accumulated model fine-tuned on it, so
    successive ñ_i scatter about the gradient at ψ. If they were independent with mean μ and
    total variance σ² in the Fisher metric, E q̂ = ‖μ‖² + σ² for the weighted mean q̂ of
    ‖ñ_i‖²_F and E ‖m̂‖²_F = ‖μ‖² + σ² / n with n = (Σw_i)² / Σw_i² the effective number of
    trials, so σ̂²_m = (q̂ − ‖m̂‖²_F) / (n − 1) estimates m̂'s noise σ² / n — Kish's effective
    sample size for a weighted mean, and the shrinkage of :func:`wald_shrinkage` with the noise
    measured between trials instead of within one. Two approximations: q̂ takes each ñ_i's
    length in its own trial's metric F_i and ‖m̂‖²_F the current trial's; and the ñ_i are not
    independent — they share one accumulated model, which makes them agree more and ρ_c
    larger, while ψ moving along the chain makes them agree less. Two successive gradients in
    opposite directions give ρ_c = 0, parallel ones ρ_c = 1. While n ≤ 1 (the first trial, or
    β = 0: no memory) nothing measures the noise and ρ_c = 1.

    >>> one = ChainMoments(np.zeros(2), 0.0, 0.0, 0.0).update(np.array([1.0, 0.0]), 1.0, 0.9)
    >>> chain_shrinkage(one, np.eye(2))
    1.0
    >>> chain_shrinkage(one.update(np.array([1.0, 0.0]), 1.0, 0.9), np.eye(2))
    1.0
    >>> chain_shrinkage(one.update(np.array([-1.0, 0.0]), 1.0, 0.9), np.eye(2))
    0.0
    """
    signal, noise = moments.signal_and_noise(fisher_u)
    if noise is None:
        return 1.0
    if signal <= 0:
        return 0.0
    return max(0.0, 1.0 - noise / signal)


def adam_step(
    u: np.ndarray,
    direction: np.ndarray,
    sq_norm: float,
    m: np.ndarray,
    v: float,
    t: int,
    step_size: float,
    betas: tuple[float, float],
    eps: float = 1e-12,
    restart: bool = False,
) -> tuple[np.ndarray, np.ndarray, float]:
    """One Adam step (Kingma & Ba 2015, Alg. 1) on u ∈ [0, 1]^d down ``direction``, with a single
    second moment v ≈ E[``sq_norm``] for the whole vector, projected back onto the box.

    ``t`` is the 1-based step number; returns (u_next, m, v). The update, step_size · m̂ / √v̂, is
    parallel to the momentum m̂ and invariant to a positive rescaling of the gradient (up to
    ``eps``). With ``direction`` = F⁺g and ``sq_norm`` = gᵀF⁺g (:func:`natural_gradient`) its
    length in the Fisher metric is about ``step_size`` (exactly that on the first step); with
    ``direction`` = g and ``sq_norm`` = ‖g‖² it is the Euclidean length. ``restart`` restarts the
    momentum at the current direction (m̂ = ``direction``; the gradient restart of O'Donoghue &
    Candès 2015, "Adaptive restart for accelerated gradient schemes", §3.2, used after a step that
    overshot).

    >>> g = np.array([3e4, -4e4])
    >>> u, m, v = adam_step(np.array([0.5, 0.99]), g, float(g @ g), np.zeros(2), 0.0,
    ...                     1, 0.05, (0.9, 0.999))
    >>> u.round(3).tolist()
    [0.47, 1.0]
    """
    m = (1 - betas[0] ** t) * direction if restart else betas[0] * m + (1 - betas[0]) * direction
    v = betas[1] * v + (1 - betas[1]) * sq_norm
    m_hat = m / (1 - betas[0] ** t)
    v_hat = v / (1 - betas[1] ** t)
    u_next = np.clip(u - step_size * m_hat / (math.sqrt(v_hat) + eps), 0.0, 1.0)
    return u_next, m, v


def adapt_step_scale(
    scale: float,
    grad_u: np.ndarray,
    displacement_u: np.ndarray,
    growth: float,
    shrink: float,
    scale_range: tuple[float, float],
    improved: bool = True,
) -> tuple[float, bool]:
    """The next step's length factor from the sign of the directional derivative of L̃ along the
    last step and from whether that step lowered the validation loss: ``scale`` · ``growth`` when
    ∂L̃/∂u · Δu < 0 (at the new ψ the last step still points downhill: it was too short) and
    ``improved``; ``scale`` · ``shrink`` when it is > 0 (the new gradient points back: the step
    overshot) or not ``improved`` (the step did not pay: a trust region's failed step, Nocedal &
    Wright 2006, Alg. 4.1); unchanged, and never failed, when there was no step (Δu = 0: cut to
    nothing by a shrinkage factor, or pinned at the box), which says nothing about its length;
    clipped to ``scale_range``. Returns (the factor, whether the last step failed —
    shrank — after which the caller restarts Adam's momentum, :func:`adam_step`).

    This is the sign test of Rprop (Riedmiller & Braun 1993) and of the multiplicative
    hypergradient step-size rule (Baydin et al. 2018, "Online learning rate adaptation with
    hypergradient descent", §3: the derivative of the loss with respect to the step size is
    ∇f(θ_t) · ∇f(θ_{t−1}) up to the sign and length of the step), applied to the whole step
    rather than per coordinate. The sign alone trusts the estimate's bias as much as its
    direction: on traffic-count it kept growing the step while ψ moved to where the reward
    collapsed (BENCHMARKS.md, issue 5), hence the second, measured test. It needs only the
    trial's own ∂L̃/∂ψ and validation loss and its parent's ψ and validation loss, all in the
    storage, so a resumed worker computes the same factor. (With several workers the parent's
    L_val may come from another worker's accumulated model, so the success test then compares
    two models as well as two ψ.) With ``growth`` · ``shrink`` = 1 (the sampler's defaults 2 and
    ½) a sign that is a coin toss leaves E log(factor) = 0 by itself; it is the L_val test, which
    fails whenever L_val does not fall, that shrinks the step near a minimum.

    >>> adapt_step_scale(1.0, np.array([1.0, 0.0]), np.array([-0.1, 0.0]), 1.5, 0.5, (0.1, 10.0))
    (1.5, False)
    >>> adapt_step_scale(1.0, np.array([1.0, 0.0]), np.array([0.1, 0.0]), 1.5, 0.5, (0.1, 10.0))
    (0.5, True)
    >>> adapt_step_scale(8.0, np.array([1.0]), np.array([-1.0]), 1.5, 0.5, (0.1, 10.0))
    (10.0, False)
    >>> adapt_step_scale(1.0, np.array([1.0]), np.array([-1.0]), 1.5, 0.5, (0.1, 10.0), False)
    (0.5, True)
    >>> adapt_step_scale(1.0, np.array([1.0]), np.array([0.0]), 1.5, 0.5, (0.1, 10.0), False)
    (1.0, False)
    """
    if not np.any(displacement_u):
        return float(min(max(scale, scale_range[0]), scale_range[1])), False
    slope = float(np.dot(grad_u, displacement_u))
    failed = slope > 0 or not improved
    if failed:
        scale *= shrink
    elif slope < 0:
        scale *= growth
    return float(min(max(scale, scale_range[0]), scale_range[1])), failed


def descend(
    space: ParameterSpace,
    psi: Mapping[str, torch.Tensor],
    grad: Mapping[str, torch.Tensor],
    scores: Mapping[str, torch.Tensor],
    m: np.ndarray,
    v: float,
    t: int,
    step_size: float,
    betas: tuple[float, float] = (0.9, 0.999),
    restart: bool = False,
    shrink_factor: float = 1.0,
    natural: tuple[np.ndarray, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """ψ_{t+1} (flat, in ``space.flat_names()`` order) from ψ_t, ∂L̃/∂ψ and the per-sample scores
    of the trial's latents: an :func:`adam_step` *down* the natural gradient (Eq. 12/13b descend
    L̃_val; the metric is the Fisher information of q_ψ) in coordinates normalised to the box.

    The gradient is carried into normalised units by the chain rule, ∂L̃/∂u = ∂L̃/∂ψ · (high − low),
    and the natural gradient F_u⁺ ∂L̃/∂u has a positive inner product with it, so the step is a
    descent step for L̃ in ψ as well. ``restart``: see :func:`adam_step`. ``shrink_factor`` ρ
    (:func:`wald_shrinkage`) multiplies the natural gradient fed to Adam's first moment but not
    its squared Fisher length fed to the second, so the step's length scales by ρ (exactly on
    the first step: ``step_size`` · ρ). ``natural``: the trial's :func:`natural_gradient` in
    u, when the caller has it already (else computed from ``grad`` and ``scores``). Returns
    (ψ_{t+1}, m, v).
    """
    if not 0.0 <= shrink_factor <= 1.0:
        raise ValueError(f"shrink_factor must be in [0, 1] (ρ of wald_shrinkage), got {shrink_factor!r}")
    low, high = space.bounds()
    if natural is None:
        grad_u = space.to_flat(grad) * (high - low)
        natural = natural_gradient(grad_u, fisher_information(space, scores))
    direction, sq_norm = natural
    u = (space.to_flat(psi) - low) / (high - low)
    u_next, m, v = adam_step(u, shrink_factor * direction, sq_norm, m, v, t, step_size, betas,
                             restart=restart)
    return low + u_next * (high - low), m, v


def start_damping(damping: float, previous: float | None) -> float:
    """The λ a trial's solve starts from: half the λ its parent trial's solve ended with, but not
    below the configured ``damping`` (Levenberg–Marquardt's memory of λ between iterations, with
    its decrease after a step that needed no increase; Moré 1978, AutoSimulate's [30]; §4.2 adds λI
    because "the Hessian might have negative eigenvalues").

    :func:`samplers.hypergradient.hypergradient` raises λ whenever CG meets negative curvature,
    and each raise restarts the solve; starting every trial from the configured λ repeated those
    restarts in every trial (BENCHMARKS.md, issue 5: on traffic-count the old defaults ended at
    their cap of 10 products with λ below the one a solve on all samples needs). Halving lets λ
    fall back when the curvature of the fine-tuned model allows it.

    >>> start_damping(1e-2, None), start_damping(1e-2, 2.0), start_damping(1e-2, 1e-3)
    (0.01, 1.0, 0.01)
    """
    if previous is None or not math.isfinite(previous):
        return damping
    return max(damping, 0.5 * float(previous))


def _snap(value: float, dist: BaseDistribution) -> float | int:
    """``value`` moved into a numeric distribution: clipped, on its step grid, int for ints."""
    low, high, step = dist.low, dist.high, dist.step
    value = min(max(float(value), low), high)
    if step is not None:
        value = min(max(low + round((value - low) / step) * step, low), high)
    return int(round(value)) if isinstance(dist, IntDistribution) else float(value)


def _centre(dist: FloatDistribution | IntDistribution) -> float:
    if dist.log:
        return math.exp(0.5 * (math.log(dist.low) + math.log(dist.high)))
    return 0.5 * (dist.low + dist.high)


@dataclass(frozen=True)
class _Proposal:
    """A trial's proposal: the chain head's ψ_{t+1} (``values``; empty at the start), whether a
    chain exists, and the seed of its jitter when a concurrent trial already evaluates the head."""

    values: dict[str, float]
    on_chain: bool
    jitter_seed: int | None

    def jitter(self, name: str, scale: float) -> float:
        if self.jitter_seed is None:
            return 0.0
        seed = np.random.SeedSequence([self.jitter_seed, zlib.crc32(name.encode())])
        return scale * float(np.random.RandomState(seed.generate_state(1)[0]).standard_normal())


class AutoSimulateSampler(BaseSampler):
    """AutoSimulate's hypergradient descent on simulator parameters ψ, one trial per iteration.

    Use it with a :class:`~simsearch.SimulatorObjective` whose model is accumulated across trials
    (``problem.objective(accumulate=True)`` or an ``AccumulatedMainTaskModule``) and a simulator
    with ``log_prob``; :meth:`prepare` checks that early.

    Args:
        method: the Δθ̂ approximation of Table 1: ``"quadratic"`` (conjugate gradient on
            (H + λI)), ``"approx_quadratic"`` (one H-vector product), ``"linear"`` or ``"no_val"``
            (the ablation that uses no validation data).
        init: the start point: a simulator or parameter space (its declared ψ), or a mapping of
            Optuna parameter values; parameters it does not cover start at their range's centre.
        step_size: the step's length in the Fisher metric of q_ψ, about (exactly on the first
            step, times c_0 and, with ``shrinkage``, ρ; later steps also times ρ_c with
            ``chain_shrinkage``): the KL divergence between q_ψ before and after it is about
            step_size²/2.
        betas: Adam's moment decay rates.
        step_growth, step_shrink, step_scale_range: adapt the step's length along the chain
            (:func:`adapt_step_scale`): trial t steps ``step_size`` · c_t with c_t = c_{t−1} ·
            ``step_growth`` when its ∂L̃/∂ψ still descends along the step that led to ψ_t and
            that step lowered L_val (the fine-tuned model's mean validation loss, stored as
            ``val_loss``), c_{t−1} · ``step_shrink`` when it points back or L_val did not fall,
            c_0 = ``step_scale_init``, clipped to ``step_scale_range``; c_t is stored on the
            trial (``step_scale``).
            After such a failed step, Adam's momentum also restarts at the current natural
            gradient (:func:`adam_step`), else it would keep pushing the old way while the steps
            shrink. ``step_growth`` = ``step_shrink`` = 1 keeps the length fixed (the rule before
            2026-12-03) and never restarts; so does ``"no_val"``, which has no L_val for the
            success test (the sign test alone let the step run to its cap and ψ collapse in
            the selection runs, BENCHMARKS.md, issue 5). Growth and shrink (2, 0.5) were chosen on
            traffic-count seeds 10–12 among (1.2 | 1.5 | 2, 0.5, up to 3 | 5 | 10) and checked on
            digits and gmm2d seeds 10–12. The range (0.1, 3) with ``chain_shrinkage`` was
            chosen on seeds 10–15 of all three built-in problems (2026-12-06, by a rule fixed
            before the runs: mean gain over the start ψ ≥ −0.01 on every problem, then the
            largest on traffic-count) against cap 1, the default of the morning, with and without
            it (BENCHMARKS.md, issue 5, "Noise across trials"). The range (0.1, 10) with c_0 = 10
            replaced it the same evening, with the recommendation by fresh values (see
            ``step_scale_init``).
        step_scale_init: c_0, the factor of the first step (the chain's first trial steps
            ``step_size`` · c_0), in ``step_scale_range``; default (``None``) its upper end, 10
            with the default range. With a fixed length (and for ``"no_val"``) every step is
            ``step_size`` · c_0. On 2026-12-04 c_0 / cap 10 / 10 gained more than 1 / 3 on
            traffic-count and gmm2d but lost more on digits (mean gain −0.067 against −0.012),
            recommending by value (``best_params(fresh=False)`` now).
            Recommending by fresh values, 10 / 10 was chosen on seeds 10–15 of all three
            built-in problems (2026-12-06, by a rule written before the runs: mean gain over the
            start ψ ≥ −0.01 on every problem, then the largest on traffic-count) over 1 / 3 with
            and without ``chain_shrinkage``: traffic-count +0.212 against +0.147 / +0.203,
            digits −0.003, gmm2d +0.007 (BENCHMARKS.md, issue 5, "Fresh values").
        shrinkage: ``"james_stein"`` (default) or ``None``: multiply each trial's step by
            ρ = max(0, 1 − p/W), W the Wald statistic of its natural gradient
            (:func:`wald_shrinkage`; see the module docstring), or not. ρ, W and p are stored on
            the trial either way (``shrinkage`` is 1 when off) and depend only on the trial's
            own data, so a resumed study continues identically. The default was chosen on
            seeds 10–12 of gmm2d, digits and traffic-count (2026-12-05, by a rule fixed before
            the runs: rank sum of the mean gain over the start ψ, no problem below −0.01) among
            c_0 / cap ∈ {1 / 3, 10 / 10} × {off, on}; its margin over ``None`` there was within
            the noise (mean gain +0.0005 / −0.0065 / +0.121 against −0.0010 / −0.0060 / +0.118),
            and on digits ρ was mostly 0.8–0.98: the within-data-set noise it measures is small
            next to the noise across data sets (BENCHMARKS.md, issue 5), which
            ``chain_shrinkage`` measures.
        chain_shrinkage: multiply each step by ρ_c, the James–Stein factor of the chain's
            recent mean natural gradient against the scatter of the natural gradients from one
            trial to the next (:func:`chain_shrinkage`; EMA weights β₁ of ``betas``), or not.
            ``shrinkage`` sees only the noise within one data set; this factor sees the noise
            of retraining on each new data set, which dominates on the built-in problems. The
            moments travel with ψ in the storage (``chain_mean``, ``chain_moments``) and ρ_c is
            stored as ``chain_shrinkage`` (1 when off). Default on since 2026-12-06 (see
            ``step_scale_range``).
        theta: restrict θ to some parameters of the model (names / prefixes / predicate; Table 5
            "frozen layers"); default all trainable parameters.
        damping, cg_tol, cg_max_iter: λ, relative tolerance and iteration cap of the CG solve
            (``damping`` is the least λ: see ``warm_start``).
        warm_start: start each CG solve from the previous solution found in this process, and
            its λ from half the λ the parent trial's solve ended with (in the storage), not
            below ``damping`` (:func:`start_damping`).
        hessian_samples, val_samples: estimate H / g_val on that many samples (cost control;
            ``None`` uses all). The defaults, H on 64 training samples and a cap of 5 products,
            keep an exact-quadratic trial on traffic-count within 2× a trial without the hook;
            against a solve on all M samples (``benchmarks/autosimulate_cg_accuracy.py``,
            BENCHMARKS.md, issue 5) they are about as close as the linear variant; the old
            defaults (128 samples, cap 10) were not closer, and coming closer took about 20
            products on 128.
        val_loss: the per-sample validation loss ``f(module(x), y)`` (default: the model's own
            training loss l, Eq. 1a); e.g. :func:`samplers.hypergradient.expected_error` for a
            classifier scored by accuracy.
        control_variate: subtract a leave-one-out baseline from the d_k.
        chunk_size: samples per pass of the d_k's JVP (:data:`samplers.hypergradient.
            CHUNK_SIZE`; time and memory only, the values do not change).
        fresh_every: what :meth:`prepare` sets as the objective's ``fresh_every``: every k-th
            trial also trains a fresh model on its own data and records its validation reward,
            the counterpart of a black-box trial's at ψ_t (user attr ``fresh_value``; no new
            samples), by which :meth:`best_params` recommends. ``None``: no such check, and
            :meth:`best_params` ranks by the accumulated model's value. See :meth:`best_params`
            for why. The default 2 was adopted over ``None`` on seeds 10–15 by a rule written
            before the runs (BENCHMARKS.md, issue 5, "Fresh values"): on digits the
            recommendation by fresh value holds the start ψ where the one by value drifts below
            it. The check costs what the trial's own fine-tuning costs: with it, an
            exact-quadratic trial on traffic-count costs 1.97–2.07× a trial without the hook on
            average (2.44× at k = 1), without it 1.57×.
        seed: seeds the jitter of concurrent proposals and the fallback sampler.
        independent_sampler: samples what AutoSimulate does not model (categorical parameters,
            parameters that are not simulator parameters); default ``RandomSampler(seed)``.
    """

    #: The objective must keep and fine-tune one model across trials (Alg. 1).
    needs_accumulated_model = True

    def __init__(
        self,
        method: str = "quadratic",
        *,
        init: BaseSimulator | ParameterSpace | Mapping[str, float] | None = None,
        step_size: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.999),
        step_growth: float = 2.0,
        step_shrink: float = 0.5,
        step_scale_range: tuple[float, float] = (0.1, 10.0),
        step_scale_init: float | None = None,
        shrinkage: str | None = "james_stein",
        chain_shrinkage: bool = True,
        theta: ThetaSelector = None,
        damping: float = 1e-2,
        cg_tol: float = 1e-3,
        cg_max_iter: int = 5,
        warm_start: bool = True,
        hessian_samples: int | None = 64,
        val_samples: int | None = None,
        val_loss: ValLoss | None = None,
        control_variate: bool = True,
        chunk_size: int = CHUNK_SIZE,
        fresh_every: int | None = 2,
        seed: int | None = None,
        independent_sampler: BaseSampler | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not step_size > 0:
            raise ValueError(f"step_size must be > 0 (a length in the Fisher metric), got {step_size!r}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two values in [0, 1), got {betas!r}")
        if not (isinstance(step_growth, int | float) and 1 <= step_growth < math.inf):
            raise ValueError(f"step_growth must be a finite number >= 1, got {step_growth!r}")
        if not (isinstance(step_shrink, int | float) and 0 < step_shrink <= 1):
            raise ValueError(f"step_shrink must be a number in (0, 1], got {step_shrink!r}")
        if not (isinstance(step_scale_range, tuple | list) and len(step_scale_range) == 2
                and all(isinstance(b, int | float) for b in step_scale_range)
                and 0 < step_scale_range[0] <= 1 <= step_scale_range[1] < math.inf):
            raise ValueError(
                f"step_scale_range must be (low, high) with 0 < low <= 1 <= high < inf, "
                f"got {step_scale_range!r}")
        if step_scale_init is None:
            step_scale_init = step_scale_range[1]
        if not (isinstance(step_scale_init, int | float) and not isinstance(step_scale_init, bool)
                and step_scale_range[0] <= step_scale_init <= step_scale_range[1]):
            raise ValueError(
                f"step_scale_init must be a number in step_scale_range [{step_scale_range[0]}, "
                f"{step_scale_range[1]}], got {step_scale_init!r}")
        if not (shrinkage is None or (isinstance(shrinkage, str) and shrinkage in SHRINKAGES)):
            raise ValueError(f"shrinkage must be one of {SHRINKAGES}, got {shrinkage!r}")
        if not isinstance(chain_shrinkage, bool | np.bool_):
            raise ValueError(f"chain_shrinkage must be True or False, got {chain_shrinkage!r}")
        if not damping >= 0:
            raise ValueError(f"damping (λ) must be >= 0, got {damping!r}")
        if not cg_tol > 0:
            raise ValueError(f"cg_tol must be > 0, got {cg_tol!r}")
        if isinstance(cg_max_iter, bool) or not isinstance(cg_max_iter, int) or cg_max_iter < 1:
            raise ValueError(f"cg_max_iter must be an int >= 1, got {cg_max_iter!r}")
        check_chunk_size(chunk_size)
        if fresh_every is not None:
            check_positive_int("fresh_every", fresh_every)
        self.fresh_every = fresh_every
        self.method, self.step_size, self.betas = method, float(step_size), tuple(betas)
        self.shrinkage, self.chain_shrinkage = shrinkage, bool(chain_shrinkage)
        self.step_growth, self.step_shrink = float(step_growth), float(step_shrink)
        self.step_scale_range = (float(step_scale_range[0]), float(step_scale_range[1]))
        self.step_scale_init = float(step_scale_init)
        self.options = dict(theta=theta, damping=damping, cg_tol=cg_tol, cg_max_iter=cg_max_iter,
                            hessian_samples=hessian_samples, val_samples=val_samples,
                            val_loss=val_loss, control_variate=control_variate,
                            chunk_size=chunk_size)
        self.warm_start = warm_start
        self._init = _init_params(init)
        self._seed = seed
        self._rng = np.random.RandomState(seed)
        self._independent = independent_sampler or RandomSampler(seed=seed)
        self._search_space = IntersectionSearchSpace()
        self._lock = threading.Lock()
        self._proposals: dict[int, _Proposal] = {}
        self._solutions: dict[int, torch.Tensor] = {}
        self._warned: set[str] = set()

    # -- Optuna's sampler interface ---------------------------------------------------------------
    def reseed_rng(self) -> None:
        self._rng.seed()
        self._seed = None
        self._independent.reseed_rng()

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if len(study.directions) == 1:
            self._proposal(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._search_space.calculate(study)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self._raise_error_if_multi_objective(study)
        return {
            name: self.sample_independent(study, trial, name, dist)
            for name, dist in search_space.items()
        }

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        self._raise_error_if_multi_objective(study)
        proposal = self._proposal(study, trial)
        if isinstance(param_distribution, FloatDistribution | IntDistribution):
            value = proposal.values.get(param_name)
            if value is None and not proposal.on_chain:
                value = self._init.get(param_name, _centre(param_distribution))
            if value is not None:
                width = param_distribution.high - param_distribution.low
                return _snap(value + proposal.jitter(param_name, JITTER) * width,
                             param_distribution)
        self._warn_once(
            param_name,
            f"AutoSimulateSampler does not model parameter {param_name!r} "
            f"({type(param_distribution).__name__}, not a simulator parameter on the chain); "
            f"it is sampled by {type(self._independent).__name__}",
        )
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        with self._lock:
            self._proposals.pop(trial._trial_id, None)
        self._independent.after_trial(study, trial, state, values)

    # -- the AutoSimulate step ------------------------------------------------------------------
    def prepare(self, objective: Any) -> None:
        """Check that ``objective`` (a SimulatorObjective) can feed AutoSimulate, raising a clear
        error if not, adopt its simulator's declared ψ as the start point unless ``init`` was
        given, and set its ``fresh_every`` to this sampler's. A harness building samplers by name
        calls this before optimising."""
        _check_simulator(objective.simulator)
        if getattr(objective, "is_sklearn", False):
            raise TypeError(
                "AutoSimulateSampler needs a LightningModule main task model with per_sample_loss, "
                f"got the scikit-learn estimator {type(objective.model).__name__}"
            )
        if not getattr(objective, "accumulated", False):
            raise ValueError(
                "AutoSimulateSampler needs the objective to accumulate the model across trials "
                "(Alg. 1 fine-tunes one model): expected an AccumulatedMainTaskModule, e.g. "
                "problem.objective(accumulate=True), got a fresh model per trial"
            )
        _check_module(objective.model)
        if not self._init:
            self._init = _init_params(objective.simulator)
        objective.fresh_every = self.fresh_every

    def observe_training(self, trial: optuna.Trial, context: Any) -> None:
        """Compute ∂L̃/∂ψ for the trained model and store ψ_{t+1} and diagnostics on ``trial``."""
        start = time.perf_counter()
        study = trial.study
        self._raise_error_if_multi_objective(study)
        _check_simulator(context.simulator)
        _check_module(context.module)
        if getattr(context.module, "trials_seen", None) is None:
            raise ValueError(
                "AutoSimulateSampler needs the objective to accumulate the model across trials: "
                f"expected an AccumulatedMainTaskModule, got {type(context.module).__name__}"
            )
        space = context.simulator.space
        names = space.flat_names()
        parent = self._parent_of(study, trial)
        step, m, v, scale = 0, np.zeros(len(names)), 0.0, self.step_scale_init
        moments = ChainMoments(np.zeros(len(names)), 0.0, 0.0, 0.0)
        if parent is not None:
            attrs = parent.system_attrs
            if len(attrs.get(_KEY + "adam_m", ())) == len(names):
                step = int(attrs[_KEY + "step"])
                m, v = np.asarray(attrs[_KEY + "adam_m"]), float(attrs[_KEY + "adam_v"])
                scale = float(attrs.get(_KEY + "step_scale", self.step_scale_init))
            if len(attrs.get(_KEY + "chain_mean", ())) == len(names):
                moments = ChainMoments(np.asarray(attrs[_KEY + "chain_mean"]),
                                       *attrs[_KEY + "chain_moments"])
        with self._lock:
            warm = self._solutions.get(parent.number) if parent is not None else None
        options = dict(self.options)
        if self.warm_start:
            options["damping"] = start_damping(
                options["damping"],
                None if parent is None else parent.system_attrs.get(_KEY + "damping"),
            )
        else:
            warm = None
        result = hypergradient(
            context.module, context.simulator, context.psi, context.batch, context.val_data,
            self.method, warm_start=warm, seed=context.seed, **options,
        )
        scores = score_matrix(context.simulator, context.batch.latents, context.psi)
        noise = wald_shrinkage(score_rows(space, scores), result.weights.numpy())
        shrink_factor = noise.factor if self.shrinkage == "james_stein" else 1.0
        low, high = space.bounds()
        grad_u = space.to_flat(result.grad) * (high - low)
        fisher = fisher_information(space, scores)
        natural = natural_gradient(grad_u, fisher)
        moments = moments.update(*natural, self.betas[0])
        chain_factor = chain_shrinkage(moments, fisher) if self.chain_shrinkage else 1.0
        restart = False  # no_val has no L_val for the success test: its length stays fixed
        adapt = (self.step_growth, self.step_shrink) != (1.0, 1.0) and self.method != "no_val"
        val = _validation_loss(context.module, context.val_data, self.options["val_loss"]) \
            if adapt else None
        if parent is not None and adapt:
            try:
                displacement = (space.to_flat(context.psi) - space.to_flat(
                    space.from_params(parent.params))) / (high - low)
            except KeyError:  # the parent did not sample every simulator parameter
                displacement = np.zeros(len(names))
            previous_val = parent.system_attrs.get(_KEY + "val_loss")
            improved = previous_val is None or val < previous_val
            scale, restart = adapt_step_scale(scale, grad_u, displacement, self.step_growth,
                                              self.step_shrink, self.step_scale_range, improved)
        psi_next, m, v = descend(space, context.psi, result.grad, scores, m, v, step + 1,
                                 self.step_size * scale * chain_factor, self.betas, restart=restart,
                                 shrink_factor=shrink_factor, natural=natural)
        with self._lock:
            if result.v is not None:
                self._solutions = {trial.number: result.v.detach()}
        attrs = {
            "step": step + 1,
            "psi_next": dict(zip(names, map(float, psi_next), strict=True)),
            "adam_m": m.tolist(),
            "adam_v": v,
            "step_scale": scale,
            "val_loss": val,
            "shrinkage": shrink_factor,
            "chain_mean": moments.mean.tolist(),
            "chain_moments": [moments.sq_norm, moments.weight, moments.weight_sq],
            "chain_shrinkage": chain_factor,
            "wald": noise.wald if math.isfinite(noise.wald) else None,
            "score_rank": noise.rank,
            "grad_norm": result.norm,
            "cg_iterations": result.cg_iterations,
            "cg_residual": None if math.isnan(result.cg_residual) else result.cg_residual,
            "damping": result.damping if self.method == "quadratic" else None,
            "method": self.method,
            "seconds": time.perf_counter() - start,
        }
        for key, value in attrs.items():
            study._storage.set_trial_system_attr(trial._trial_id, _KEY + key, value)

    def settings(self) -> dict[str, Any]:
        """The options that shape the chain or its recommendation (``fresh_every``), JSON-ready
        (callables by qualified name), so that a harness resuming a study can tell whether the
        same sampler continues it
        (:func:`simsearch.sampler_registry.check_sampler_settings`, used by ``simsearch
        compare``, ``run`` and ``worker``, refuses a different one). The seed and
        ``chunk_size`` (time and memory only) are not included.

        >>> AutoSimulateSampler("linear", step_scale_range=(0.1, 2)).settings()["step_scale_range"]
        [0.1, 2.0]
        """
        def plain(value: Any) -> Any:
            if isinstance(value, np.generic):  # numpy scalars: JSON-ready Python values
                return value.item()
            if callable(value):
                named = value if hasattr(value, "__qualname__") else type(value)
                return f"{named.__module__}.{named.__qualname__}"
            return list(value) if isinstance(value, tuple) else value

        options = dict(method=self.method, init=self._init, step_size=self.step_size,
                       betas=self.betas, step_growth=self.step_growth,
                       step_shrink=self.step_shrink, step_scale_range=self.step_scale_range,
                       step_scale_init=self.step_scale_init, shrinkage=self.shrinkage,
                       chain_shrinkage=self.chain_shrinkage, warm_start=self.warm_start,
                       fresh_every=self.fresh_every, **self.options)
        del options["chunk_size"]  # time and memory only: the values do not depend on it
        return {k: plain(v) for k, v in options.items()}

    @staticmethod
    def current_params(study: Study) -> dict[str, float] | None:
        """The ψ the next trial will be proposed (the head of the chain), or None before any
        completed AutoSimulate step."""
        head = _chain_head(study)
        return None if head is None else dict(head.system_attrs[_KEY + "psi_next"])

    @staticmethod
    def best_params(study: Study, fresh: bool = True) -> dict[str, float]:
        """The ψ_t (the trial's own parameters) of the COMPLETE trial that ranks first in the
        study's direction (ties: the lowest number), the rule by which a black-box sampler's
        ``study.best_trial`` recommends; FAIL, PRUNED, RUNNING and non-finite values are ignored.

        Ranked by ``fresh_value`` where any such trial has one and ``fresh`` is true (the
        objective's ``fresh_every``, set by :meth:`prepare`): the validation reward of a fresh
        model trained on the trial's own data, the counterpart of a black-box trial's value at
        ψ_t. Else by
        the trial's value, the validation metric of the accumulated model after fine-tuning on
        ψ_t's data (Alg. 1): that model has also seen every earlier trial's data, so later
        trials tend to rank higher, and its hypergradient asks for the data that help *it*
        next, which on the built-in digits problem lead a fresh model away from a good start
        (BENCHMARKS.md, issue 5, "Fresh values"). :meth:`current_params` is the alternative:
        the chain head's ψ_{t+1}, not yet evaluated. Raises ValueError when no trial is
        complete.
        """
        return dict(recommended_trial(study, fresh).params)

    # -- helpers ----------------------------------------------------------------------------------
    def _proposal(self, study: Study, trial: FrozenTrial) -> _Proposal:
        """What ``trial`` proposes, computed once (cached) and its parent recorded in the storage."""
        with self._lock:
            cached = self._proposals.get(trial._trial_id)
        if cached is not None:
            return cached
        head = _chain_head(study)
        parent = -1 if head is None else head.number
        values = {} if head is None else dict(head.system_attrs[_KEY + "psi_next"])
        busy = any(
            t._trial_id != trial._trial_id and t.system_attrs.get(_KEY + "parent") == parent
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        )
        jitter_seed = None
        if busy:
            jitter_seed = int(
                np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0]
                if self._seed is not None else self._rng.randint(2**31)
            )
        study._storage.set_trial_system_attr(trial._trial_id, _KEY + "parent", parent)
        proposal = _Proposal(values, head is not None, jitter_seed)
        with self._lock:
            self._proposals[trial._trial_id] = proposal
        return proposal

    def _parent_of(self, study: Study, trial: optuna.Trial) -> FrozenTrial | None:
        number = study._storage.get_trial_system_attrs(trial._trial_id).get(_KEY + "parent", -1)
        if number is None or number < 0:
            return None
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        return study._storage.get_trial(trial_id)

    def _warn_once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        warnings.warn(message, stacklevel=3)


def _validation_loss(module: torch.nn.Module, val_data: tuple[torch.Tensor, torch.Tensor],
                     loss: ValLoss | None) -> float:
    """L_val(θ̂): the mean per-sample validation loss (``loss(module(x), y)``, default
    ``module.per_sample_loss``) of the fine-tuned model, in eval mode, on all of V (not on a
    ``val_samples`` subsample: one forward pass, no gradient), for the step rule's success test."""
    first = next(module.parameters())
    x, y = val_data
    x = x.to(device=first.device, dtype=first.dtype) if x.is_floating_point() else x.to(first.device)
    y = y.to(device=first.device, dtype=first.dtype) if y.is_floating_point() else y.to(first.device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            losses = module.per_sample_loss(x, y) if loss is None else loss(module(x), y)
    finally:
        module.train(was_training)
    return float(losses.double().mean())


def _chain_head(study: Study) -> FrozenTrial | None:
    done = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if _KEY + "step" in t.system_attrs
    ]
    return max(done, key=lambda t: (t.system_attrs[_KEY + "step"], t.number), default=None)


def _init_params(init: Any) -> dict[str, float]:
    if init is None:
        return {}
    if isinstance(init, BaseSimulator):
        init = init.space
    if isinstance(init, ParameterSpace):
        return init.to_params(init.init_psi())
    if isinstance(init, Mapping):
        return {str(k): float(v) for k, v in init.items()}
    raise TypeError(
        f"init must be a simulator, a ParameterSpace or a mapping of parameter values, "
        f"got {type(init).__name__}"
    )


def _check_simulator(simulator: BaseSimulator) -> None:
    if not getattr(simulator, "has_log_prob", False):
        raise TypeError(
            f"AutoSimulateSampler needs a simulator with a tractable q_ψ(s) (log_prob) for its "
            f"score-function gradient (Eq. 11); {type(simulator).__name__} is a black-box simulator. "
            f"Use a black-box sampler (TPE, CMA-ES, REINFORCE, ...) instead"
        )


def _check_module(module: Any) -> None:
    import pytorch_lightning as pl

    if not isinstance(module, pl.LightningModule) or not callable(
        getattr(module, "per_sample_loss", None)
    ):
        raise TypeError(
            "AutoSimulateSampler needs the main task model to be a LightningModule with "
            f"per_sample_loss(x, y) -> (n,) (e.g. MainTaskModule), got {type(module).__name__}"
        )
