"""The ``digits`` stroke simulator and the ``digits`` / ``digits-rot`` sim-to-real problems."""

from __future__ import annotations

import math

import pytest
import torch

from simsearch.problems import get
from simsearch.problems.digits import GLYPHS, HI_RES, N_VARIANTS, DigitStrokeSimulator, real_digits


@pytest.fixture(scope="module")
def sim() -> DigitStrokeSimulator:
    return DigitStrokeSimulator()


def _psi(sim, **changes):
    psi = sim.init_psi()
    psi.update({k: torch.as_tensor(v, dtype=torch.float32) for k, v in changes.items()})
    return psi


def _clean_latents(sim, labels, variants=None, **changes):
    """Latents of undistorted digits: no jitter, slant, rotation, shift or noise, scale and
    aspect 1."""
    n = len(labels)
    latents = {
        k: torch.zeros_like(v[:1]).expand(n, *v.shape[1:]).clone()
        for k, v in sim.simulate(sim.init_psi(), 1, seed=0).latents.items()
    }
    latents.update(label=torch.as_tensor(labels), width=torch.full((n,), 0.15),
                   scale=torch.ones(n), aspect=torch.ones(n))
    if variants is not None:
        latents["variant"] = torch.as_tensor(variants)
    latents.update({k: torch.as_tensor(v, dtype=torch.float32).expand(n) for k, v in changes.items()})
    return latents


def _every_glyph():
    """(labels, variant slots) naming every handwriting variant of every class once."""
    pairs = [(d, v) for d, variants in enumerate(GLYPHS) for v in range(len(variants))]
    return [d for d, _ in pairs], [v for _, v in pairs]


def test_images_look_like_load_digits(sim):
    batch = sim.simulate(sim.init_psi(), 200, seed=0)
    assert batch.x.shape == (200, 1, 8, 8) and batch.y.dtype == torch.int64
    assert torch.equal(batch.x, batch.x.round()) and batch.x.min() >= 0 and batch.x.max() <= 16
    assert set(batch.y.tolist()) == set(range(10))
    assert (batch.x.amax(dim=(1, 2, 3)) >= 13).float().mean() > 0.95  # strokes fill cells


def _segment_distance(points, a, b):
    """Distance of each point ``(m, 2)`` to the nearest of the segments ``a[i]``–``b[i]``."""
    ab = b - a
    t = (((points[:, None] - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)).clamp(0, 1)
    return (points[:, None] - (a + t[..., None] * ab)).norm(dim=-1).min(dim=1).values


def test_bitmap_is_the_pen_tube_around_the_strokes(sim):
    """Ground truth: a round pen of half-width w sets exactly the pixels within w of the strokes
    (here the polylines through the stamp centres, and the tips: stroke ends and sharp corners).
    The rasteriser sets every pixel nearer than w - half a pixel, and none farther than
    1.08 w + half a pixel (near a tip its disk and the stroke's own stamps add up: the edge can
    move out to √(1 + (2/9) ln 2) w ≈ 1.074 w at σ = w / 3)."""
    labels, variants = _every_glyph()
    latents = _clean_latents(sim, labels, variants, slant=0.2, rotation=20.0)
    noise = torch.Generator().manual_seed(0)
    latents["jitter"] = 0.05 * torch.randn(latents["jitter"].shape, generator=noise)
    bitmap = sim.draw(latents)
    centres, same_stroke, tip_mask, width, _ = sim.geometry(latents)
    centres = centres.transpose(1, 2)  # (n, Q + E, 2)
    n_stamps = same_stroke.shape[1] + 1
    u = (torch.arange(HI_RES, dtype=torch.float32) + 0.5) / HI_RES * 2 - 1
    pixels = torch.stack(torch.meshgrid(u, u, indexing="xy"), dim=-1).reshape(-1, 2)  # (x, y)
    half_pixel = 1.0 / HI_RES
    for k in range(len(labels)):
        keep = same_stroke[k].bool()
        stamps, tips = centres[k, :n_stamps], centres[k, n_stamps:][tip_mask[k].bool()]
        d = _segment_distance(pixels, stamps[:-1][keep], stamps[1:][keep])
        if len(tips):
            d = torch.minimum(d, torch.cdist(pixels, tips).min(dim=1).values)
        inside, outside = d < width[k] - half_pixel, d > 1.08 * width[k] + half_pixel
        on = bitmap[k].reshape(-1)
        assert on[inside].min() == 1.0 and on[outside].max() == 0.0, (labels[k], variants[k])
        assert inside.sum() > 0.5 * on.sum()  # most of the ink is checked


def test_digits_are_size_normalised_like_uci(sim):
    """At scale 1, unrotated, every glyph's ink spans the full height (or the full width, when
    wider than tall) of the 32 × 32 box and is centred horizontally."""
    labels, variants = _every_glyph()
    bitmap = sim.draw(_clean_latents(sim, labels, variants, slant=0.3))
    rows, cols = bitmap.amax(dim=2), bitmap.amax(dim=1)
    spans = torch.maximum(rows.sum(1), cols.sum(1))
    assert (spans == HI_RES).all(), spans
    first = cols.argmax(dim=1)
    last = HI_RES - 1 - cols.flip(1).argmax(dim=1)
    assert ((first - (HI_RES - 1 - last)).abs() <= 1).all()


def test_stroke_width_normalisation_evens_out_ink(sim):
    """UCI's digits hold about equal ink per class; so do the rendered ones, although a bare '1'
    is a third as long as an '8' (without the normalisation its ink would be about a third)."""
    labels, variants = _every_glyph()
    ink = sim.draw(_clean_latents(sim, labels, variants)).sum(dim=(1, 2))
    assert ink.max() < 1.7 * ink.min(), ink


def test_eight_by_eight_cells_are_area_sums_of_the_drawing(sim):
    latents = _clean_latents(sim, list(range(10)), slant=0.2, rotation=15.0)
    x, y = sim.render(latents)
    cells = sim.draw(latents).reshape(10, 8, 4, 8, 4).sum(dim=(2, 4))
    torch.testing.assert_close(x[:, 0], cells.clamp(0, 16).round())
    assert torch.equal(y, torch.arange(10))


def test_rotation_by_90_degrees_is_rot90(sim):
    """The rotation latent turns the digit counter-clockwise, as ``torch.rot90`` (and the rotated
    real digits of ``digits-rot``) do; rotation comes after normalisation, as for the real ones.
    (A pixel centre lying on the pen's edge may flip by rounding: at most 0.2 % of them.)"""
    labels, variants = _every_glyph()
    upright = sim.draw(_clean_latents(sim, labels, variants))
    turned = sim.draw(_clean_latents(sim, labels, variants, rotation=90.0))
    assert (turned != torch.rot90(upright, 1, dims=(1, 2))).float().mean() < 0.002


def test_every_variant_slot_draws_its_classs_variant(sim):
    """Slot ``v`` draws variant ``v mod k`` of a class with ``k`` variants: the same bitmap as
    slot ``v mod k``, and different variants differ."""
    for d, variants in enumerate(GLYPHS):
        bitmaps = sim.draw(_clean_latents(sim, [d] * N_VARIANTS, list(range(N_VARIANTS))))
        for v in range(N_VARIANTS):
            assert torch.equal(bitmaps[v], bitmaps[v % len(variants)]), (d, v)
        for v in range(1, len(variants)):
            assert not torch.equal(bitmaps[v], bitmaps[0]), (d, v)


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
    assert x_of(width=0.3).mean() > 1.5 * x_of(width=0.1).mean()
    assert _lean(x_of(slant=0.6)).mean() > _lean(base).mean() + 1.0
    inked_columns = [(x_of(aspect=a)[:, 0] > 2).any(dim=1).float().sum(dim=1).mean() for a in (0.6, 1.5)]
    assert inked_columns[1] > inked_columns[0] + 1.0
    assert _lean(x_of(slant_std=0.5)).std() > 2 * _lean(base).std()
    upright = _axis_angle(x_of(**ones))
    assert abs(float(_axis_angle(x_of(rotation=30.0, **ones)).median() - upright.median()) - 30) < 10
    steady = {"slant_std": 0.01, "jitter": 0.005, **ones}
    assert (_axis_angle(x_of(rotation_std=30.0, **steady)).std()
            > 2 * _axis_angle(x_of(rotation_std=0.5, **steady)).std())
    assert x_of(scale=0.6).mean() < 0.8 * base.mean()  # shorter strokes, less ink
    small = _centroids(x_of(scale=0.7))  # digits fill the box at scale 1: make room to move
    assert _centroids(x_of(shift=[0.4, 0.0], scale=0.7))[0].mean() > small[0].mean() + 1.0
    assert _centroids(x_of(shift=[0.0, 0.4], scale=0.7))[1].mean() > small[1].mean() + 1.0
    assert _centroids(x_of(shift_std=0.3, scale=0.7))[0].std() > 3 * small[0].std()
    spread = [x_of(jitter=j, warp=0.005, **ones).std(dim=0).mean() for j in (0.005, 0.25)]
    assert spread[1] > 1.3 * spread[0]
    heights = [_centroids(x_of(warp=w, jitter=0.005))[1].std() for w in (0.005, 0.5)]
    assert heights[1] > 1.25 * heights[0]  # the waist moves the ink up and down
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


def test_sampling_and_rendering_run_on_one_thread_and_restore_torch_setting(monkeypatch):
    sim = DigitStrokeSimulator()
    seen = []
    draw, distributions = sim.draw, sim.distributions
    monkeypatch.setattr(sim, "draw", lambda *a: seen.append(("draw", torch.get_num_threads()))
                        or draw(*a))
    monkeypatch.setattr(sim, "distributions", lambda *a: seen.append(
        ("distributions", torch.get_num_threads())) or distributions(*a))
    psi = sim.init_psi()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = sim.simulate(psi, 50, seed=3)
        assert torch.get_num_threads() == 2
        assert seen == [("distributions", 1), ("draw", 1)]
        torch.set_num_threads(1)
        one = sim.simulate(psi, 50, seed=3)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one.x, two.x) and torch.equal(one.y, two.y)
