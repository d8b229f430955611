"""``digits-rot-textures``: Meta-Sim §4.1's grammar — real digit textures rotated and moved."""

import pytest
import torch

from simsearch.problems.digit_textures import DigitTextureSimulator


@pytest.fixture(scope="module")
def sim():
    g = torch.Generator().manual_seed(0)
    return DigitTextureSimulator((torch.rand(20, 1, 8, 8, generator=g) * 16, torch.arange(20) % 10))


def _latents(n, rotation, shift):
    return {"texture": torch.arange(n), "rotation": torch.full((n,), float(rotation)),
            "shift": torch.tensor([shift] * n, dtype=torch.float32)}


def test_render_rotates_counter_clockwise_like_rot90_and_keeps_the_label(sim):
    x, y = sim.render(_latents(20, 90.0, [0.0, 0.0]))
    assert torch.allclose(x, torch.rot90(sim.textures, 1, dims=(2, 3)), atol=1e-4)
    assert torch.equal(y, torch.arange(20) % 10)
    x0, _ = sim.render(_latents(20, 0.0, [0.0, 0.0]))
    assert torch.allclose(x0, sim.textures, atol=1e-5)


def test_a_quarter_half_image_shift_moves_the_digit_one_pixel(sim):
    right, _ = sim.render(_latents(20, 0.0, [0.25, 0.0]))  # 8 pixels span 2 half-image units
    assert torch.allclose(right[..., 1:], sim.textures[..., :-1], atol=1e-5)
    assert torch.equal(right[..., 0], torch.zeros_like(right[..., 0]))
    down, _ = sim.render(_latents(20, 0.0, [0.0, 0.25]))
    assert torch.allclose(down[..., 1:, :], sim.textures[..., :-1, :], atol=1e-5)


def test_rotation_mean_in_psi_sets_the_rendered_rotation(sim):
    psi = sim.init_psi()
    psi["rotation"], psi["rotation_std"] = torch.tensor(90.0), torch.tensor(0.5)
    batch = sim.simulate(psi, 200, seed=1)
    assert float(batch.latents["rotation"].mean()) == pytest.approx(90.0, abs=0.2)
    logp = sim.log_prob(batch.latents, {k: v.requires_grad_(True) for k, v in psi.items()})
    logp.sum().backward()
    assert torch.isfinite(logp).all()
    with pytest.raises(ValueError, match="textures must be"):
        DigitTextureSimulator((torch.zeros(3, 8, 8), torch.zeros(3)))
