"""The report of a comparison: ``report.md``, every trial as CSV / JSON, and PNG plots.

Written into the comparison's output folder by :func:`write_report`:

* ``report.md`` — the table in the format of AutoSimulate's Tables 2–3 (Method | Time | Images |
  Val | Test, mean ± std over seeds), the problem's reference points, the settings and the plots;
* ``trials.csv`` — one row per trial (sampler, seed, state, value, best so far, images and seconds
  so far, phase timings, ψ components); ``results.json`` — settings, table, studies, references
  and trials;
* ``reward_vs_images.png`` / ``reward_vs_time.png`` — best validation reward so far against the
  images generated / wall seconds spent, one line per sampler: the mean over seeds with a band of
  ± one standard deviation;
* ``psi_trajectories.png`` — every ψ component, scaled to its bounds, over the trials of seed 0 of
  each sampler (Learning to Simulate, Fig. 7);
* ``samples_initial.png`` / ``samples_best.png`` — simulated samples at the simulator's declared
  initial ψ and at the best validation trial's ψ of all studies (``simsearch.show.sample_grid``;
  image problems also show validation samples).

>>> from simsearch.report import format_table
>>> print(format_table([{"method": "tpe", "time_s": {"mean": 3.0, "std": 0.5, "n": 2},
...                      "images": {"mean": 1500.0, "std": 0.0, "n": 2},
...                      "val": {"mean": 0.9, "std": 0.01, "n": 2}, "test": None}]))
| Method | Time (s) | Images | Val | Test |
|---|---|---|---|---|
| tpe | 3.0 ± 0.5 | 1500 ± 0 | 0.9000 ± 0.0100 | – |
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simsearch.compare import CompareResult

__all__ = ["format_table", "write_report"]

_FORMATS = {"time_s": "{:.1f}", "images": "{:.0f}", "val": "{:.4f}", "test": "{:.4f}"}


def _cell(stat: dict[str, float] | None, fmt: str) -> str:
    if stat is None:
        return "–"
    return f"{fmt.format(stat['mean'])} ± {fmt.format(stat['std'])}"


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of result rows (``time_s``, ``images``, ``val``, ``test`` as mean ± std)."""
    columns = list(columns or ["time_s", "images", "val", "test"])
    titles = {"time_s": "Time (s)", "images": "Images", "val": "Val", "test": "Test"}
    lines = ["| Method | " + " | ".join(titles[c] for c in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        cells = [_cell(row.get(c), _FORMATS[c]) for c in columns]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(result: CompareResult) -> list[Path]:
    """Write the report files into ``result.out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    out = result.out
    written = [_write_csv(result, out / "trials.csv"), _write_json(result, out / "results.json")]
    for axis, name in (("cumulative_images", "reward_vs_images.png"),
                       ("cumulative_seconds", "reward_vs_time.png")):
        written.append(_plot_curves(result, axis, out / name))
    written.append(_plot_psi(result, out / "psi_trajectories.png"))
    written.extend(_sample_grids(result, out))
    written.append(_write_markdown(result, out / "report.md", [p for p in written if p.suffix == ".png"]))
    return written


# -- files -------------------------------------------------------------------------------------
def _write_csv(result: CompareResult, path: Path) -> Path:
    names = sorted({k for r in result.trials for k in r["params"]})
    fields = [k for k in (result.trials[0] if result.trials else {}) if k != "params"]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields + names)
        for r in result.trials:
            writer.writerow([r[k] for k in fields] + [r["params"].get(n) for n in names])
    return path


def _write_json(result: CompareResult, path: Path) -> Path:
    data = {"settings": result.settings.to_json(), "table": result.table,
            "references": result.references, "studies": result.studies, "trials": result.trials}
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def _write_markdown(result: CompareResult, path: Path, pngs: list[Path]) -> Path:
    s = result.settings
    budget = f"{s.trials} trials" if s.trials is not None else f"{s.budget_images} images"
    lines = [
        f"# Sampler comparison on `{s.problem}`", "",
        f"{len(s.samplers)} samplers × {s.seeds} seeds, budget {budget} per study; every trial "
        f"trains a fresh model on M = {s.n_samples} simulated samples for ξ = {s.epochs} epochs "
        "(accumulated samplers fine-tune one model). Mean ± std over seeds.", "",
        "- **Time**: wall seconds spent up to and including the best validation trial (sum of the "
        "trials' durations).",
        "- **Images**: images generated up to and including the best validation trial.",
        "- **Val**: the best validation reward found in the search (AutoSimulate: the best "
        "fresh-model reward of the trials that record one, `fresh_every`).",
        f"- **Test**: a fresh model trained on {s.eval_n_samples} samples drawn at the best ψ for "
        f"{s.eval_epochs} epochs, scored once on the held-out test set.", "",
        format_table(result.table), "",
    ]
    if result.references:
        lines += ["Reference points (no search; trained and scored like the final evaluation):", "",
                  format_table(result.references, ["val", "test"]), ""]
    lines += [f"![{p.stem}]({p.name})" for p in pngs]
    lines += ["", f"Storage: `{s.url(result.out)}`; every trial: `trials.csv`, `results.json`."]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- plots -------------------------------------------------------------------------------------
def _curve(records: list[dict[str, Any]], axis: str, grid: np.ndarray) -> np.ndarray:
    """Best-so-far reward of one study as a step function of ``axis`` on ``grid`` (NaN before
    the first completed trial)."""
    xs = np.array([r[axis] for r in records], dtype=float)
    ys = np.array([np.nan if r["best_so_far"] is None else r["best_so_far"] for r in records])
    idx = np.searchsorted(xs, grid, side="right") - 1
    return np.where(idx >= 0, ys[np.clip(idx, 0, None)], np.nan)


def _plot_curves(result: CompareResult, axis: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    top = max((r[axis] for r in result.trials), default=1.0) or 1.0
    grid = np.linspace(0.0, top, 400)
    for i, sampler in enumerate(result.settings.samplers):
        runs = [[r for r in result.trials if r["sampler"] == sampler and r["seed"] == seed]
                for seed in range(result.settings.seeds)]
        curves = np.array([_curve(r, axis, grid) for r in runs if r])
        if not len(curves):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a seed without a completed trial yet
            mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
        color = f"C{i % 10}"
        ax.plot(grid, mean, color=color, label=f"{sampler} ({len(curves)} seeds)", drawstyle="steps-post")
        ax.fill_between(grid, mean - std, mean + std, color=color, alpha=0.2, step="post", linewidth=0)
    xlabel = "images generated" if axis == "cumulative_images" else "wall time (s)"
    ax.set_xlabel(xlabel)
    ax.set_ylabel("best validation reward so far")
    ax.set_title(f"{result.settings.problem}: best validation reward vs {xlabel} (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_psi(result: CompareResult, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from simsearch import problems

    space = problems.get(result.settings.problem).simulator.space
    dists = space.search_space()
    groups = {n: p.name for p in space for n in p.component_names()}
    colors = {p.name: f"C{i % 10}" for i, p in enumerate(space)}
    samplers = result.settings.samplers
    cols = min(3, len(samplers))
    rows = -(-len(samplers) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False,
                             sharey=True)
    for ax, sampler in zip(axes.ravel(), samplers, strict=False):
        recs = [r for r in result.trials if r["sampler"] == sampler and r["seed"] == 0]
        for name, d in dists.items():
            pts = [(r["trial"], (r["params"][name] - d.low) / (d.high - d.low))
                   for r in recs if name in r["params"]]
            if pts:
                t, v = zip(*pts, strict=True)
                ax.plot(t, v, color=colors[groups[name]], alpha=0.6, linewidth=0.9)
        ax.set_title(f"{sampler} (seed 0)", fontsize=10)
        ax.set_xlabel("trial")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(samplers):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("ψ component (scaled to bounds)")
    handles = [plt.Line2D([], [], color=c, label=n) for n, c in colors.items()]
    fig.legend(handles=handles, loc="upper right", fontsize=8)
    fig.suptitle(f"{result.settings.problem}: ψ over trials (LTS Fig. 7)")
    fig.tight_layout(rect=(0, 0, 0.9, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _sample_grids(result: CompareResult, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from simsearch import problems
    from simsearch.show import sample_grid

    problem = problems.get(result.settings.problem)
    best = _best_study(result)
    grids = [("samples_initial.png", problem.simulator.init_psi(), "initial ψ (declared default)")]
    if best is not None:
        params = next(r["params"] for r in result.trials if r["sampler"] == best["sampler"]
                      and r["seed"] == best["seed"] and r["trial"] == best["best_trial"])
        grids.append(("samples_best.png", problem.simulator.space.from_params(params),
                      f"best ψ: {best['sampler']} seed {best['seed']} trial {best['best_trial']} "
                      f"(val {best['val']:.4f})"))
    paths = []
    for name, psi, title in grids:
        # 2-D points: simulated only (show.py would overlay the validation points in the same colours)
        fig = sample_grid(problem, psi, n=16 if _is_image(problem) else 400, with_val=_is_image(problem),
                          title=f"{problem.name}: {title}", out=out / name)
        plt.close(fig)
        paths.append(out / name)
    return paths


def _is_image(problem) -> bool:
    return problem.val[0].dim() == 4


def _best_study(result: CompareResult) -> dict[str, Any] | None:
    done = [s for s in result.studies if s["val"] is not None]
    if not done:
        return None
    return max(done, key=lambda s: s["val"] if s["direction"] == "maximize" else -s["val"])
