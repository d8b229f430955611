"""Meta-Sim's distribution transformer G_θ and its training (Kar et al., ICCV 2019, §3, Alg. 1).

Meta-Sim keeps the *structure* of each scene sampled from the simulator's probabilistic grammar
P (here: q_ψ at a fixed ψ) and learns a network G_θ that rewrites the scene's *mutable attributes*
(§3.1). For a simsearch :class:`~simsearch.simulator.Simulator` the scene is its latents s (one row
per sample) and the mutable attributes are, by default, the **continuous latents** — those whose
torch distribution has a non-discrete support (Normal, Uniform, Beta, ...). Discrete latents
(Bernoulli, Categorical: class labels, object types, counts) are inputs of G_θ but pass through
unchanged, as Meta-Sim keeps categorical attributes immutable ("In this paper, we keep categorical
attributes immutable"). Pass ``mutable=[...]`` to choose a subset.

Pieces, each with the paper's equation:

* :class:`DistributionTransformer` — G_θ: an MLP (plus a linear skip path) from all standardised
  attributes of a scene to the mean of its transformed mutable attributes. Sampling follows Eq. 4:
  each transformed attribute ~ N(G_θ(s), (σ · scale)²) with a fixed σ, independently, so
  ``log p_{G_θ}(S')`` is a sum over samples and attributes. ``pretrain_identity`` is §3.2.1's
  autoencoder pre-training (L1 loss for continuous attributes).
* :func:`finite_difference_render` — §3.2.2 "Backprop through a renderer": the renderer is treated
  as a black box and ∂x/∂a is approximated by central differences, perturbing each mutable
  attribute of every scene (footnote 3), so the MMD loss of Eq. 1 reaches θ.
* :class:`TransformedSimulator` — the simulator P followed by G_θ and the renderer, itself a
  :class:`~simsearch.simulator.Simulator` (same ψ), so it plugs into ``SimulatorObjective``,
  ``compare`` and ``show``.
* :class:`MetaSimTrainer` — Algorithm 1: per iteration, transform a batch of scenes, render them, add
  the MMD² to unlabelled real inputs (Eq. 1), train the accumulated task network on the batch, score
  it on the labelled validation set, and add the REINFORCE task loss
  −(score − moving average) · log p_{G_θ}(S') (Eq. 3); one Adam step on θ.

>>> import torch
>>> from torch.distributions import Bernoulli, Normal
>>> from simsearch import Parameter, Simulator
>>> class Shift(Simulator):
...     def __init__(self):
...         super().__init__([Parameter("mu", -2.0, 2.0, 0.0)])
...     def distributions(self, psi, n):
...         return {"y": Bernoulli(probs=torch.full((n,), 0.5)),
...                 "u": Normal(psi["mu"].expand(n), 1.0)}
...     def render(self, latents):
...         return latents["u"].unsqueeze(1) + 3 * latents["y"].unsqueeze(1), latents["y"].long()
>>> g = DistributionTransformer(Shift(), seed=0)
>>> g.mutable
('u',)
>>> losses = g.pretrain_identity(steps=200, seed=0)
>>> losses[-1] < 0.1
True
>>> batch = TransformedSimulator(Shift(), g).simulate({"mu": torch.tensor(0.0)}, n=5, seed=0)
>>> sorted(batch.latents)
['metasim_attributes', 'u', 'y']
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.distributions import Categorical, Independent, Normal

from simsearch.mmd import FeatureMap, class_conditional_mmd2, default_features, mmd2
from simsearch.objective import trial_seed
from simsearch.parameters import Psi
from simsearch.simulator import Simulator
from simsearch.validation import check_positive_int

__all__ = [
    "TASK_NOISE",
    "TRANSFORMED",
    "DistributionTransformer",
    "MetaSimTrainer",
    "TransformedSimulator",
    "check_task_noise",
    "continuous_latents",
    "finite_difference_render",
]

#: Name of the latent holding the transformed mutable attributes S' (flattened, ``(n, d_mut)``).
TRANSFORMED = "metasim_attributes"

#: How :class:`MetaSimTrainer` perturbs the scenes for the REINFORCE task loss (Eq. 3): ``scene``,
#: each scene's attributes drawn independently from Eq. 4 (Meta-Sim); ``batch``, one offset shared
#: by the whole batch (evolution strategies), see :class:`MetaSimTrainer`.
TASK_NOISE = ("scene", "batch")


def check_task_noise(task_noise: str, task_sigma: float | None) -> None:
    """Refuse a ``task_noise`` outside :data:`TASK_NOISE` or a ``task_sigma`` that is not a finite
    number > 0 or None (:class:`MetaSimTrainer`'s arguments, also checked by ``run_metasim``
    before any work)."""
    if task_noise not in TASK_NOISE:
        raise ValueError(f"task_noise: expected one of {list(TASK_NOISE)}, got {task_noise!r}")
    if task_sigma is not None and not (isinstance(task_sigma, int | float)
                                       and 0 < task_sigma < math.inf):
        raise ValueError(f"task_sigma must be a finite number > 0 or None, got {task_sigma!r}")


def continuous_latents(simulator: Simulator, psi: Psi, latents: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the latents whose distribution under q_ψ has a continuous support (Meta-Sim's
    mutable attributes by default). A distribution that does not declare its support counts as
    discrete (left unchanged)."""
    n = next(iter(latents.values())).shape[0]
    names = []
    for name, spec in simulator.distributions(psi, n).items():
        dist = spec(dict(latents)) if callable(spec) else spec
        try:
            discrete = bool(dist.support.is_discrete)
        except NotImplementedError:
            discrete = True
        if not discrete and latents[name].is_floating_point():
            names.append(name)
    return names


def _categories(
    simulator: Simulator, psi: Psi, latents: Mapping[str, torch.Tensor], inputs: Sequence[str],
    one_hot: Sequence[str],
) -> dict[str, int]:
    """The number of categories of each latent in ``one_hot`` (each must be among ``inputs`` and
    drawn from a ``Categorical``), read from its distribution under q_ψ."""
    unknown = [k for k in one_hot if k not in inputs]
    if unknown:
        raise ValueError(f"one_hot: expected a subset of the inputs {list(inputs)}, got {list(one_hot)}")
    n = next(iter(latents.values())).shape[0]
    specs = simulator.distributions(psi, n)
    categories = {}
    for name in one_hot:
        spec = specs[name]
        dist = spec(dict(latents)) if callable(spec) else spec
        if not isinstance(dist, Categorical):
            raise ValueError(f"one_hot: {name!r} must be drawn from a Categorical, got {type(dist).__name__}")
        categories[name] = int(dist.probs.shape[-1])
    return categories


class DistributionTransformer(torch.nn.Module):
    """G_θ: all attributes of a scene → the mean of its transformed mutable attributes.

    The layout (latent names, per-sample shapes) and the standardisation of inputs and outputs are
    read from a reference batch of ``n_reference`` scenes drawn from ``simulator`` at ``psi``
    (default: its initial ψ) with ``seed``.

    Args:
        simulator: the simulator (Meta-Sim's probabilistic grammar P) whose scenes are transformed.
        psi: the ψ at which scenes are sampled (kept fixed while G_θ is trained).
        mutable: names of the latents G_θ may change; default: every continuous latent.
        inputs: names of the latents G_θ reads (Meta-Sim: all attributes of a scene, the default);
            reading fewer makes the transformation shared by more scenes.
        one_hot: names among ``inputs`` of categorical latents (``torch.distributions.Categorical``)
            that G_θ reads as one-hot vectors rather than as their index (Meta-Sim §3.1: a node's
            class is one of its attributes; an index would order the classes), e.g. the digit's
            class, so that G_θ(s) can differ per class.
        hidden: width of the two hidden layers.
        sigma: Eq. 4's fixed standard deviation, in units of each attribute's ``scale``.
        scales: per-latent scale (raw units) of the mutable attributes; default: the reference
            batch's standard deviation per component (floored at 1e-3). G_θ predicts in these units;
            σ and the finite-difference step are multiples of them.
        n_reference: scenes drawn to read the layout and the standardisation.
        seed: seeds the reference batch and the network's initialisation.
    """

    def __init__(
        self,
        simulator: Simulator,
        psi: Psi | None = None,
        mutable: Sequence[str] | None = None,
        inputs: Sequence[str] | None = None,
        hidden: int = 64,
        sigma: float = 0.1,
        scales: Mapping[str, float] | None = None,
        n_reference: int = 2000,
        seed: int = 0,
        one_hot: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if not isinstance(simulator, Simulator):
            raise TypeError(
                "DistributionTransformer needs a simulator with explicit latents (a simsearch "
                f"Simulator), got {type(simulator).__name__}"
            )
        if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be an int >= 1, got {hidden!r}")
        self.psi = {k: v.detach().clone() for k, v in (psi or simulator.init_psi()).items()}
        reference = simulator.simulate(self.psi, n_reference, seed).latents
        self.names = tuple(reference)
        self.shapes = {k: tuple(v.shape[1:]) for k, v in reference.items()}
        continuous = continuous_latents(simulator, self.psi, reference)
        if mutable is None:
            mutable = continuous
        unknown = [m for m in mutable if m not in continuous]
        if unknown or not mutable:
            raise ValueError(
                f"mutable: expected a non-empty subset of the continuous latents {continuous}, "
                f"got {list(mutable)}"
            )
        self.mutable = tuple(m for m in self.names if m in mutable)
        inputs = self.names if inputs is None else inputs
        unknown = [k for k in inputs if k not in self.names]
        if unknown or not inputs:
            raise ValueError(f"inputs: expected a non-empty subset of the latents {list(self.names)}, "
                             f"got {list(inputs)}")
        self.inputs = tuple(k for k in self.names if k in inputs)
        self.categories = _categories(simulator, self.psi, reference, self.inputs, one_hot)
        scales = dict(scales or {})
        bad = sorted(set(scales) - set(self.mutable))
        if bad:
            raise ValueError(f"scales: unknown mutable attributes {bad}; expected some of {self.mutable}")
        self.sigma = float(sigma)
        inputs = self._input_matrix(reference)
        outputs = self._flatten(reference, self.mutable)
        out_scale = outputs.std(0).clamp_min(1e-3)
        i = 0
        for name in self.mutable:
            size = int(np.prod(self.shapes[name], dtype=np.int64))
            if name in scales:
                value = scales[name]
                if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                    raise ValueError(f"scales[{name!r}] must be a finite number > 0, got {value!r}")
                out_scale[i : i + size] = float(value)
            i += size
        self.register_buffer("in_shift", inputs.mean(0))
        self.register_buffer("in_scale", inputs.std(0).clamp_min(1e-3))
        self.register_buffer("out_shift", outputs.mean(0))
        self.register_buffer("out_scale", out_scale)
        d_in, d_out = inputs.shape[1], outputs.shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(trial_seed(seed, 1))
            self.mlp = torch.nn.Sequential(
                torch.nn.Linear(d_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                torch.nn.ReLU(), torch.nn.Linear(hidden, d_out),
            )
            self.skip = torch.nn.Linear(d_in, d_out)
        self._simulator = simulator

    # -- layout ---------------------------------------------------------------------------------
    def _require(self, latents: Mapping[str, torch.Tensor], names: Sequence[str]) -> None:
        missing = [k for k in names if k not in latents]
        if missing:
            raise ValueError(f"latents: missing {missing}; expected {list(self.names)}")

    def _flatten(self, latents: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
        self._require(latents, names)
        n = latents[names[0]].shape[0]
        return torch.cat([latents[k].reshape(n, -1).float() for k in names], dim=1)

    def _input_matrix(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """What G_θ reads, unstandardised ``(n, d_in)``: the ``inputs`` flattened, those in
        ``one_hot`` as one-hot vectors over their categories."""
        self._require(latents, self.inputs)
        n = latents[self.inputs[0]].shape[0]
        parts = [
            torch.nn.functional.one_hot(latents[k].long(), self.categories[k]).reshape(n, -1).float()
            if k in self.categories else latents[k].reshape(n, -1).float()
            for k in self.inputs
        ]
        return torch.cat(parts, dim=1)

    def mutable_values(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The mutable attributes of each scene, flattened: ``(n, d_mut)``, raw units."""
        return self._flatten(latents, self.mutable)

    def components(self, names: Sequence[str]) -> torch.Tensor:
        """Positions of the mutable attributes ``names`` in the flattened ``(d_mut,)`` layout."""
        unknown = [k for k in names if k not in self.mutable]
        if unknown:
            raise ValueError(f"expected mutable attributes among {list(self.mutable)}, got {unknown}")
        sizes = [int(np.prod(self.shapes[k], dtype=np.int64)) for k in self.mutable]
        starts = np.cumsum([0, *sizes])
        return torch.tensor([j for k, a, b in zip(self.mutable, starts, starts[1:], strict=False)
                             if k in names for j in range(a, b)], dtype=torch.long)

    def replace(self, latents: Mapping[str, torch.Tensor], attrs: torch.Tensor) -> dict[str, torch.Tensor]:
        """A copy of ``latents`` whose mutable attributes are ``attrs`` ``(n, d_mut)``."""
        out, i, n = dict(latents), 0, attrs.shape[0]
        for name in self.mutable:
            size = int(np.prod(self.shapes[name], dtype=np.int64))
            out[name] = attrs[:, i : i + size].reshape(n, *self.shapes[name]).to(latents[name].dtype)
            i += size
        return out

    # -- G_θ and Eq. 4 --------------------------------------------------------------------------
    def scaled_mean(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """G_θ(s) in standardised output units ``(n, d_mut)``."""
        z = (self._input_matrix(latents) - self.in_shift) / self.in_scale
        return self.mlp(z) + self.skip(z)

    def forward(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """G_θ(s): the transformed mutable attributes' mean ``(n, d_mut)``, raw units."""
        return self.scaled_mean(latents) * self.out_scale + self.out_shift

    def distribution(self, latents: Mapping[str, torch.Tensor]) -> Independent:
        """p_{G_θ}(s' | s) = Π_a N(s'_a; G_θ(s)_a, (σ · scale_a)²) — Eq. 4's factorisation."""
        return Independent(Normal(self(latents), self.sigma * self.out_scale), 1)

    def pretrain_identity(
        self,
        steps: int = 500,
        batch_size: int = 256,
        lr: float = 1e-2,
        seed: int = 0,
        offset: torch.Tensor | None = None,
    ) -> list[float]:
        """§3.2.1: train G_θ(s) = s on fresh scenes from P with an L1 loss (standardised units).

        ``offset`` ``(d_mut,)``, in units of each attribute's scale, pre-trains to
        G_θ(s) = s + offset instead: a start beside the grammar's prior (restarts of a non-convex
        loss, see :class:`simsearch.metasim.MetaSimConfig`). Returns the loss of every step.
        """
        check_positive_int("steps", steps)
        check_positive_int("batch_size", batch_size)
        offset = torch.zeros(len(self.out_scale)) if offset is None else torch.as_tensor(offset).float()
        if offset.shape != self.out_scale.shape:
            raise ValueError(f"offset must have shape {tuple(self.out_scale.shape)}, "
                             f"got {tuple(offset.shape)}")
        optimiser = torch.optim.Adam(self.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
        losses = []
        for step in range(steps):
            latents = self._simulator.simulate(self.psi, batch_size, trial_seed(seed, step)).latents
            target = (self.mutable_values(latents) - self.out_shift) / self.out_scale + offset
            loss = (self.scaled_mean(latents) - target).abs().mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
        return losses


class _FiniteDifferenceRender(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attrs, render_x, steps, joint, directions, generator):  # noqa: D401 - autograd
        ctx.save_for_backward(attrs, steps, joint)
        ctx.render_x, ctx.directions, ctx.generator = render_x, directions, generator
        return render_x(attrs.detach())

    @staticmethod
    def backward(ctx, grad_x):
        attrs, steps, joint = ctx.saved_tensors
        n = attrs.shape[0]
        grads = torch.zeros_like(attrs)
        separate = torch.ones(attrs.shape[1], dtype=torch.bool)
        separate[joint] = False

        def difference(delta: torch.Tensor, size: float | torch.Tensor) -> torch.Tensor:
            """grad_x · (R(a + δ) − R(a − δ)) / (2 · size) per scene: the loss's central difference."""
            quotient = (ctx.render_x(attrs + delta) - ctx.render_x(attrs - delta)) / (2 * size)
            return (grad_x * quotient).reshape(n, -1).sum(1)

        with torch.no_grad():
            for j in torch.nonzero(separate).flatten().tolist():
                delta = torch.zeros_like(attrs)
                delta[:, j] = steps[j]
                grads[:, j] = difference(delta, steps[j])
            for _ in range(ctx.directions if len(joint) else 0):
                signs = torch.randint(0, 2, (n, len(joint)), generator=ctx.generator).to(attrs.dtype)
                signs = 2 * signs - 1  # Rademacher Δ, one per scene
                delta = torch.zeros_like(attrs)
                delta[:, joint] = signs * steps[joint]
                grads[:, joint] += difference(delta, 1.0).unsqueeze(1) * signs / steps[joint] / ctx.directions
        return grads, None, None, None, None, None


def finite_difference_render(
    render_x: Callable[[torch.Tensor], torch.Tensor],
    attrs: torch.Tensor,
    steps: torch.Tensor,
    joint: Sequence[int] | torch.Tensor = (),
    directions: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x = R(a) with ∂x/∂a by central finite differences (Meta-Sim §3.2.2, footnote 3).

    ``render_x`` maps attributes ``(n, d)`` to inputs ``(n, ...)``, each scene depending only on its
    own row (true of any batched renderer), so perturbing column j of every row at once gives the
    j-th Jacobian column of all scenes: the backward pass costs 2·d renders of the batch.
    ``steps`` ``(d,)`` are the perturbation sizes, raw units.

    ``joint``: columns whose gradient is estimated instead by simultaneous perturbation (SPSA,
    Spall, "Multivariate stochastic approximation using a simultaneous perturbation gradient
    approximation", IEEE TAC 1992, Eq. 2.2): each scene draws a Rademacher vector Δ over those
    columns, and with the loss's central difference along it,
    D = grad_xᵀ (R(a + c∘Δ) − R(a − c∘Δ)) / 2 (c: their ``steps``), the gradient of column j is
    estimated as D · Δ_j / c_j. Since E[Δ_k Δ_j] = δ_kj, the estimate is unbiased wherever the
    central difference is exact (R linear or quadratic along the perturbation), with a variance of
    Σ_{k≠j} (c_k g_k / c_j)² from the other columns' gradients g_k; ``directions`` independent Δ
    are averaged (variance / ``directions``). Cost: 2·``directions`` renders for all of ``joint``,
    against 2 per column separately — for a high-dimensional attribute (the digits' 44 control-point
    displacements) one pair of renders instead of 88. ``generator`` draws the Δ.
    """
    steps = torch.as_tensor(steps, dtype=attrs.dtype)
    if steps.shape != (attrs.shape[1],) or not bool((steps > 0).all()):
        raise ValueError(f"steps must be {attrs.shape[1]} positive sizes, got {steps.tolist()}")
    joint = torch.as_tensor(joint, dtype=torch.long).flatten()
    if len(joint) and (int(joint.min()) < 0 or int(joint.max()) >= attrs.shape[1]
                       or len(joint.unique()) != len(joint)):
        raise ValueError(f"joint must be distinct columns in [0, {attrs.shape[1]}), got {joint.tolist()}")
    check_positive_int("directions", directions)
    return _FiniteDifferenceRender.apply(attrs, render_x, steps, joint, directions, generator)


class TransformedSimulator(Simulator):
    """P followed by G_θ and the renderer: Meta-Sim's synthetic data source as a simulator.

    Same ψ as ``base``. Latents: the base scene s (the input, kept for inspection) and
    :data:`TRANSFORMED` s' ~ p_{G_θ}(· | s) (Eq. 4); the base renderer draws s with its mutable
    attributes replaced by s'. ``log_prob`` is differentiable in θ through the last term.
    """

    def __init__(self, base: Simulator, transformer: DistributionTransformer) -> None:
        if TRANSFORMED in transformer.names:
            raise ValueError(f"the base simulator already has a latent named {TRANSFORMED!r}")
        super().__init__(base.parameters)
        self.base, self.transformer = base, transformer

    def distributions(self, psi: Psi, n: int):
        specs = dict(self.base.distributions(psi, n))
        names = self.transformer.names
        specs[TRANSFORMED] = lambda latents: self.transformer.distribution(
            {k: latents[k] for k in names}
        )
        return specs

    def scene(self, latents: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The transformed scene G_θ(s): the base latents with s' in place of the mutable ones."""
        base = {k: latents[k] for k in self.transformer.names}
        return self.transformer.replace(base, latents[TRANSFORMED])

    def render(self, latents):
        with torch.no_grad():
            return self.base.render(self.scene(latents))


class MetaSimTrainer:
    """Algorithm 1 of Meta-Sim: train G_θ with the MMD loss (Eq. 1) and the task loss (Eq. 3).

    Args:
        transformer: G_θ (pre-trained to the identity, §3.2.1, before calling :meth:`fit`).
        simulator: the base simulator P; scenes are drawn at ``transformer.psi``.
        real_x: unlabelled real inputs X_R (needed when ``mmd_weight > 0``).
        task_module: the task network (an ``AccumulatedMainTaskModule`` is trained across
            iterations, Alg. 1 line 15) and ``val``, labelled validation data V ``(x, y)``: the
            task score of Eq. 2 is the module's metric on V after training on the iteration's data.
        score: instead of ``task_module`` and ``val``, any ``score(x, y, seed) -> float`` to
            maximise (Eq. 2's score(S') of the rendered data).
        mmd_weight, task_weight: weights of the two losses (0 switches one off).
        batch_size: B_m, scenes per iteration (one iteration of Alg. 1's inner loop, I_m = 1).
        lr: Adam's learning rate for θ.
        baseline_decay: the moving average's decay: b ← decay · b + (1 − decay) · score.
        task_epochs, task_batch_size: how the task network is trained on each iteration's data.
        fd_step: finite-difference step, in units of each attribute's scale.
        spsa: mutable attributes whose finite differences are taken by simultaneous perturbation,
            all their components at once (:func:`finite_difference_render`'s ``joint``): 2 ·
            ``spsa_directions`` renders per scene for all of them instead of 2 per component — for
            high-dimensional attributes such as per-point displacements. Default: none (every
            component separately, Meta-Sim footnote 3).
        spsa_directions: perturbation vectors Δ averaged per scene and iteration for ``spsa``.
        features: φ for the MMD (default: :func:`simsearch.mmd.default_features`).
        task_features: compute the MMD instead in the features of the task network itself, its
            penultimate layer (``task_module.net`` without its last layer; the network must be a
            ``torch.nn.Sequential`` of at least two modules). Meta-Sim §3.2.2 computes Eq. 1 in
            the features of a trained network and leaves open which; the task network trained so
            far (Alg. 1, line 15) is one that needs no other data or weights — the MMD between
            source and target in a task network's layers is the distribution gap of deep domain
            adaptation (Long et al., "Learning transferable features with deep adaptation
            networks", ICML 2015). φ then changes every iteration, so the real features are
            recomputed from ``real_x`` each iteration; the network's weights receive no gradient
            from the MMD (it is trained only on the rendered data, as before), and it is trained
            every iteration even when ``task_weight`` is 0.
        real_y: labels of ``real_x``; given, the MMD loss is class-conditional
            (:func:`simsearch.mmd.class_conditional_mmd2`: the mean over classes of the MMD² between
            the batch's scenes of class c and the real inputs of class c, one median bandwidth), so
            that each class's transformed scenes are matched to that class's real inputs (e.g.
            with a class-conditioned G_θ, ``DistributionTransformer(one_hot=...)``). Needs labels,
            so ``real_x``, ``real_y`` are then labelled data such as V.
        task_noise: one of :data:`TASK_NOISE`, how the scenes are perturbed for the task loss (only
            when ``task_weight > 0``). ``scene`` (Meta-Sim, Eq. 4): s'_i ~ N(G_θ(s_i), (σ·scale)²)
            independently per scene. ``batch``: the task network is trained and scored on Eq. 4's
            scenes moved by one offset δ ~ N(0, (σ_t·scale)²) per iteration, shared by every
            scene, s'_i + δ (the MMD term keeps Eq. 4's s'_i, as with ``scene``); the task loss is
            −A · mean_i log N(s'_i + δ; s'_i, (σ_t·scale)²) with s'_i's dependence on θ through
            G_θ(s_i) (reparametrised), whose θ-gradient is
            −A · mean_i J_G(s_i)ᵀ δ / (σ_t·scale)² — the evolution-strategies estimate of the
            gradient of E_δ[score] (Salimans et al., "Evolution strategies as a scalable alternative
            to reinforcement learning", 2017, Eq. 1–2: ∇ E[F(θ + σε)] = E[F(θ + σε) ε] / σ) for
            the direction in which every scene moves together. Why: the score is one scalar per
            batch, so with independent per-scene noise the advantage A carries the batch's signal
            only through the mean of B_m independent perturbations while the score-function term
            Σ_i ∇ log p(s'_i) sums B_m independent noises — the estimate's variance grows with B_m
            (Eq. 3 "approximated using one sample"); a shared offset moves the whole batch, so A
            sees the full effect of δ. It is unbiased for the gradient of E_δ[score] in θ
            directions that move every scene alike (e.g. the output bias: a global shift of an
            attribute) and, where the score depends on the batch only symmetrically through its
            scenes (a function of the batch mean, say), for the gradient of the per-scene-noise
            objective in those directions too; per-scene differences of J_G are averaged away
            (the estimate sees mean_i J_G(s_i)). Its expectation is B_m times that of ``scene``'s
            (which averages Eq. 4 over the batch, below), so a given ``task_weight`` weighs the
            task term more.
        task_sigma: σ_t of ``task_noise="batch"``, in units of each attribute's scale (default:
            the transformer's σ).
        seed: the data of iteration t depend on (seed, t) only.

    The task loss follows Alg. 1, line 17 with Eq. 4 averaged over the batch instead of summed (a
    rescaling of the learning rate by B_m, so that ``lr`` does not depend on the batch size).
    """

    def __init__(
        self,
        transformer: DistributionTransformer,
        simulator: Simulator,
        real_x: torch.Tensor | None = None,
        *,
        task_module: Any = None,
        val: tuple[torch.Tensor, torch.Tensor] | None = None,
        score: Callable[[torch.Tensor, torch.Tensor, int], float] | None = None,
        mmd_weight: float = 1.0,
        task_weight: float = 1.0,
        batch_size: int = 256,
        lr: float = 1e-3,
        baseline_decay: float = 0.9,
        task_epochs: int = 1,
        task_batch_size: int = 64,
        fd_step: float = 0.1,
        spsa: Sequence[str] = (),
        spsa_directions: int = 1,
        features: FeatureMap = default_features,
        task_features: bool = False,
        real_y: torch.Tensor | None = None,
        task_noise: str = "scene",
        task_sigma: float | None = None,
        seed: int = 0,
    ) -> None:
        if mmd_weight < 0 or task_weight < 0 or mmd_weight + task_weight == 0:
            raise ValueError(
                f"mmd_weight and task_weight must be >= 0 and not both 0, got {mmd_weight}, {task_weight}"
            )
        if mmd_weight > 0 and real_x is None:
            raise ValueError("real_x (unlabelled real inputs) is required when mmd_weight > 0")
        if task_weight > 0 and score is None and (task_module is None or val is None):
            raise ValueError(
                "task_weight > 0 needs a score function, or task_module and val (labelled validation data)"
            )
        if task_features:
            net = getattr(task_module, "net", None)
            if not (isinstance(net, torch.nn.Sequential) and len(net) >= 2):
                raise ValueError(
                    "task_features=True needs a task_module whose net is a torch.nn.Sequential of "
                    f"at least 2 modules, got {type(net).__name__ if task_module is not None else None}"
                )
            if real_x is None or val is None or score is not None:
                raise ValueError("task_features=True needs real_x, val and no score function (the "
                                 "task network is trained on every batch and scored on val)")
        if real_y is not None and (real_x is None or not isinstance(real_y, torch.Tensor)
                                   or real_y.shape != (len(real_x),)):
            raise ValueError(f"real_y must be a tensor of one label per real input "
                             f"({None if real_x is None else len(real_x)}), got "
                             f"{getattr(real_y, 'shape', type(real_y).__name__)}")
        if not 0 <= baseline_decay < 1:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
        if not fd_step > 0:
            raise ValueError(f"fd_step must be > 0, got {fd_step}")
        check_task_noise(task_noise, task_sigma)
        check_positive_int("spsa_directions", spsa_directions)
        self.spsa_columns = transformer.components(tuple(spsa)) if spsa else torch.zeros(0, dtype=torch.long)
        self.spsa_directions = spsa_directions
        self.task_noise = task_noise
        self.task_sigma = transformer.sigma if task_sigma is None else float(task_sigma)
        self.transformer, self.simulator = transformer, simulator
        self.transformed = TransformedSimulator(simulator, transformer)
        self.task_module, self.val = task_module, val
        self.score = score or self._train_and_score
        self.mmd_weight, self.task_weight = float(mmd_weight), float(task_weight)
        self.batch_size, self.task_epochs, self.task_batch_size = batch_size, task_epochs, task_batch_size
        self.baseline_decay, self.fd_step, self.features = baseline_decay, fd_step, features
        self.seed = int(seed)
        self.task_features, self.real_x, self.real_y = bool(task_features), real_x, real_y
        self.real_features = None if real_x is None or task_features else features(real_x).detach()
        self.optimiser = torch.optim.Adam(transformer.parameters(), lr=lr)
        self.baseline: float | None = None
        self.iteration = 0
        self.history: list[dict[str, float]] = []

    def _feature_map(self) -> tuple[FeatureMap, torch.Tensor]:
        """φ and φ(X_R) for this iteration's MMD: the fixed ``features``, or (``task_features``)
        the task network's penultimate layer with its weights detached, so that the MMD's gradient
        reaches the rendered inputs (and θ) but not the network."""
        if not self.task_features:
            return self.features, self.real_features
        body = self.task_module.net[:-1]
        # copies: the task network is trained in place later in the same iteration, before backward
        weights = {k: v.detach().clone() for k, v in body.named_parameters()}
        buffers = {k: v.clone() for k, v in body.named_buffers()}

        def phi(x: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(body, {**weights, **buffers}, (x,)).flatten(1)

        with torch.no_grad():
            real = phi(self.real_x)
        return phi, real

    def _render_x(self, latents: Mapping[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        base = {k: latents[k] for k in self.transformer.names}
        return lambda attrs: self.simulator.render(self.transformer.replace(base, attrs))[0].float()

    def step(self) -> dict[str, float]:
        """One iteration of Alg. 1 (lines 5–18); returns its record."""
        start, t = time.perf_counter(), self.iteration
        seed = trial_seed(self.seed, t)
        batch = self.transformed.simulate(self.transformer.psi, self.batch_size, seed)
        base = {k: batch.latents[k] for k in self.transformer.names}
        sampled, x_batch, y_batch = batch.latents[TRANSFORMED], batch.x, batch.y
        record: dict[str, float] = {"iteration": t, "images": len(batch)}
        shared = self.task_noise == "batch" and self.task_weight > 0
        if shared:  # the task batch: Eq. 4's scenes plus one offset for all (see task_noise)
            eps = torch.randn(sampled.shape[1], generator=torch.Generator().manual_seed(trial_seed(seed, 1)))
            offset = self.task_sigma * self.transformer.out_scale * eps
            x_batch, y_batch = self.simulator.render(self.transformer.replace(base, sampled + offset))
            record["renders"] = 2 * len(batch)
        loss = torch.zeros(())
        if self.mmd_weight > 0 or shared:
            mean = self.transformer(base)
            attrs = mean + (sampled - mean).detach()  # reparametrised sample: value s', gradient of G_θ
        if self.mmd_weight > 0:
            steps = self.fd_step * self.transformer.out_scale
            x = finite_difference_render(
                self._render_x(batch.latents), attrs, steps, self.spsa_columns, self.spsa_directions,
                torch.Generator().manual_seed(trial_seed(seed, 2)),
            )
            phi, real_features = self._feature_map()
            if self.real_y is None:
                gap = mmd2(phi(x), real_features, unbiased=False)
            else:
                gap = class_conditional_mmd2(phi(x), batch.y, real_features, self.real_y, unbiased=False)
            loss = loss + self.mmd_weight * gap
            record["mmd2"] = float(gap.detach())
            separate, joint = sampled.shape[1] - len(self.spsa_columns), len(self.spsa_columns) > 0
            record["renders"] = len(batch) * (1 + 2 * separate + 2 * self.spsa_directions * joint + shared)
        if self.task_features and self.task_weight == 0:  # the feature network still learns
            record["score"] = float(self.score(x_batch, y_batch, seed))
        if self.task_weight > 0:
            score = float(self.score(x_batch, y_batch, seed))
            self.baseline = score if self.baseline is None else self.baseline
            advantage = score - self.baseline
            if shared:  # log N(δ; 0, σ_t²) with δ = s'_i + offset − (G_θ(s_i) + its Eq. 4 noise)
                spread = self.task_sigma * self.transformer.out_scale
                log_p = Independent(Normal(attrs, spread), 1).log_prob(sampled + offset)
            else:
                log_p = self.transformer.distribution(base).log_prob(sampled)
            loss = loss - self.task_weight * advantage * log_p.mean()
            record.update(score=score, baseline=self.baseline, advantage=advantage)
            self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * score
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        self.iteration += 1
        record["seconds"] = time.perf_counter() - start
        self.history.append(record)
        return record

    def fit(self, iterations: int, callback: Callable[[dict[str, float]], None] | None = None):
        """Run ``iterations`` steps (E_m · I_m of Alg. 1); returns the history of records."""
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
        for _ in range(iterations):
            record = self.step()
            if callback is not None:
                callback(record)
        return self.history

    def _train_and_score(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> float:
        from lightning_modules.trainer import fit_tensors

        fit_tensors(self.task_module, x, y, self.task_epochs, self.task_batch_size, seed)
        score = self.task_module.evaluate(*self.val)
        return score if getattr(self.task_module, "direction", "maximize") == "maximize" else -score
