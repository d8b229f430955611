"""Squared maximum mean discrepancy (MMD²) with a Gaussian kernel — Meta-Sim's distribution gap.

Meta-Sim §3.2.2, Eq. 1, measures how far rendered images X_θ are from unlabelled real images X_R as
the squared MMD (Gretton et al., "A kernel two-sample test", JMLR 2012) between their features
φ(x), with a Gaussian kernel ``k(a, b) = exp(-‖a − b‖² / (2 h²))``::

    MMD²(X, Y) = E k(x, x') + E k(y, y') − 2 E k(x, y)

Two estimators from samples x_1..x_n, y_1..y_m:

* **biased** (V-statistic; Meta-Sim's Eq. 1): every mean includes the diagonal i = i'. Always ≥ 0
  and exactly 0 when the two sample sets are identical; for two independent samples of the *same*
  distribution its expectation is ``(1 − E k(x, x'))/n + (1 − E k(y, y'))/m > 0`` (a positive bias
  of order 1/n). Meta-Sim's Eq. 1 prints the cross term with weight 1/(MN); the estimator is
  2/(MN) (Gretton et al. 2012, Eq. 2), which is what is computed here.
* **unbiased** (U-statistic, Gretton et al. 2012, Lemma 6): the diagonal terms i = i' of the
  within-sample means are left out. Its expectation is exactly MMD² (it can be negative); on two
  identical sample sets of size n it equals ``−2 (1 − mean off-diagonal k)/n`` ∈ [−2/n, 0].

**Bandwidth rule**: the median heuristic (Gretton et al. 2012, §8): h = the median of the pairwise
Euclidean distances between the points of the pooled sample (at most 1,000 points, taken evenly
spaced, so the rule costs O(1) for any sample size), computed without gradient.

**Default features** φ (:func:`default_features`): inputs with one feature axis (``(n, d)``) are used
as they are; images (``(n, C, H, W)`` or ``(n, H, W)``) go through :class:`RandomConvFeatures`, one
fixed convolution layer with seeded random 3×3 filters, ReLU and 2×2 average pooling. Meta-Sim uses
InceptionV3 features (the KID of Bińkowski et al. 2018) and reports that *lower* layers work better
for rendered-vs-real comparisons; the lowest layer of a CNN is a bank of local, orientation-selective
filters, which random filters also are. They need no downloaded weights, are identical on every
machine for a given seed, and keep the spatial layout (what a rotation or a translation changes).
Pass ``features=`` to use any other map (e.g. a pretrained network of your own).

>>> import torch

from simsearch.validation import check_positive_int
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(300, 2, generator=g)
>>> float(mmd2(x, x, bandwidth=1.0, unbiased=False))
0.0
>>> near = float(mmd2(x, torch.randn(300, 2, generator=g) + 0.1, bandwidth=1.0))
>>> far = float(mmd2(x, torch.randn(300, 2, generator=g) + 2.0, bandwidth=1.0))
>>> near < far
True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from simsearch.validation import check_positive_int

__all__ = [
    "FeatureMap",
    "RandomConvFeatures",
    "class_conditional_mmd2",
    "default_features",
    "distribution_gap",
    "gaussian_kernel",
    "gaussian_mmd2_closed_form",
    "median_bandwidth",
    "mmd2",
]

FeatureMap = Callable[[torch.Tensor], torch.Tensor]
"""φ: maps a batch of inputs ``(n, ...)`` to feature vectors ``(n, d)``."""

_MEDIAN_POINTS = 1000


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖² for all pairs; the expanded form keeps gradients finite at zero distance."""
    sq = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1).unsqueeze(0) - 2.0 * a @ b.T
    return sq.clamp_min(0.0)


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """The Gram matrix ``exp(-‖a_i − b_j‖² / (2 h²))`` of two ``(n, d)`` and ``(m, d)`` batches."""
    if not (isinstance(bandwidth, int | float) and math.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"bandwidth must be a finite number > 0, got {bandwidth!r}")
    return torch.exp(-_squared_distances(a, b) / (2.0 * float(bandwidth) ** 2))


def median_bandwidth(*samples: torch.Tensor) -> float:
    """The median heuristic: median pairwise distance of the pooled samples (1.0 if all coincide)."""
    pooled = torch.cat([_as_matrix(s, "samples") for s in samples]).detach()
    if len(pooled) > _MEDIAN_POINTS:
        pooled = pooled[torch.linspace(0, len(pooled) - 1, _MEDIAN_POINTS).long()]
    n = len(pooled)
    if n < 2:
        raise ValueError(f"the median heuristic needs at least 2 points in total, got {n}")
    iu = torch.triu_indices(n, n, offset=1)
    dist = _squared_distances(pooled, pooled)[iu[0], iu[1]].sqrt()
    median = float(dist.median())
    return median if median > 0 else 1.0


def mmd2(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidth: float | None = None,
    unbiased: bool = True,
) -> torch.Tensor:
    """Squared MMD between the samples ``x`` ``(n, d)`` and ``y`` ``(m, d)``, differentiable in both.

    Args:
        bandwidth: the Gaussian kernel's h; ``None`` applies the median heuristic to x ∪ y.
        unbiased: the U-statistic (True; needs n, m ≥ 2) or Meta-Sim's Eq. 1 V-statistic (False).
    """
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same feature size, got {x.shape[1]} and {y.shape[1]}")
    n, m = len(x), len(y)
    if unbiased and min(n, m) < 2:
        raise ValueError(f"the unbiased estimator needs at least 2 samples on each side, got {n} and {m}")
    h = median_bandwidth(x, y) if bandwidth is None else bandwidth
    kxx, kyy, kxy = gaussian_kernel(x, x, h), gaussian_kernel(y, y, h), gaussian_kernel(x, y, h)
    if unbiased:
        within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        within_x, within_y = kxx.mean(), kyy.mean()
    return within_x + within_y - 2.0 * kxy.mean()


def class_conditional_mmd2(
    x: torch.Tensor,
    x_labels: torch.Tensor,
    y: torch.Tensor,
    y_labels: torch.Tensor,
    bandwidth: float | None = None,
    unbiased: bool = True,
) -> torch.Tensor:
    """The mean over classes c of MMD²(x[x_labels = c], y[y_labels = c]), differentiable in both.

    A gap between the class-conditional distributions p(φ | c) — what :func:`mmd2` of the pooled
    samples cannot see when the classes' appearances are exchanged (the pooled distributions then
    coincide). Uses labels on both sides, e.g. Meta-Sim's labelled validation set V (§3.2.3) as
    the real side. One kernel bandwidth for all classes: ``None`` applies the median heuristic to
    the pooled x ∪ y (a per-class median from a few points each would be noisy). Classes with fewer
    than 2 samples on either side (1 for ``unbiased=False``) are left out; at least one class
    must remain.
    """
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    for name, points, labels in (("x_labels", x, x_labels), ("y_labels", y, y_labels)):
        if not isinstance(labels, torch.Tensor) or labels.shape != (len(points),):
            raise ValueError(f"{name} must be a tensor of {len(points)} labels, got "
                             f"{getattr(labels, 'shape', type(labels).__name__)}")
    h = median_bandwidth(x, y) if bandwidth is None else bandwidth
    least = 2 if unbiased else 1
    gaps = []
    for c in torch.unique(torch.cat([x_labels, y_labels])):
        in_x, in_y = x_labels == c, y_labels == c
        if int(in_x.sum()) >= least and int(in_y.sum()) >= least:
            gaps.append(mmd2(x[in_x], y[in_y], h, unbiased))
    if not gaps:
        raise ValueError(f"no class has at least {least} samples on both sides")
    return torch.stack(gaps).mean()


def gaussian_mmd2_closed_form(
    mean_x: torch.Tensor, std_x: float, mean_y: torch.Tensor, std_y: float, bandwidth: float
) -> float:
    """Exact MMD² between N(μ_x, σ_x² I) and N(μ_y, σ_y² I) in d dimensions, Gaussian kernel h.

    E k(a, b) for independent a ~ N(μ_a, σ_a² I), b ~ N(μ_b, σ_b² I) is
    ``(h² / (h² + σ_a² + σ_b²))^(d/2) · exp(−‖μ_a − μ_b‖² / (2 (h² + σ_a² + σ_b²)))``
    (a Gaussian integral); MMD² = E k(x, x') + E k(y, y') − 2 E k(x, y).
    """
    mean_x = torch.as_tensor(mean_x, dtype=torch.float64)
    mean_y = torch.as_tensor(mean_y, dtype=torch.float64)
    d, h2 = mean_x.numel(), float(bandwidth) ** 2

    def expected_k(var_sum: float, sq_dist: float) -> float:
        s = h2 + var_sum
        return (h2 / s) ** (d / 2) * math.exp(-sq_dist / (2 * s))

    gap = float((mean_x - mean_y).pow(2).sum())
    return expected_k(2 * std_x**2, 0.0) + expected_k(2 * std_y**2, 0.0) - 2 * expected_k(
        std_x**2 + std_y**2, gap
    )


class RandomConvFeatures(torch.nn.Module):
    """φ for images: a fixed 3×3 convolution with seeded random filters, ReLU, 2×2 average pooling.

    Weights follow PyTorch's default (Kaiming-uniform) initialisation drawn from a generator seeded
    with ``seed``; they are buffers, never trained. Input ``(n, C, H, W)`` or ``(n, H, W)``; output
    ``(n, width · ⌈H/2⌉ · ⌈W/2⌉)``.
    """

    def __init__(self, in_channels: int = 1, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("width", width)
        bound = 1.0 / math.sqrt(in_channels * 9)
        g = torch.Generator().manual_seed(int(seed))
        weight = (torch.rand(width, in_channels, 3, 3, generator=g) * 2 - 1) * bound
        bias = (torch.rand(width, generator=g) * 2 - 1) * bound
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != self.weight.shape[1]:
            raise ValueError(
                f"RandomConvFeatures expects images (n, {self.weight.shape[1]}, H, W), got {tuple(x.shape)}"
            )
        z = torch.relu(torch.nn.functional.conv2d(x.float(), self.weight, self.bias, padding=1))
        return torch.nn.functional.avg_pool2d(z, 2, ceil_mode=True).flatten(1)


_CONV_FEATURES: dict[int, RandomConvFeatures] = {}


def default_features(x: torch.Tensor) -> torch.Tensor:
    """The default φ: ``(n, d)`` inputs unchanged, images through :class:`RandomConvFeatures`
    (seed 0, 16 filters; channels taken from the input, ``(n, H, W)`` counts as one channel)."""
    if x.dim() <= 2:
        return _as_matrix(x, "x")
    channels = 1 if x.dim() == 3 else int(x.shape[1])
    if channels not in _CONV_FEATURES:
        _CONV_FEATURES[channels] = RandomConvFeatures(channels)
    return _CONV_FEATURES[channels](x)


def distribution_gap(
    x_sim: torch.Tensor,
    x_real: torch.Tensor,
    features: FeatureMap = default_features,
    bandwidth: float | None = None,
    unbiased: bool = True,
) -> float:
    """MMD² between simulated and real inputs in the feature space ``features`` (no gradient)."""
    with torch.no_grad():
        return float(mmd2(features(x_sim), features(x_real), bandwidth, unbiased))


def _as_matrix(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 1:
        x = x.unsqueeze(1)
    if x.dim() != 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) batch of feature vectors, got {tuple(x.shape)}")
    return x if x.is_floating_point() else x.float()
