"""Sample grids: what a simulator generates at a given ψ, with its labels (``simsearch show``).

A grid shows ``n`` simulated samples, each titled with its label: the class, the per-type counts,
or — for per-pixel labels — the mask drawn to the right of the image. With ``with_val=True`` the
first ``n`` validation samples of the problem follow, so the simulated data can be compared with
the data the search is scored on.

ψ can be given as a mapping or resolved from a name by :func:`resolve_psi`: ``default`` (the
simulator's declared initial ψ), ``real`` (the problem's ψ_real), ``best`` (the
``best_params.json`` that ``simsearch run`` writes) or the path of a JSON file of Optuna-style
names (``{"p_car": 0.7, "car_logits[0]": 1.5, ...}``; a whole vector may be given as a list under
its parameter name).

>>> from simsearch import problems
>>> problem = problems.get("gmm2d")
>>> fig = sample_grid(problem, resolve_psi(problem, "default"), n=4)
>>> len(fig.axes)
1
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from simsearch.parameters import ParameterSpace, Psi
from simsearch.problems import Problem

__all__ = ["psi_from_mapping", "resolve_psi", "sample_grid"]


def psi_from_mapping(space: ParameterSpace, values: Mapping[str, object]) -> Psi:
    """ψ from flat Optuna names (``name`` / ``name[i]``) or whole parameters given as lists.

    Unlike :meth:`ParameterSpace.from_params`, every name must be known and every component given;
    the values must lie inside the bounds. Errors name the offending entries.
    """
    flat = set(space.flat_names())
    unknown = sorted(k for k in values if k not in flat and k not in space.names)
    params: dict[str, float] = {}
    for key, value in values.items():
        if key in flat:
            params[key] = value
        elif key in space.names:
            param = space[key]
            array = np.asarray(value, dtype=np.float64)
            if array.shape != param.shape:
                raise ValueError(
                    f"parameter {key!r}: expected shape {param.shape}, got {array.shape}"
                )
            params.update(zip(param.component_names(), array.ravel().tolist(), strict=True))
    missing = [n for n in space.flat_names() if n not in params]
    if unknown or missing:
        raise ValueError(
            f"ψ names: unknown {unknown}, missing {missing}; expected {space.flat_names()}"
        )
    bad = [k for k, v in params.items() if isinstance(v, bool) or not isinstance(v, int | float)]
    if bad:
        raise ValueError(f"ψ values must be numbers; not numbers: {bad}")
    psi = space.from_params(params)
    space.check(psi)
    return psi


def resolve_psi(problem: Problem, spec: str | Mapping[str, object], run_dir: str | Path = "out/run") -> Psi:
    """ψ from ``default`` / ``real`` / ``best`` / a JSON file path, or from a mapping of names."""
    space = problem.simulator.space
    if isinstance(spec, Mapping):
        return psi_from_mapping(space, spec)
    if spec == "default":
        return problem.simulator.init_psi()
    if spec == "real":
        if problem.real_psi is None:
            raise ValueError(
                f"--params real: problem {problem.name!r} has no ψ_real (its validation data are "
                "not simulated); use default, best or a JSON file"
            )
        return {k: v.clone() for k, v in problem.real_psi.items()}
    path = Path(run_dir) / "best_params.json" if spec == "best" else Path(spec)
    if not path.is_file():
        raise ValueError(
            f"--params: expected default, real, best or an existing JSON file, got {spec!r} "
            f"({path} does not exist)"
        )
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"--params: {path} is not valid JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise ValueError(f"--params: {path} must hold a JSON object of ψ names, got {type(values).__name__}")
    return psi_from_mapping(space, values)


def sample_grid(
    problem: Problem,
    psi: Psi,
    n: int = 16,
    seed: int = 0,
    with_val: bool = False,
    columns: int = 8,
    out: str | Path | None = None,
    title: str | None = None,
):
    """A matplotlib figure of ``n`` samples simulated from ψ (and ``n`` validation samples).

    Image inputs ``(C, H, W)`` are drawn as pictures; other inputs (e.g. 2-D points) as a scatter
    plot coloured by label. Written to ``out`` (PNG) when given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (samples to show) must be an int >= 1, got {n!r}")
    batch = problem.simulator.simulate(psi, n, seed)
    sets = [(title or f"{problem.name}: simulated", batch.x, batch.y)]
    if with_val:
        xv, yv = problem.val
        sets.append((f"{problem.name}: validation data", xv[:n], yv[:n]))
    if batch.x.dim() != 4:
        fig, ax = plt.subplots(figsize=(5, 5))
        for name, x, y in sets:
            ax.scatter(x[:, 0], x[:, 1], c=y, s=12, cmap="coolwarm", label=name)
        ax.set_title(sets[0][0])
    else:
        rows = [-(-len(x) // columns) for _, x, _ in sets]
        fig = plt.figure(figsize=(1.6 * columns, 1.9 * sum(rows) + 0.4 * len(sets)))
        subfigs = np.atleast_1d(fig.subfigures(len(sets), 1, height_ratios=rows))
        vmax = float(max(x.max() for _, x, _ in sets))
        for sub, (name, x, y), r in zip(subfigs, sets, rows, strict=True):
            sub.suptitle(name, fontsize=11)
            axes = np.atleast_1d(sub.subplots(r, columns)).ravel()
            for i, ax in enumerate(axes):
                ax.axis("off")
                if i < len(x):
                    _draw_sample(ax, x[i], y[i], vmax)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    return fig


def _draw_sample(ax, x: torch.Tensor, y: torch.Tensor, vmax: float) -> None:
    image = x.detach().float().cpu()
    if y.dim() >= 2:  # a per-pixel label: the mask next to the image
        mask = y.detach().float().cpu().reshape(1, *image.shape[1:]) * image.max()
        image = torch.cat([image, mask.expand_as(image)], dim=2)
        label = "image | mask"
    elif y.dim() == 1:
        label = " ".join(str(int(round(float(v)))) for v in y)
    else:
        label = str(int(y))
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray_r", vmin=0, vmax=vmax, interpolation="nearest")
    else:
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    ax.set_title(label, fontsize=8)
