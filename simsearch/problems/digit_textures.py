"""``digits-rot-textures`` — Meta-Sim's MNIST grammar (§4.1) on scikit-learn's digits.

Meta-Sim's first experiment has no appearance gap: "The probabilistic grammar samples ... one digit
texture (image) from the MNIST dataset (which has an equal probability for any digit), and then
samples a rotation and location for the digit. The renderer transforms the texture based on the
sampled transformation and pastes it onto a canvas." The target data are the same kind of digits,
rotated by 90°. :class:`DigitTextureSimulator` is that grammar with the real UCI digits of the
``train`` split of :func:`simsearch.problems.digits.real_digits` as textures (upright), so that the
only gap to the ``digits-rot`` validation and test digits (disjoint, rotated 90°) is the content one
Meta-Sim targets: rotation (and location).

Latents: ``texture`` (uniform over the textures; its label is the class), ``rotation`` in degrees
counter-clockwise ~ N(ψ.rotation, ψ.rotation_std²), ``shift`` (x, y) in half-image units ~
N(ψ.shift, ψ.shift_std²). The renderer rotates and translates the 8 × 8 texture with bilinear
sampling (zeros outside); at exactly +90° it equals ``torch.rot90`` of the texture.

>>> sim = DigitTextureSimulator()
>>> batch = sim.simulate(sim.init_psi(), n=4, seed=0)
>>> batch.x.shape, batch.y.dtype
(torch.Size([4, 1, 8, 8]), torch.int64)
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Normal

from simsearch.parameters import Parameter, Psi
from simsearch.problems._base import Problem
from simsearch.problems.digits import make_rotated_problem, real_digits
from simsearch.simulator import Simulator

__all__ = ["DigitTextureSimulator", "make_problem"]


class DigitTextureSimulator(Simulator):
    """Real digit textures, rotated and translated: ψ = rotation mean / std, shift mean / std."""

    def __init__(self, textures: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        x, y = textures if textures is not None else real_digits(rotate=False)["train"]
        if x.dim() != 4 or x.shape[1] != 1 or len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"textures must be (x (n, 1, H, W), y (n,)), got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        self.textures, self.labels = x.float(), y.long()
        super().__init__(
            [
                Parameter("rotation", -180.0, 180.0, 0.0, doc="mean rotation, degrees (counter-clockwise)"),
                Parameter("rotation_std", 0.5, 45.0, 3.0, doc="std of the rotation, degrees"),
                Parameter("shift", -0.5, 0.5, 0.0, shape=(2,), doc="mean translation (x, y)"),
                Parameter("shift_std", 0.005, 0.4, 0.03, doc="std of the translation"),
            ]
        )

    def distributions(self, psi: Psi, n: int):
        return {
            "texture": Categorical(logits=torch.zeros(n, len(self.textures))),
            "rotation": Normal(psi["rotation"].expand(n), psi["rotation_std"].expand(n)),
            "shift": Normal(psi["shift"].expand(n, 2), psi["shift_std"].expand(n, 2)),
        }

    def render(self, latents):
        idx = latents["texture"].long()
        theta = torch.deg2rad(latents["rotation"].float())
        cos, sin = theta.cos(), theta.sin()
        shift = latents["shift"].float()
        # output pixel p samples the texture at R(-θ)(p − shift); y points down, so a visually
        # counter-clockwise rotation by θ maps (x, y) ↦ (x cos θ + y sin θ, −x sin θ + y cos θ)
        sx, sy = shift[:, 0], shift[:, 1]
        matrix = torch.stack(
            [
                torch.stack([cos, -sin, -(cos * sx - sin * sy)], dim=1),
                torch.stack([sin, cos, -(sin * sx + cos * sy)], dim=1),
            ],
            dim=1,
        )
        images = self.textures[idx]
        grid = F.affine_grid(matrix, list(images.shape), align_corners=False)
        x = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return x, self.labels[idx]


def make_problem() -> Problem:
    """``digits-rot-textures``: Meta-Sim §4.1's grammar (real upright textures) vs rotated real digits."""
    rotated = make_rotated_problem()
    return dataclasses.replace(
        rotated,
        name="digits-rot-textures",
        description="Meta-Sim §4.1 grammar: real digit textures upright vs real digits rotated 90°",
        simulator=DigitTextureSimulator(),
    )
