"""Squared MMD (Meta-Sim Eq. 1) against ground truth: exact zeros, the closed form for Gaussians."""

import math

import pytest
import torch

from simsearch.mmd import (
    RandomConvFeatures,
    default_features,
    distribution_gap,
    gaussian_kernel,
    gaussian_mmd2_closed_form,
    median_bandwidth,
    mmd2,
)


def _normal(n, d, seed, shift=0.0, std=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * std + shift


def test_identical_samples_give_zero_biased_and_the_stated_negative_unbiased_value():
    x = _normal(200, 3, 0)
    assert float(mmd2(x, x, bandwidth=1.3, unbiased=False)) == pytest.approx(0.0, abs=1e-12)
    k = gaussian_kernel(x, x, 1.3)
    off_diagonal_mean = float((k.sum() - k.diagonal().sum()) / (200 * 199))
    expected = -2.0 * (1.0 - off_diagonal_mean) / 200  # stated in simsearch.mmd's docstring
    assert float(mmd2(x, x, bandwidth=1.3, unbiased=True)) == pytest.approx(expected, rel=1e-9)
    assert -2.0 / 200 <= expected <= 0.0


def test_mmd_grows_with_a_mean_shift():
    x = _normal(400, 2, 1)
    values = [float(mmd2(x, _normal(400, 2, 2, shift=s), bandwidth=1.0)) for s in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False)), values
    assert abs(values[0]) < 0.01  # same distribution: the unbiased estimate is near 0


def test_unbiased_estimator_is_unbiased_and_the_biased_one_has_the_stated_bias():
    d, n, reps, h, shift = 2, 40, 600, 1.0, torch.tensor([0.6, 0.0], dtype=torch.float64)
    truth = gaussian_mmd2_closed_form(torch.zeros(d), 1.0, shift, 1.0, h)
    unbiased, biased = [], []
    for r in range(reps):
        x, y = _normal(n, d, 2 * r + 10), _normal(n, d, 2 * r + 11) + shift
        unbiased.append(float(mmd2(x, y, bandwidth=h, unbiased=True)))
        biased.append(float(mmd2(x, y, bandwidth=h, unbiased=False)))
    u = torch.tensor(unbiased, dtype=torch.float64)
    stderr = float(u.std()) / math.sqrt(reps)
    assert abs(float(u.mean()) - truth) < 4 * stderr, (float(u.mean()), truth, stderr)
    # E[biased] = MMD² + (1 − E k(x,x'))/n + (1 − E k(y,y'))/m; here both E k = (h²/(h²+2))^(d/2)
    ekk = (h**2 / (h**2 + 2.0)) ** (d / 2)
    b = torch.tensor(biased, dtype=torch.float64)
    assert abs(float(b.mean()) - (truth + 2 * (1 - ekk) / n)) < 4 * float(b.std()) / math.sqrt(reps)
    assert float(b.mean()) - truth > 8 * stderr  # the bias is real and detected


def test_closed_form_matches_a_large_sample():
    x, y = _normal(1500, 3, 5, std=0.7), _normal(1500, 3, 6, shift=0.4, std=1.2)
    truth = gaussian_mmd2_closed_form(torch.zeros(3), 0.7, torch.full((3,), 0.4), 1.2, 1.5)
    assert float(mmd2(x, y, bandwidth=1.5)) == pytest.approx(truth, abs=0.006)


def test_mmd_is_differentiable_and_its_gradient_matches_finite_differences():
    x = _normal(30, 2, 7).requires_grad_(True)
    y = _normal(25, 2, 8) + 0.3
    mmd2(x, y, bandwidth=0.8).backward()
    eps, i, j = 1e-6, 4, 1
    xp, xm = x.detach().clone(), x.detach().clone()
    xp[i, j] += eps
    xm[i, j] -= eps
    fd = (float(mmd2(xp, y, bandwidth=0.8)) - float(mmd2(xm, y, bandwidth=0.8))) / (2 * eps)
    assert float(x.grad[i, j]) == pytest.approx(fd, rel=1e-5)
    z = _normal(10, 2, 9).requires_grad_(True)
    mmd2(z, z.detach(), bandwidth=1.0).backward()  # zero distances keep a finite gradient
    assert torch.isfinite(z.grad).all()


def test_median_bandwidth_is_the_median_pairwise_distance():
    pts = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # distances 3, 4, 5
    assert median_bandwidth(pts[:2], pts[2:]) == pytest.approx(4.0)
    assert median_bandwidth(torch.zeros(5, 2)) == 1.0
    big = _normal(5000, 2, 3)
    # x − x' ~ N(0, 2 I₂): its norm is √2 · χ₂, whose median is √(2 ln 2)
    assert median_bandwidth(big) == pytest.approx(math.sqrt(2) * math.sqrt(2 * math.log(2)), rel=0.05)


def test_default_features_are_fixed_and_see_rotations():
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(64, 1, 8, 8, generator=g) * torch.linspace(0, 1, 8)  # left-dark gradient
    f1, f2 = default_features(imgs), RandomConvFeatures(1, seed=0)(imgs)
    assert f1.shape == (64, 16 * 4 * 4) and torch.equal(f1, f2)
    assert not torch.equal(RandomConvFeatures(1, seed=1)(imgs), f1)
    same = distribution_gap(imgs[:32], imgs[32:])
    rotated = distribution_gap(imgs[:32], torch.rot90(imgs[32:], 1, dims=(2, 3)))
    assert rotated > 10 * abs(same)
    assert torch.equal(default_features(torch.ones(4, 3)), torch.ones(4, 3))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mmd2(torch.zeros(3, 2), torch.zeros(3, 4)), "same feature size"),
        (lambda: mmd2(torch.zeros(1, 2), torch.zeros(3, 2)), "at least 2 samples"),
        (lambda: gaussian_kernel(torch.zeros(2, 2), torch.zeros(2, 2), 0.0), "bandwidth must be"),
        (lambda: mmd2(torch.zeros(0, 2), torch.zeros(3, 2), unbiased=False), "non-empty"),
        (lambda: RandomConvFeatures(1)(torch.zeros(2, 3, 8, 8)), r"expects images \(n, 1, H, W\)"),
        (lambda: RandomConvFeatures(0), "in_channels must be"),
    ],
)
def test_bad_input_names_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_class_conditional_mmd_sees_exchanged_class_appearances_the_pooled_mmd_does_not():
    from simsearch.mmd import class_conditional_mmd2

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 2
    centres = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    x = centres[labels] + 0.3 * torch.randn(400, 2, generator=g)
    y = centres[labels] + 0.3 * torch.randn(400, 2, generator=g)
    # the same pooled distribution, each class drawn where the other class is: only p(φ | c) differs
    assert float(mmd2(x, y, bandwidth=1.0)) == pytest.approx(0.0, abs=0.01)
    same = float(class_conditional_mmd2(x, labels, y, labels, bandwidth=1.0))
    swapped = float(class_conditional_mmd2(x, labels, y, 1 - labels, bandwidth=1.0))
    assert same == pytest.approx(0.0, abs=0.01)
    closed = gaussian_mmd2_closed_form(centres[0], 0.3, centres[1], 0.3, bandwidth=1.0)
    assert swapped == pytest.approx(closed, rel=0.1)  # each class's gap is the two Gaussians' MMD²
    # the mean over classes of per-class MMD² with one shared median bandwidth
    h = median_bandwidth(x, y)
    manual = sum(float(mmd2(x[labels == c], y[labels == 1 - c], h)) for c in (0, 1)) / 2
    assert float(class_conditional_mmd2(x, labels, y, 1 - labels)) == pytest.approx(manual, rel=1e-5)
    with pytest.raises(ValueError, match="y_labels must be a tensor of 400 labels"):
        class_conditional_mmd2(x, labels, y, labels[:10])
    with pytest.raises(ValueError, match="no class has at least 2 samples on both sides"):
        class_conditional_mmd2(x, labels, y[:1], labels[:1])
