"""The ``digits`` stroke simulator and the ``digits`` / ``digits-rot`` sim-to-real problems."""

from __future__ import annotations

import math

import pytest
import torch

from simsearch.problems import get
from simsearch.problems.digits import HI_RES, STROKES, DigitStrokeSimulator, real_digits


@pytest.fixture(scope="module")
def sim() -> DigitStrokeSimulator:
    return DigitStrokeSimulator()


def _psi(sim, **changes):
    psi = sim.init_psi()
    psi.update({k: torch.as_tensor(v, dtype=torch.float32) for k, v in changes.items()})
    return psi


def _clean_latents(sim, labels, **changes):
    """Latents of undistorted digits: no jitter, slant, rotation, shift or noise, scale 1."""
    n = len(labels)
    latents = {
        k: torch.zeros_like(v[:1]).expand(n, *v.shape[1:]).clone()
        for k, v in sim.simulate(sim.init_psi(), 1, seed=0).latents.items()
    }
    latents.update(label=torch.as_tensor(labels), width=torch.full((n,), 0.15),
                   blur=torch.full((n,), 0.06), scale=torch.ones(n))
    latents.update({k: torch.as_tensor(v, dtype=torch.float32).expand(n) for k, v in changes.items()})
    return latents


def test_images_look_like_load_digits(sim):
    batch = sim.simulate(sim.init_psi(), 200, seed=0)
    assert batch.x.shape == (200, 1, 8, 8) and batch.y.dtype == torch.int64
    assert torch.equal(batch.x, batch.x.round()) and batch.x.min() >= 0 and batch.x.max() <= 16
    assert set(batch.y.tolist()) == set(range(10))
    assert (batch.x.amax(dim=(1, 2, 3)) >= 13).float().mean() > 0.95  # strokes fill cells


def test_pen_cross_section_is_the_closed_form(sim):
    """Across the long vertical stroke of a '1' the 32 × 32 intensity is
    clamp(exp((w² − d²) / 2σ²), 0, 1), d the distance to the stroke's centre line."""
    latents = _clean_latents(sim, [1])
    ink = sim.draw(latents)[0]
    u = (torch.arange(HI_RES, dtype=torch.float32) + 0.5) / HI_RES * 2 - 1
    x_line = STROKES[1][0][1][0]
    expected = ((0.15**2 - (u - x_line) ** 2) / (2 * 0.06**2)).exp().clamp(0, 1)
    rows = (u > -0.3) & (u < 0.5)
    torch.testing.assert_close(ink[rows], expected.expand(int(rows.sum()), -1), atol=2e-3, rtol=0)


def test_eight_by_eight_cells_are_area_sums_of_the_drawing(sim):
    latents = _clean_latents(sim, list(range(10)), slant=0.2, rotation=15.0)
    x, y = sim.render(latents)
    cells = sim.draw(latents).reshape(10, 8, 4, 8, 4).sum(dim=(2, 4))
    torch.testing.assert_close(x[:, 0], cells.clamp(0, 16).round())
    assert torch.equal(y, torch.arange(10))


def test_rotation_by_90_degrees_is_rot90(sim):
    """The rotation latent turns the digit counter-clockwise, as ``torch.rot90`` (and the rotated
    real digits of ``digits-rot``) do."""
    upright = sim.draw(_clean_latents(sim, list(range(10))))
    turned = sim.draw(_clean_latents(sim, list(range(10)), rotation=90.0))
    torch.testing.assert_close(turned, torch.rot90(upright, 1, dims=(1, 2)), atol=1e-4, rtol=0)


def test_same_seed_same_batch(sim):
    a, b, c = (sim.simulate(sim.init_psi(), 30, seed=s) for s in (3, 3, 4))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_log_prob_finite_and_differentiable_in_every_component(sim):
    batch = sim.simulate(sim.init_psi(), 64, seed=1)
    psi = {k: v.clone().requires_grad_(True) for k, v in sim.init_psi().items()}
    lp = sim.log_prob(batch.latents, psi)
    assert lp.shape == (64,) and torch.isfinite(lp).all()
    lp.sum().backward()
    for name, value in psi.items():
        assert torch.isfinite(value.grad).all(), name
        assert (value.grad != 0).all(), name


def _centroids(x):
    w = x[:, 0] + 1e-9
    rows, cols = (torch.arange(d, dtype=torch.float32) for d in w.shape[1:])
    total = w.sum(dim=(1, 2))
    return (w.sum(dim=1) * cols).sum(dim=1) / total, (w.sum(dim=2) * rows).sum(dim=1) / total


def _lean(x):
    """x-centroid of the top half minus that of the bottom half (positive: leaning right)."""
    return _centroids(x[:, :, :4])[0] - _centroids(x[:, :, 4:])[0]


def _axis_angle(x):
    """Principal-axis angle (degrees, counter-clockwise from vertical) of each image's ink."""
    w = x[:, 0] + 1e-9
    grid = torch.arange(8, dtype=torch.float32)
    cx, cy = _centroids(x)
    dx = grid.view(1, 1, 8) - cx.view(-1, 1, 1)
    dy = grid.view(1, 8, 1) - cy.view(-1, 1, 1)
    sxx, syy, sxy = ((w * d).sum(dim=(1, 2)) for d in (dx * dx, dy * dy, dx * dy))
    return torch.rad2deg(0.5 * torch.atan2(2 * sxy, syy - sxx))


def test_each_psi_component_moves_its_statistic(sim):
    n = 300
    ones = {"class_logits": torch.tensor([-3.0] + [3.0] + [-3.0] * 8)}  # mostly '1's

    def x_of(**changes):
        return sim.simulate(_psi(sim, **changes), n, seed=21).x

    base = x_of()
    assert x_of(width=0.3).mean() > 1.5 * base.mean()
    soft = sim.draw(sim.simulate(_psi(sim, blur=0.25), n, seed=21).latents)
    sharp = sim.draw(sim.simulate(_psi(sim, blur=0.04), n, seed=21).latents)
    grey = [((d > 0.05) & (d < 0.95)).float().mean() for d in (soft, sharp)]
    assert grey[0] > 2 * grey[1]
    assert _lean(x_of(slant=0.6)).mean() > _lean(base).mean() + 1.0
    assert _lean(x_of(slant_std=0.5)).std() > 2 * _lean(base).std()
    upright = _axis_angle(x_of(**ones))
    assert abs(float(_axis_angle(x_of(rotation=30.0, **ones)).median() - upright.median()) - 30) < 10
    assert _axis_angle(x_of(rotation_std=30.0, **ones)).std() > 3 * upright.std()
    assert x_of(scale=1.2).mean() > 1.15 * base.mean()  # longer strokes, more ink
    assert _centroids(x_of(shift=[0.4, 0.0]))[0].mean() > _centroids(base)[0].mean() + 1.0
    assert _centroids(x_of(shift=[0.0, 0.4]))[1].mean() > _centroids(base)[1].mean() + 1.0
    assert _centroids(x_of(shift_std=0.3))[0].std() > 3 * _centroids(base)[0].std()
    spread = [x_of(jitter=j, **ones).std(dim=0).mean() for j in (0.005, 0.25)]
    assert spread[1] > 1.3 * spread[0]
    assert (x_of(noise=3.0) > 0).float().mean() > (base > 0).float().mean() + 0.1
    for i in range(10):
        logits = torch.zeros(10)
        logits[i] = 2.0
        freq = (sim.simulate(_psi(sim, class_logits=logits), n, seed=21).y == i).float().mean()
        assert freq > 0.3, i  # 1 / 10 at the default


def test_bad_input_is_named(sim):
    with pytest.raises(ValueError, match="width"):
        sim.simulate(_psi(sim, width=1.0), 4, seed=0)
    with pytest.raises(ValueError, match="rotation"):
        sim.simulate(_psi(sim, rotation=270.0), 4, seed=0)
    with pytest.raises(ValueError, match="n"):
        sim.simulate(sim.init_psi(), 0, seed=0)


def test_real_splits_are_disjoint_and_rotated_consistently():
    plain, turned = real_digits(), real_digits(rotate=True)
    sizes = {k: len(v[0]) for k, v in plain.items()}
    assert sizes == {"val": 300, "test": 500, "train": 997}
    flat = {k: {tuple(x.flatten().tolist()) for x in v[0]} for k, v in plain.items()}
    assert not flat["val"] & flat["test"]  # no image of the test split is in the validation split
    for k in plain:
        assert torch.equal(turned[k][0], torch.rot90(plain[k][0], 1, dims=(2, 3)))
        assert torch.equal(turned[k][1], plain[k][1])


@pytest.mark.parametrize("name", ["digits", "digits-rot"])
def test_problem_wiring(name):
    import optuna

    problem = get(name)
    assert problem.real_psi is None and "oracle" in problem.reference_sources()
    x, y = problem.reference_sources()["oracle"](50, 0)
    assert x.shape == (50, 1, 8, 8) and y.shape == (50,)
    objective = problem.objective(n_samples=100, epochs=1, seed=0)
    study = optuna.create_study(direction=objective.direction)
    study.optimize(objective, n_trials=1)
    assert 0.0 <= study.trials[0].value <= 1.0
    assert math.isclose(problem.simulator.init_psi()["rotation"].item(), 0.0)
