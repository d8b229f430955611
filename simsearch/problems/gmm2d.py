"""``gmm2d`` — Learning to Simulate's toy problem (§4.1, Fig. 2, Table 2).

Real data p(x, y | ψ_real): two classes in the plane, each a mixture of 3 isotropic Gaussians
(σ = 0.6, equal weights) laid out as a 2 × 3 checkerboard, so that neither class is one blob::

    y = +1.5:   class 0 (x=-3)   class 1 (x=0)   class 0 (x=3)
    y = -1.5:   class 1 (x=-3)   class 0 (x=0)   class 1 (x=3)

The simulator q(x, y | ψ) has only K = 2 components per class (LTS: "we fix the number of
components per GMM in ψ to be only 2"), so it cannot copy p; ψ holds every component's mean and
per-axis log standard deviation (the policy "only adjusts mean and variances"). Classes are
balanced and components equally likely (not part of ψ).

Main task models: a small MLP (Lightning, the default) and an RBF-kernel SVM (scikit-learn), the
model LTS used. Reference points (LTS Table 2 rows): the default ψ; ``one_component``, a
1-Gaussian-per-class simulator whose mean and per-axis variance match each class of p exactly
(what mimicking the real data with too simple a simulator gives); and ``oracle``, data drawn
from p itself.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Bernoulli, Categorical, Independent, Normal

from simsearch.parameters import Parameter, Psi
from simsearch.problems._base import Problem
from simsearch.simulator import Simulator

__all__ = ["GaussianMixtureSimulator", "REAL_MEANS", "REAL_STD", "make_problem"]

#: Means of p's components, ``[class, component, axis]``.
REAL_MEANS = torch.tensor(
    [[[-3.0, 1.5], [3.0, 1.5], [0.0, -1.5]], [[0.0, 1.5], [-3.0, -1.5], [3.0, -1.5]]]
)
REAL_STD = 0.6
LOG_STD_BOUNDS = (math.log(0.1), math.log(4.0))


class GaussianMixtureSimulator(Simulator):
    """Two classes, each an equal-weight mixture of K axis-aligned Gaussians.

    ψ: ``means`` of shape (2, K, 2) in [-5, 5] and ``log_std`` of shape (2, K, 2).
    Latents: the class ``y`` ~ Bernoulli(½), the component ``c`` ~ Categorical(uniform K), and the
    ``point`` ~ N(means[y, c], exp(log_std[y, c])²) — ancestral sampling; the renderer is the
    identity on ``point``.
    """

    def __init__(
        self,
        n_components: int = 2,
        init_means: torch.Tensor | None = None,
        init_log_std: torch.Tensor | float = 0.0,
    ) -> None:
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"n_components must be an int >= 1, got {n_components!r}")
        k = n_components
        if init_means is None:  # hand-tuned default: one row of components per class
            xs = torch.linspace(-2.0, 2.0, k) if k > 1 else torch.zeros(1)
            init_means = torch.stack(
                [torch.stack([xs, torch.full((k,), y)], dim=1) for y in (1.0, -1.0)]
            )
        self.n_components = k
        super().__init__(
            [
                Parameter("means", -5.0, 5.0, init_means.numpy(), shape=(2, k, 2),
                          doc="component means [class, component, axis]"),
                Parameter("log_std", *LOG_STD_BOUNDS, torch.as_tensor(init_log_std).numpy(),
                          shape=(2, k, 2), doc="per-axis log standard deviations"),
            ]
        )

    def distributions(self, psi: Psi, n: int):
        means, std = psi["means"], psi["log_std"].exp()
        k = self.n_components

        def point(latents):
            y, c = latents["y"].long(), latents["c"]
            return Independent(Normal(means[y, c], std[y, c]), 1)

        return {
            "y": Bernoulli(probs=torch.full((n,), 0.5)),
            "c": Categorical(logits=torch.zeros(n, k)),
            "point": point,
        }

    def render(self, latents):
        return latents["point"].float(), latents["y"].long()


def _real_sampler() -> GaussianMixtureSimulator:
    return GaussianMixtureSimulator(3, REAL_MEANS, math.log(REAL_STD))


def _one_component_psi() -> Psi:
    """Per class: the mixture's mean and per-axis variance (moments of p, computed exactly)."""
    mean = REAL_MEANS.mean(dim=1, keepdim=True)
    var = REAL_STD**2 + ((REAL_MEANS - mean) ** 2).mean(dim=1, keepdim=True)
    return {"means": mean, "log_std": 0.5 * var.log()}


def _mlp():
    from lightning_modules import MainTaskModule

    net = torch.nn.Sequential(
        torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
        torch.nn.Linear(32, 2),
    )
    return MainTaskModule(net, loss="cross_entropy", metric="accuracy", lr=1e-2)


def _svm():
    from sklearn.svm import SVC

    return SVC(kernel="rbf", gamma="scale", C=1.0)


def make_problem(n_val: int = 500, n_test: int = 2000) -> Problem:
    real = _real_sampler()
    real_psi = real.init_psi()
    val = real.simulate(real_psi, n_val, seed=1_000_001)
    test = real.simulate(real_psi, n_test, seed=1_000_002)
    one = GaussianMixtureSimulator(1)
    one_psi = _one_component_psi()

    def oracle(n: int, seed: int):
        batch = real.simulate(real_psi, n, seed)
        return batch.x, batch.y

    def one_component(n: int, seed: int):
        batch = one.simulate(one_psi, n, seed)
        return batch.x, batch.y

    return Problem(
        name="gmm2d",
        description="LTS §4.1 toy: 2-D two-class data, p has 3 Gaussians/class, q_ψ has 2",
        simulator=GaussianMixtureSimulator(2),
        val=(val.x, val.y),
        test=(test.x, test.y),
        models={"mlp": _mlp, "svm": _svm},
        n_samples=500,
        epochs=5,
        batch_size=100,
        eval_n_samples=2000,
        eval_epochs=10,
        references={"one_component": one_component, "oracle": oracle},
    )
