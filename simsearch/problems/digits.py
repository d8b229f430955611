"""``digits`` — a stroke renderer for handwritten digits, and two sim-to-real problems.

The real data are scikit-learn's ``load_digits`` (the UCI optical recognition set: 1,797 images
from 43 writers). UCI's preprocessing (NIST's programs) size-normalised each scanned digit into a
32 × 32 *binary* bitmap and counted the set pixels in each non-overlapping 4 × 4 block, giving
8 × 8 images with intensities 0–16. :class:`DigitStrokeSimulator` follows the same process:

1. a glyph — one of a few handwriting variants of the class (e.g. a '1' with or without flag and
   base, a '7' with or without a crossbar), each a few strokes (polylines in [-1, 1]²) — with every
   control point displaced (``jitter``), smoothly warped (``warp``: the waist of a '3' or an '8'
   moves up or down, the top grows wider than the bottom, the glyph bows), made narrower or
   wider (``aspect``) and sheared (``slant``);
2. size-normalised as UCI's are: the ink's bounding box is centred and scaled, keeping the aspect
   ratio, until its longer side spans the 32-pixel box (ink touching the top and bottom edges);
   and stroke-width normalised: UCI's digits hold about the same ink (≈ 20 full cells of 64)
   whatever the class, so the pen half-width is ``width · INK_LENGTH / L`` for strokes of length
   ``L`` in the box (the ratio clipped to ``INK_RANGE``): a '1' gets a thick pen, an '8' a thin one;
3. then scaled (``scale``), rotated (``rotation``) and translated (``shift``) about the centre;
4. drawn as a binary bitmap at 32 × 32 with that round pen, counted over 4 × 4 blocks to 0–16,
   plus optional pixel ``noise``.

Drawing is vectorised over the batch. The pen is a Gaussian stamp placed at ``Q`` points spaced
evenly (spacing ``h``) along the strokes; a Gaussian is separable, so the stamp sum is one batched
matrix product, ``ink = G_yᵀ G_x`` with ``G_x[k, q, j] = exp(-(u_j - x_kq)² / 2σ²)``. Along a
straight stroke the sum is ``(σ√(2π) / h) · exp(-d² / 2σ²)`` at distance ``d`` (for ``h`` ≲ σ),
so the pixel is set where ``ink ≥ (σ√(2π) / h) · exp(-w² / 2σ²)``: exactly the pixels within
``w`` of the stroke. Where a stroke ends or turns sharply (a *tip*) the stamps along it fall
short of that; one more stamp on the tip, of weight ``σ√(2π) / h``, sets the pen's disk of radius
``w`` there by itself: ends and corners are round, as with a real pen (σ ≤ w / 3 keeps the
overlap of the two small: the edge moves out by at most 7 %).

Per-sample latents (ancestral order): the class (Categorical over ``class_logits``), the glyph
variant (uniform), stroke width (log-normal around ψ), slant (normal), aspect (log-normal),
rotation (normal), scale (log-normal), translation (normal), a displacement of every control
point (``jitter``), the warp's coefficients (normal) and pixel noise.

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
from simsearch.simulator import SimulatedBatch, Simulator, one_torch_thread

__all__ = [
    "DigitStrokeSimulator",
    "GLYPHS",
    "make_problem",
    "make_rotated_problem",
    "real_digits",
]

Stroke = list[tuple[float, float]]
Glyph = tuple[Stroke, ...]


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, k: int) -> Stroke:
    """``k`` segments of an elliptic arc, angles in degrees, y pointing down (0° right, 90° down)."""
    angles = np.radians(np.linspace(a0, a1, k + 1))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


#: Handwriting variants of each digit, each a few strokes: polylines, x to the right, y down.
#: Only their shapes matter: every drawing is size-normalised (step 2 of the module docstring).
GLYPHS: tuple[tuple[Glyph, ...], ...] = (
    (  # 0: an oval; one drawn with an overshoot at the top
        (_arc(0.0, 0.0, 0.55, 1.0, 0, 360, 16),),
        (_arc(0.0, 0.0, 0.45, 1.0, 240, 630, 16),),
    ),
    (  # 1: a bare bar; with a flag, a long flag; with a flag and a base
        ([(0.05, -1.0), (-0.05, 1.0)],),
        ([(-0.35, -0.55), (0.0, -1.0), (0.0, 1.0)],),
        ([(-0.55, -0.1), (0.1, -1.0), (0.1, 1.0)],),
        ([(-0.35, -0.55), (0.0, -1.0), (0.0, 1.0)], [(-0.35, 1.0), (0.35, 1.0)]),
    ),
    (  # 2: arc, diagonal and a flat or a rising base
        (_arc(0.0, -0.45, 0.5, 0.55, 190, 400, 8) + [(-0.55, 1.0), (0.6, 1.0)],),
        (_arc(0.0, -0.45, 0.5, 0.55, 190, 400, 8) + [(-0.5, 0.95), (-0.1, 0.85), (0.6, 0.95)],),
    ),
    (  # 3: two bowls; a flat top and a bowl
        (_arc(0.0, -0.5, 0.45, 0.5, 200, 450, 8), _arc(0.0, 0.5, 0.5, 0.5, -90, 160, 8)),
        ([(-0.45, -1.0), (0.45, -1.0), (-0.05, -0.1)] + _arc(0.0, 0.45, 0.5, 0.55, -100, 160, 8),),
    ),
    (  # 4: open (a stem crossing the bar), and closed (a diagonal to the stem)
        ([(-0.05, -1.0), (-0.6, 0.35), (0.55, 0.35)], [(0.35, -0.25), (0.05, 1.0)]),
        ([(0.25, 1.0), (0.25, -1.0), (-0.6, 0.35), (0.6, 0.35)],),
    ),
    (  # 5: flag, stem and bowl
        ([(0.5, -1.0), (-0.4, -1.0), (-0.45, -0.1)] + _arc(0.0, 0.42, 0.5, 0.55, -120, 150, 9),),
    ),
    (  # 6: a stem into a loop
        ([(0.35, -1.0), (-0.3, -0.3)] + _arc(0.0, 0.42, 0.48, 0.55, 200, 560, 12),),
    ),
    (  # 7: plain; crossed; with a hook at the top left
        ([(-0.55, -1.0), (0.55, -1.0), (-0.1, 1.0)],),
        ([(-0.5, -1.0), (0.5, -1.0), (-0.1, 1.0)], [(-0.5, 0.0), (0.5, 0.0)]),
        ([(-0.55, -0.7), (-0.55, -1.0), (0.55, -1.0), (0.0, 1.0)],),
    ),
    (  # 8: two loops; a wide top loop over a small one; an S closed by a diagonal to its start
        (_arc(0.0, -0.5, 0.42, 0.5, 90, 450, 10), _arc(0.0, 0.48, 0.5, 0.52, -90, 270, 10)),
        (_arc(0.0, -0.45, 0.45, 0.55, 90, 450, 10), _arc(0.0, 0.55, 0.3, 0.45, -90, 270, 8)),
        ([(0.4, -0.8), (0.15, -1.0), (-0.2, -0.98), (-0.4, -0.75), (-0.3, -0.35), (0.0, -0.05),
          (0.35, 0.3), (0.45, 0.65), (0.25, 0.95), (-0.15, 0.98), (-0.42, 0.7), (-0.3, 0.3),
          (0.4, -0.8)],),
    ),
    (  # 9: a loop and a straight or a curled tail
        (_arc(0.0, -0.55, 0.5, 0.45, 0, 360, 12) + [(0.4, 1.0)],),
        (_arc(0.0, -0.55, 0.5, 0.45, 0, 360, 12) + _arc(0.0, 0.4, 0.5, 0.6, -10, 170, 6),),
    ),
)

HI_RES, LOW_RES = 32, 8
N_STAMPS = 64
#: Stroke-width normalisation (step 2): the pen half-width is ``width · (INK_LENGTH / L)`` for a
#: digit whose strokes are ``L`` long in the normalised box, the ratio clipped to ``INK_RANGE``.
INK_LENGTH, INK_RANGE = 4.5, (0.6, 1.8)
#: A control point where a stroke turns by more than this (degrees) is a tip, as are stroke ends.
TIP_TURN = 45.0
#: Glyph-variant slots per class (a multiple of every class's variant count, so each class's
#: variants are equally likely).
N_VARIANTS = math.lcm(*(len(variants) for variants in GLYPHS))
_SQRT_2PI = math.sqrt(2 * math.pi)


def _stamp_rows(glyph: Glyph, n_points: int) -> tuple[list[list[float]], np.ndarray, list[bool], list[int]]:
    """The glyph's control points (zero-padded to ``n_points``); the ``(Q, n_points)`` matrix placing
    ``N_STAMPS`` stamps evenly along its strokes (as linear combinations of control points); for
    each pair of consecutive stamps whether they lie on the same stroke; and its tips: the
    control points that end a stroke or turn it by more than ``TIP_TURN`` degrees."""
    points = [list(p) for stroke in glyph for p in stroke] + [[0.0, 0.0]] * n_points
    segments, tips, i = [], [], 0  # segments: (index of A, index of B, length, stroke)
    for k, stroke in enumerate(glyph):
        segments += [(i + j, i + j + 1, math.dist(stroke[j], stroke[j + 1]), k)
                     for j in range(len(stroke) - 1)]
        turns = [_turn(stroke[j - 1], stroke[j], stroke[j + 1]) for j in range(1, len(stroke) - 1)]
        closed = math.dist(stroke[0], stroke[-1]) < 1e-6
        tips += [] if closed else [i, i + len(stroke) - 1]
        tips += [i + j for j, turn in enumerate(turns, start=1) if turn > TIP_TURN]
        i += len(stroke)
    total = sum(seg[2] for seg in segments)
    ends = np.cumsum([seg[2] for seg in segments])
    stamps = np.zeros((N_STAMPS, n_points))
    stroke_of = []
    for q, s in enumerate((np.arange(N_STAMPS) + 0.5) * total / N_STAMPS):
        k = min(int(np.searchsorted(ends, s)), len(segments) - 1)
        a, b, length, stroke_id = segments[k]
        t = 1.0 - (ends[k] - s) / length
        stamps[q, a] += 1.0 - t
        stamps[q, b] += t
        stroke_of.append(stroke_id)
    same_stroke = [stroke_of[q] == stroke_of[q + 1] for q in range(N_STAMPS - 1)]
    return points[:n_points], stamps, same_stroke, tips


def _turn(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> float:
    """How far a polyline turns at ``b``, in degrees (0 going straight on)."""
    angle = math.atan2(c[1] - b[1], c[0] - b[0]) - math.atan2(b[1] - a[1], b[0] - a[0])
    return abs(math.degrees((angle + math.pi) % (2 * math.pi) - math.pi))


@lru_cache(maxsize=1)
def _glyph_tables() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per glyph ``class · V + slot`` (slot ``v`` holds variant ``v mod (the class's variant
    count)``): control points ``(10 V, P, 2)``; transposed stamp matrices ``(10 V, P, Q + E)``,
    the ``Q`` stamps along the strokes followed by the ``E`` tips (padded with the first control
    point); same-stroke flags of consecutive stamps ``(10 V, Q - 1)``; and the tip mask
    ``(10 V, E)`` (0 for padding)."""
    n_points = max(sum(len(s) for s in glyph) for variants in GLYPHS for glyph in variants)
    flat = [_stamp_rows(variants[v % len(variants)], n_points)
            for variants in GLYPHS for v in range(N_VARIANTS)]
    n_tips = max(len(r[3]) for r in flat)
    eye = np.eye(n_points)
    stamps = [np.concatenate([r[1], eye[r[3] + [0] * (n_tips - len(r[3]))]]).T for r in flat]
    return (
        torch.tensor([r[0] for r in flat], dtype=torch.float32),
        torch.tensor(np.array(stamps), dtype=torch.float32),
        torch.tensor([r[2] for r in flat], dtype=torch.float32),
        torch.tensor([[1.0] * len(r[3]) + [0.0] * (n_tips - len(r[3])) for r in flat]),
    )


class DigitStrokeSimulator(Simulator):
    """Handwritten digits from strokes, drawn the way UCI made ``load_digits``: 8 × 8 images with
    intensities 0–16 (set pixels of a 32 × 32 binary bitmap per 4 × 4 block), labels 0–9.

    ψ (bounds; default): ``width`` pen half-width of a digit of average stroke length
    (0.04–0.35; 0.17; longer digits get a thinner pen, shorter ones a thicker one, see
    ``INK_LENGTH``), ``slant`` / ``slant_std`` shear (−0.8–0.8; 0 / 0.01–0.5; 0.15),
    ``aspect`` glyph width relative to its design, log-normal with std 0.2 (0.4–1.6; 1),
    ``rotation`` / ``rotation_std`` degrees counter-clockwise (−180–180; 0 / 0.5–45; 5), ``scale``
    size relative to UCI's normalised size (0.4–1.3; 1), ``shift`` (2,) mean translation and
    ``shift_std`` (−0.5–0.5; 0 / 0.005–0.4; 0.03), ``jitter`` control-point displacement std
    (0.005–0.3; 0.1), ``warp`` std of the smooth warp's three coefficients (0.005–0.5; 0.15),
    ``noise`` pixel noise std on the 0–16 scale (0.01–3; 0.3),
    ``class_logits`` (10,) (−3–3; 0). Lengths are in units of the half-image (the image spans
    [-1, 1]); ``jitter`` in units of the glyph (2 high), before normalisation.
    """

    def __init__(self) -> None:
        super().__init__(
            [
                Parameter("width", 0.04, 0.35, 0.17, doc="pen half-width of a digit of average length"),
                Parameter("slant", -0.8, 0.8, 0.0, doc="mean shear (x -= slant · y, y down)"),
                Parameter("slant_std", 0.01, 0.5, 0.15, doc="std of the shear"),
                Parameter("aspect", 0.4, 1.6, 1.0,
                          doc="median width of the glyph relative to its design (height kept)"),
                Parameter("rotation", -180.0, 180.0, 0.0,
                          doc="mean rotation, degrees counter-clockwise"),
                Parameter("rotation_std", 0.5, 45.0, 5.0, doc="std of the rotation, degrees"),
                Parameter("scale", 0.4, 1.3, 1.0, doc="median size relative to UCI's normalised size"),
                Parameter("shift", -0.5, 0.5, 0.0, shape=(2,), doc="mean translation (x, y)"),
                Parameter("shift_std", 0.005, 0.4, 0.03, doc="std of the translation"),
                Parameter("jitter", 0.005, 0.3, 0.1, doc="std of each control point's displacement"),
                Parameter("warp", 0.005, 0.5, 0.15,
                          doc="std of the smooth warp: waist height, top/bottom width, bow"),
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
            "variant": Categorical(logits=torch.zeros(n, N_VARIANTS), **fast),
            "width": LogNormal(per_sample(psi["width"].log()), 0.15, **fast),
            "slant": Normal(per_sample(psi["slant"]), per_sample(psi["slant_std"]), **fast),
            "aspect": LogNormal(per_sample(psi["aspect"].log()), 0.2, **fast),
            "rotation": Normal(per_sample(psi["rotation"]), per_sample(psi["rotation_std"]), **fast),
            "scale": LogNormal(per_sample(psi["scale"].log()), 0.05, **fast),
            "shift": Normal(per_sample(psi["shift"], 2), per_sample(psi["shift_std"], 2), **fast),
            "jitter": Normal(torch.zeros(n, *points.shape[1:]), per_sample(psi["jitter"], 1, 1),
                             **fast),
            "warp": Normal(torch.zeros(n, 3), per_sample(psi["warp"], 1), **fast),
            "noise": Normal(torch.zeros(n, LOW_RES, LOW_RES), per_sample(psi["noise"], 1, 1),
                            **fast),
        }

    def _draw(self, psi: Psi, n: int, generator: torch.Generator) -> SimulatedBatch:
        """Sampling and rendering on one intra-op thread (:func:`one_torch_thread`): at batch
        1,000 on a loaded 2-core machine, simulating with torch's default two threads was 3.4×
        slower than with one (BENCHMARKS.md, issue 3, the 08:19 run)."""
        with one_torch_thread():
            return super()._draw(psi, n, generator)

    def render(self, latents):
        """Block counts of the :meth:`draw` bitmaps, on one intra-op thread."""
        with one_torch_thread():
            label = latents["label"].long()
            blocks = _block_matrix()
            counts = blocks @ self.draw(latents) @ blocks.T  # set pixels per 4 × 4 block
            x = (counts + latents["noise"]).clamp_(0.0, 16.0).round_()
            return x.unsqueeze(1), label

    def draw(self, latents) -> torch.Tensor:
        """The 32 × 32 binary bitmap (0. / 1.), shape ``(n, 32, 32)``, before block counting:
        the pixels within the pen half-width of the strokes of :meth:`geometry` (module
        docstring: Gaussian stamps along the strokes, and a stamp of the line's weight at each
        tip, whose level set alone is the pen's disk there: round ends and corners)."""
        centres, _, tip_mask, width, spacing = self.geometry(latents)
        # σ ≥ 0.75 h keeps the stamp sum flat along a stroke (ripple < 1e-5); σ ≤ w / 3 where
        # that allows, so that a stroke's own stamps add little beyond its tips
        sigma = torch.maximum(width / 3, 0.75 * spacing)
        line = sigma * _SQRT_2PI / spacing  # the sum of unit stamps along a straight stroke
        inv = (1.0 / (sigma * math.sqrt(2.0))).view(-1, 1, 1)
        gx, gy = (_gauss((_pixel_centres() - c.unsqueeze(2)).mul_(inv)) for c in centres.unbind(1))
        gx[:, N_STAMPS:].mul_((tip_mask * line.unsqueeze(1)).unsqueeze(2))
        ink = torch.bmm(gy.transpose(1, 2), gx)
        threshold = line * torch.exp(-(width**2) / (2 * sigma**2))
        return (ink >= threshold.view(-1, 1, 1)).float()

    def geometry(self, latents) -> tuple[torch.Tensor, ...]:
        """Steps 1–3 of the module docstring: the stamp centres ``(n, 2, Q + E)`` (x right, y
        down, in the image's [-1, 1]² box; ``Q`` along the strokes, then ``E`` tips: stroke ends
        and sharp corners), whether consecutive stamps lie on one stroke ``(n, Q - 1)``, the
        tip mask ``(n, E)`` (0: padding), the pen half-width ``(n,)`` and the stamp spacing
        ``(n,)``."""
        points, stamps, same_stroke, tip_mask = _glyph_tables()
        glyph = latents["label"].long() * N_VARIANTS + latents["variant"].long()
        same_stroke, tip_mask = same_stroke.index_select(0, glyph), tip_mask.index_select(0, glyph)
        ctrl = points.index_select(0, glyph) + latents["jitter"]
        x, y = torch.bmm(ctrl.transpose(1, 2), stamps.index_select(0, glyph)).unbind(1)
        # smooth warp, fixing the top and bottom lines: y += a (1 - y²) moves the waist up or down,
        # x += b x y widens the top and narrows the bottom or back, x += c (1 - y²) bows the glyph
        waist, taper, bow = latents["warp"].unsqueeze(2).unbind(1)
        bulge = 1.0 - y * y
        x, y = x + taper * x * y + bow * bulge, y + waist * bulge
        x = x * latents["aspect"].unsqueeze(1) - latents["slant"].unsqueeze(1) * y
        # size normalisation: the bounding box centred, its longer side spanning the box
        lo_x, hi_x = x.aminmax(dim=1)
        lo_y, hi_y = y.aminmax(dim=1)
        unit = 2.0 / torch.maximum(hi_x - lo_x, hi_y - lo_y).clamp(min=1e-3)
        steps = torch.hypot(x[:, :N_STAMPS].diff(dim=1), y[:, :N_STAMPS].diff(dim=1))
        length = unit * (steps * same_stroke).sum(dim=1)
        # stroke-width normalisation: UCI's digits hold about equal ink whatever their length
        width = latents["width"] * (INK_LENGTH / length).clamp(*INK_RANGE)
        factor = latents["scale"] * (1.0 - width)
        x = (x - (lo_x + hi_x).unsqueeze(1) / 2) * (factor * unit).unsqueeze(1)
        y = (y - (lo_y + hi_y).unsqueeze(1) / 2) * (factor * unit).unsqueeze(1)
        theta = torch.deg2rad(latents["rotation"]).unsqueeze(1)
        cos, sin = theta.cos(), theta.sin()
        shift = latents["shift"].unsqueeze(1)
        x, y = cos * x + sin * y + shift[..., 0], cos * y - sin * x + shift[..., 1]
        centres = torch.stack([x, y], dim=1)
        return centres, same_stroke, tip_mask, width, length * factor / N_STAMPS


@lru_cache(maxsize=1)
def _block_matrix() -> torch.Tensor:
    """``(8, 32)`` 0/1 matrix summing 4 consecutive pixels: ``B X Bᵀ`` counts per 4 × 4 block."""
    return torch.repeat_interleave(torch.eye(LOW_RES), HI_RES // LOW_RES, dim=1)


@lru_cache(maxsize=1)
def _pixel_centres() -> torch.Tensor:
    """Centres of the 32 pixels along an axis, in [-1, 1], shape ``(1, 1, 32)``."""
    return ((torch.arange(HI_RES, dtype=torch.float32) + 0.5) / HI_RES * 2 - 1).view(1, 1, -1)


def _gauss(z: torch.Tensor) -> torch.Tensor:
    """``exp(-z²)`` in place, with ``z²`` capped at 30: far stamps add ≤ 1e-13 and products of
    two values stay normal floats (subnormal arithmetic is two orders of magnitude slower)."""
    return z.square_().clamp_(max=30.0).neg_().exp_()


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
