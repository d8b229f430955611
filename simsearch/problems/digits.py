"""``digits`` — a stroke renderer for handwritten digits, and two sim-to-real problems.

The real data are scikit-learn's ``load_digits`` (the UCI optical recognition set: 1,797 images
from 43 writers). UCI drew each digit into a 32 × 32 bitmap and counted the set pixels in each 4 × 4
block, giving 8 × 8 images with intensities 0–16. :class:`DigitStrokeSimulator` imitates that
pipeline: each digit is a few strokes (polylines of control points in a box [-1, 1]²), drawn with a
round pen at 32 × 32 and area-summed over 4 × 4 blocks to 8 × 8 values in 0–16.

Drawing is vectorised over the batch: the pen is a Gaussian stamp placed at ``Q`` points spaced
evenly along the strokes, and because a Gaussian is separable the image is one batched matrix
product, ``ink = G_yᵀ G_x`` with ``G_x[k, q, j] = exp(-(u_j - x_kq)² / 2σ²)``. A stamp sum along a
line has the cross-section ``exp(-d² / 2σ²)`` (after dividing by its line density), and the pixel
intensity is ``clamp(exp(w² / 2σ²) · ink, 0, 1)``: full ink within distance ``w`` (the stroke
``width``) of the stroke, falling off over ``σ`` (the ``blur``).

Per-sample latents (ancestral order): the class (Categorical over ``class_logits``), stroke width
and blur (log-normal around ψ), slant and rotation (normal, mean and std in ψ), scale (log-normal),
translation (normal), a displacement of every control point (``jitter``) and pixel noise.

Problems (sim-to-real, LTS §4.5 in spirit; Meta-Sim §4.1, Table 1 for the rotation gap):

* ``digits`` — validation: a fixed subset of the real digits; test: a disjoint subset never used in
  a search; reference ``oracle``: the same model trained on the remaining real digits.
* ``digits-rot`` — as ``digits`` with every real digit rotated by 90° (counter-clockwise); the
  simulator's default is upright, its ψ holds the rotation mean.

>>> sim = DigitStrokeSimulator()
>>> batch = sim.simulate(sim.init_psi(), n=5, seed=0)
>>> batch.x.shape, batch.y.dtype, float(batch.x.max()) <= 16.0
(torch.Size([5, 1, 8, 8]), torch.int64, True)
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch.distributions import Categorical, LogNormal, Normal

from simsearch.parameters import Parameter, Psi
from simsearch.problems._base import Problem
from simsearch.simulator import Simulator

__all__ = [
    "DigitStrokeSimulator",
    "STROKES",
    "make_problem",
    "make_rotated_problem",
    "real_digits",
]

Stroke = list[tuple[float, float]]


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, k: int) -> Stroke:
    """``k`` segments of an elliptic arc, angles in degrees, y pointing down (0° right, 90° down)."""
    angles = np.radians(np.linspace(a0, a1, k + 1))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


#: Strokes of each digit: polylines in [-1, 1]², x to the right, y down.
STROKES: tuple[tuple[Stroke, ...], ...] = (
    (_arc(0.0, 0.0, 0.5, 0.85, 0, 360, 12),),
    ([(-0.3, -0.6), (0.1, -0.9), (0.1, 0.9)],),
    (_arc(0.0, -0.45, 0.45, 0.42, 200, 380, 6) + [(-0.5, 0.9), (0.55, 0.9)],),
    (_arc(0.0, -0.47, 0.42, 0.4, 200, 450, 7), _arc(0.0, 0.4, 0.48, 0.48, -90, 160, 8)),
    ([(0.25, 0.9), (0.25, -0.9), (-0.55, 0.35), (0.55, 0.35)],),
    ([(0.5, -0.85), (-0.35, -0.85), (-0.42, -0.1)] + _arc(0.0, 0.35, 0.48, 0.47, -125, 150, 8),),
    ([(0.35, -0.9), (-0.3, -0.25)] + _arc(0.0, 0.4, 0.45, 0.48, 200, 560, 10),),
    ([(-0.55, -0.85), (0.55, -0.85), (-0.1, 0.9)],),
    (_arc(0.0, -0.48, 0.38, 0.4, 90, 450, 9), _arc(0.0, 0.42, 0.48, 0.46, -90, 270, 10)),
    (_arc(0.0, -0.42, 0.45, 0.45, 0, 360, 10), [(0.45, -0.42), (0.35, 0.9)]),
)

HI_RES, LOW_RES = 32, 8
N_STAMPS = 96
_SQRT_2PI = math.sqrt(2 * math.pi)


@lru_cache(maxsize=1)
def _glyph_tables() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Control points ``(10, P, 2)`` (zero-padded), the stamp matrix ``(10, Q, P)`` that places
    ``N_STAMPS`` stamps evenly along each digit's strokes as linear combinations of its control
    points, and the stamp spacing ``(10,)``."""
    n_points = max(sum(len(s) for s in strokes) for strokes in STROKES)
    points = torch.zeros(10, n_points, 2)
    stamps = torch.zeros(10, N_STAMPS, n_points)
    spacing = torch.zeros(10)
    for d, strokes in enumerate(STROKES):
        segments, i = [], 0  # (index of A, index of B, length)
        for stroke in strokes:
            for j, (x, y) in enumerate(stroke):
                points[d, i + j] = torch.tensor([x, y])
            segments += [
                (i + j, i + j + 1, math.dist(stroke[j], stroke[j + 1])) for j in range(len(stroke) - 1)
            ]
            i += len(stroke)
        total = sum(length for _, _, length in segments)
        spacing[d] = total / N_STAMPS
        ends = np.cumsum([length for _, _, length in segments])
        for q, s in enumerate((np.arange(N_STAMPS) + 0.5) * total / N_STAMPS):
            k = min(int(np.searchsorted(ends, s)), len(segments) - 1)
            a, b, length = segments[k]
            t = 1.0 - (ends[k] - s) / length
            stamps[d, q, a] += 1.0 - t
            stamps[d, q, b] += t
    return points, stamps, spacing


class DigitStrokeSimulator(Simulator):
    """Handwritten digits from strokes: 8 × 8 images with intensities 0–16, labels 0–9.

    ψ (bounds; default): ``width`` stroke half-width (0.04–0.35; 0.12), ``blur`` edge softness
    (0.04–0.3; 0.06), ``slant`` / ``slant_std`` shear (−0.8–0.8; 0 / 0.01–0.5; 0.05),
    ``rotation`` / ``rotation_std`` degrees counter-clockwise (−180–180; 0 / 0.5–45; 3),
    ``scale`` (0.4–1.3; 0.8), ``shift`` (2,) mean translation and ``shift_std`` (−0.5–0.5; 0 /
    0.005–0.4; 0.03), ``jitter`` control-point displacement std (0.005–0.3; 0.03), ``noise``
    pixel noise std on the 0–16 scale (0.01–3; 0.3), ``class_logits`` (10,) (−3–3; 0). Lengths
    are in units of the half-image (the image spans [-1, 1]).
    """

    def __init__(self) -> None:
        super().__init__(
            [
                Parameter("width", 0.04, 0.35, 0.12, doc="stroke half-width"),
                Parameter("blur", 0.04, 0.3, 0.06, doc="softness of the stroke edges"),
                Parameter("slant", -0.8, 0.8, 0.0, doc="mean shear (x += slant · height)"),
                Parameter("slant_std", 0.01, 0.5, 0.05, doc="std of the shear"),
                Parameter("rotation", -180.0, 180.0, 0.0,
                          doc="mean rotation, degrees counter-clockwise"),
                Parameter("rotation_std", 0.5, 45.0, 3.0, doc="std of the rotation, degrees"),
                Parameter("scale", 0.4, 1.3, 0.8, doc="median size of the digit"),
                Parameter("shift", -0.5, 0.5, 0.0, shape=(2,), doc="mean translation (x, y)"),
                Parameter("shift_std", 0.005, 0.4, 0.03, doc="std of the translation"),
                Parameter("jitter", 0.005, 0.3, 0.03, doc="std of each control point's displacement"),
                Parameter("noise", 0.01, 3.0, 0.3, doc="pixel noise std (0–16 scale)"),
                Parameter("class_logits", -3.0, 3.0, 0.0, shape=(10,), doc="digit class logits"),
            ]
        )

    def distributions(self, psi: Psi, n: int):
        points = _glyph_tables()[0]

        def per_sample(value: torch.Tensor, *shape: int) -> torch.Tensor:
            return value.expand(n, *shape) if shape else value.expand(n)

        fast = {"validate_args": False}  # ψ is checked against its bounds by simulate()
        return {
            "label": Categorical(logits=psi["class_logits"].expand(n, -1), **fast),
            "width": LogNormal(per_sample(psi["width"].log()), 0.15, **fast),
            "blur": LogNormal(per_sample(psi["blur"].log()), 0.15, **fast),
            "slant": Normal(per_sample(psi["slant"]), per_sample(psi["slant_std"]), **fast),
            "rotation": Normal(per_sample(psi["rotation"]), per_sample(psi["rotation_std"]), **fast),
            "scale": LogNormal(per_sample(psi["scale"].log()), 0.08, **fast),
            "shift": Normal(per_sample(psi["shift"], 2), per_sample(psi["shift_std"], 2), **fast),
            "jitter": Normal(torch.zeros(n, *points.shape[1:]), per_sample(psi["jitter"], 1, 1),
                             **fast),
            "noise": Normal(torch.zeros(n, LOW_RES, LOW_RES), per_sample(psi["noise"], 1, 1),
                            **fast),
        }

    def render(self, latents):
        label = latents["label"].long()
        ink = self.draw(latents)
        block = HI_RES // LOW_RES
        counts = ink.reshape(-1, LOW_RES, block, LOW_RES, block).sum(dim=(2, 4))
        x = (counts + latents["noise"]).clamp(0.0, 16.0).round()
        return x.unsqueeze(1), label

    def draw(self, latents) -> torch.Tensor:
        """The 32 × 32 pen drawing in [0, 1], shape ``(n, 32, 32)``, before area-downsampling."""
        points, stamps, spacing = _glyph_tables()
        label = latents["label"].long()
        ctrl = points[label] + latents["jitter"]
        x, y = ctrl[..., 0], ctrl[..., 1]
        x = x - latents["slant"].unsqueeze(1) * y
        theta = torch.deg2rad(latents["rotation"]).unsqueeze(1)
        cos, sin = theta.cos(), theta.sin()
        scale = latents["scale"].unsqueeze(1)
        x, y = scale * (cos * x + sin * y), scale * (cos * y - sin * x)
        ctrl = torch.stack([x, y], dim=-1) + latents["shift"].unsqueeze(1)
        pen = torch.bmm(stamps[label], ctrl)  # (n, Q, 2) stamp centres
        sigma = latents["blur"].clamp(min=0.03).view(-1, 1, 1)
        grid = ((torch.arange(HI_RES, dtype=torch.float32) + 0.5) / HI_RES * 2 - 1).view(1, 1, -1)
        gx, gy = (_gauss((grid - pen[..., i : i + 1]) ** 2 / (2 * sigma**2)) for i in (0, 1))
        ink = torch.bmm(gy.transpose(1, 2), gx)
        width = latents["width"].view(-1, 1, 1)
        density = spacing[label].view(-1, 1, 1) * scale.view(-1, 1, 1) / (_SQRT_2PI * sigma)
        gain = torch.exp(width**2 / (2 * sigma**2)).clamp(max=1e30)
        return (ink * density * gain).clamp(0.0, 1.0)


def _gauss(z: torch.Tensor) -> torch.Tensor:
    """``exp(-z)``, set to 0 where it is below e⁻⁴⁰: products of two values stay normal floats
    (subnormal arithmetic is two orders of magnitude slower on CPUs)."""
    return torch.exp(-z.clamp(max=40.0)).masked_fill_(z >= 40.0, 0.0)


# -- real data --------------------------------------------------------------------------------
_SPLIT_SEED = 20_190_503
N_VAL, N_TEST = 300, 500


def real_digits(rotate: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's digits split once, by a fixed permutation, into ``val`` (300), ``test``
    (500) and ``train`` (the remaining 997): x float ``(n, 1, 8, 8)`` in 0–16, y int64.
    With ``rotate=True`` every image is rotated by 90° counter-clockwise."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.int64)
    if rotate:
        x = torch.rot90(x, 1, dims=(2, 3)).contiguous()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    parts = {"val": order[:N_VAL], "test": order[N_VAL : N_VAL + N_TEST],
             "train": order[N_VAL + N_TEST :]}
    return {name: (x[idx], y[idx]) for name, idx in parts.items()}


def _cnn():
    from lightning_modules import MainTaskModule

    net = torch.nn.Sequential(
        _Scale(1 / 16),  # 0–16 intensities to 0–1
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10),
    )
    return MainTaskModule(net, loss="cross_entropy", metric="accuracy", lr=3e-3)


class _Scale(torch.nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def _make_problem(name: str, description: str, rotate: bool) -> Problem:
    real = real_digits(rotate)
    train_x, train_y = real["train"]

    def oracle(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` digits drawn with replacement from the real training remainder."""
        idx = torch.randint(len(train_x), (n,), generator=torch.Generator().manual_seed(seed))
        return train_x[idx], train_y[idx]

    return Problem(
        name=name,
        description=description,
        simulator=DigitStrokeSimulator(),
        val=real["val"],
        test=real["test"],
        models={"cnn": _cnn},
        n_samples=1000,
        epochs=4,
        batch_size=100,
        eval_n_samples=2000,
        eval_epochs=6,
        references={"oracle": oracle},
    )


def make_problem() -> Problem:
    """``digits``: train on strokes only, score on real UCI digits (accuracy)."""
    return _make_problem(
        "digits", "sim-to-real: classify real UCI digits (sklearn) from rendered strokes", False
    )


def make_rotated_problem() -> Problem:
    """``digits-rot``: the real digits rotated by 90°, the simulator upright (Meta-Sim §4.1)."""
    return _make_problem(
        "digits-rot", "Meta-Sim §4.1 gap: real digits rotated 90°, simulator starts upright", True
    )
