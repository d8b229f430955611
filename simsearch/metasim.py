"""Meta-Sim runner: train a distribution transformer on a problem and report as ``compare`` does.

For each seed and each mode — ``mmd`` (distribution matching only, Meta-Sim §3.2.2), ``task`` (the
REINFORCE task loss only, §3.2.3) and ``both`` (Algorithm 1) — the runner builds G_θ on the
problem's simulator at its default ψ (Meta-Sim's probabilistic grammar), pre-trains it to the
identity (§3.2.1), trains it with :class:`~lightning_modules.distribution_transformer.MetaSimTrainer`
(the task network is the problem's model, accumulated across iterations), and then scores the
transformed simulator the way every ψ is scored in simsearch: a fresh model trained on its data,
tested once on the real test set (Meta-Sim Table 1: "The target datasets are fresh samples from the
target distribution"). The row "default ψ" is the untransformed simulator (Table 1's "Prob. Grammar").

Data roles: the unlabelled real inputs X_R of the MMD are the problem's validation inputs (labels
unused); the labelled validation set V of the task score is the same validation set; the test set
is used only for the final scores.

Writes to ``out``: ``report.md`` (Method | Time | Images | Renders | MMD² | Val | Test, mean ± std
over seeds), ``results.json`` (every run, its history), ``curves.png`` (MMD² and task score per
iteration) and ``samples_<mode>.png`` (input scenes, transformed scenes, real targets; Meta-Sim
Figs. 7–8).

>>> from simsearch.metasim import MetaSimConfig
>>> MetaSimConfig(iterations=5).iterations
5
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simsearch import problems
from simsearch.mmd import distribution_gap
from simsearch.objective import trial_seed
from simsearch.problems import Problem, mean_std

__all__ = ["MODES", "PROBLEM_SETTINGS", "MetaSimConfig", "run_metasim"]

#: Loss weights (MMD, task) of each mode.
MODES: dict[str, tuple[float, float]] = {"mmd": (1.0, 0.0), "task": (0.0, 1.0), "both": (1.0, 1.0)}

_DIGIT_SETTINGS: dict[str, Any] = {
    # Meta-Sim's MNIST grammar samples a rotation and a location per digit (§4.1): those are the
    # mutable attributes; pen, size, slant, jitter and pixel noise stay as sampled. (Exposing pen
    # width, slant and size too let the MMD in random-conv features settle on smeared blobs.)
    "mutable": ("rotation", "shift"),
    # G_θ reads the mutable attributes only: a transformation shared by all digits (reading the
    # class, jitter and noise too let single digits settle at different rotations)
    "inputs": ("rotation", "shift"),
    # the units G_θ predicts in (σ and the finite-difference step are multiples of them): ranges a
    # digit plausibly moves over, so that 90° is a few units and a step changes the 8×8 pixels
    "scales": {"rotation": 30.0, "shift": 0.15},
}
#: Per-problem defaults for :class:`MetaSimConfig` fields (mutable and input attributes, scales).
PROBLEM_SETTINGS: dict[str, dict[str, Any]] = {
    name: _DIGIT_SETTINGS for name in ("digits", "digits-rot", "digits-rot-textures")
}


@dataclass
class MetaSimConfig:
    """Hyper-parameters of one Meta-Sim run (names follow Alg. 1 where it names them).

    ``mutable`` / ``inputs`` / ``scales``: ``None`` takes :data:`PROBLEM_SETTINGS` for the problem,
    else every continuous latent is mutable, G_θ reads every latent, scales are data-driven.
    """

    iterations: int = 100
    batch_size: int = 256
    lr: float = 0.01
    sigma: float = 0.1
    fd_step: float = 0.2
    hidden: int = 64
    pretrain_steps: int = 200
    task_epochs: int = 1
    baseline_decay: float = 0.9
    mutable: tuple[str, ...] | None = None
    inputs: tuple[str, ...] | None = None
    scales: dict[str, float] | None = field(default=None)

    def resolved(self, problem_name: str) -> MetaSimConfig:
        settings = PROBLEM_SETTINGS.get(problem_name, {})
        values = asdict(self)
        for key in ("mutable", "inputs", "scales"):
            if values[key] is None:
                values[key] = settings.get(key)
        return MetaSimConfig(**values)


def run_metasim(
    problem: str | Problem,
    modes: Sequence[str] = ("mmd", "task", "both"),
    seeds: Sequence[int] = (0, 1, 2),
    config: MetaSimConfig | None = None,
    out: str | Path | None = "out/metasim",
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run Meta-Sim on ``problem`` for every mode and seed; write the report to ``out``.

    Returns ``{"problem", "config", "runs": [...], "table": [...]}``; each run holds its mode, seed,
    seconds, images, renders, final MMD², val and test scores and its iteration history.
    """
    problem = problems.get(problem) if isinstance(problem, str) else problem
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"modes: expected some of {list(MODES)}, got {list(modes)}")
    if not seeds:
        raise ValueError("seeds: expected at least one seed, got none")
    config = (config or MetaSimConfig()).resolved(problem.name)
    say = log or (lambda _msg: None)
    runs = []
    for seed in seeds:
        start = time.perf_counter()
        psi = problem.simulator.init_psi()
        scores = problem.score(psi, seed)
        gap = _gap(problem, problem.simulator, psi, seed)
        runs.append(dict(mode="default", seed=seed, seconds=time.perf_counter() - start, images=0,
                         renders=0, mmd2=gap, **scores, history=[]))
        say(f"[default] seed {seed}: MMD² {gap:.4f} val {scores['val']:.3f} test {scores['test']:.3f}")
        for mode in modes:
            grid = Path(out, f"samples_{mode}.png") if out is not None and seed == seeds[0] else None
            runs.append(_run_one(problem, mode, seed, config, grid, say))
    result = {"problem": problem.name, "config": asdict(config), "runs": runs, "table": _table(runs)}
    if out is not None:
        _write_report(result, Path(out))
    return result


def _run_one(
    problem: Problem, mode: str, seed: int, config: MetaSimConfig, grid: Path | None, say
) -> dict[str, Any]:
    from lightning_modules import AccumulatedMainTaskModule
    from lightning_modules.distribution_transformer import (
        DistributionTransformer,
        MetaSimTrainer,
        TransformedSimulator,
    )

    start = time.perf_counter()
    simulator, psi = problem.simulator, problem.simulator.init_psi()
    mmd_weight, task_weight = MODES[mode]
    transformer = DistributionTransformer(
        simulator, psi, config.mutable, config.inputs, config.hidden, config.sigma, config.scales,
        seed=seed,
    )
    transformer.pretrain_identity(config.pretrain_steps, seed=trial_seed(seed, 7))
    task_module = None
    if task_weight > 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(trial_seed(seed, 8))
            task_module = AccumulatedMainTaskModule.from_module(problem.make_model())
    trainer = MetaSimTrainer(
        transformer, simulator, problem.val[0], task_module=task_module, val=problem.val,
        mmd_weight=mmd_weight, task_weight=task_weight, batch_size=config.batch_size, lr=config.lr,
        baseline_decay=config.baseline_decay, task_epochs=config.task_epochs,
        task_batch_size=problem.batch_size, fd_step=config.fd_step, seed=seed,
    )
    every = max(1, config.iterations // 5)

    def progress(record: dict[str, float]) -> None:
        t = int(record["iteration"])
        if t % every == 0 or t == config.iterations - 1:
            parts = [f"{k} {record[k]:.4f}" for k in ("mmd2", "score") if k in record]
            say(f"[{mode}] seed {seed} iteration {t}: " + ", ".join(parts))

    history = trainer.fit(config.iterations, progress)
    transformed = TransformedSimulator(simulator, transformer)
    train_seconds = time.perf_counter() - start
    scores = problem.score(_source(transformed, psi), seed)
    gap = _gap(problem, transformed, psi, seed)
    run = dict(
        mode=mode, seed=seed, seconds=train_seconds,
        images=int(sum(h["images"] for h in history)),
        renders=int(sum(h.get("renders", h["images"]) for h in history)),
        mmd2=gap, **scores, history=history,
    )
    if task_module is not None:
        run["online_test"] = task_module.evaluate(*problem.test)
    say(f"[{mode}] seed {seed}: MMD² {gap:.4f} val {scores['val']:.3f} test {scores['test']:.3f} "
        f"({train_seconds:.0f} s)")
    if grid is not None:
        grid.parent.mkdir(parents=True, exist_ok=True)
        _sample_grid(transformed, psi, problem.val[0], grid, mode)
    return run


def _source(simulator, psi):
    def draw(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = simulator.simulate(psi, n, seed)
        return batch.x, batch.y

    return draw


def _gap(problem: Problem, simulator, psi, seed: int, n: int = 1000) -> float:
    """Unbiased MMD² between ``n`` simulated inputs and the real validation inputs."""
    return distribution_gap(simulator.simulate(psi, n, trial_seed(seed, 9)).x, problem.val[0])


def _table(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for mode in dict.fromkeys(r["mode"] for r in runs):
        rows = [r for r in runs if r["mode"] == mode]
        entry = {"method": "default ψ" if mode == "default" else f"Meta-Sim ({mode})", "runs": len(rows)}
        for key in ("seconds", "images", "renders", "mmd2", "val", "test"):
            entry[key] = mean_std([float(r[key]) for r in rows])
        table.append(entry)
    return table


def _write_report(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    lines = [
        f"# Meta-Sim on `{result['problem']}`",
        "",
        f"Seeds: {sorted({r['seed'] for r in result['runs']})}; mean ± std over seeds. Time: seconds of "
        "Meta-Sim training (pre-training included; default ψ row: scoring its data); Images: scenes "
        "simulated; Renders: images rendered including the finite-difference perturbations; MMD²: "
        "unbiased, 1,000 simulated vs "
        "the real validation inputs; Val / Test: a fresh model trained on the simulator's data.",
        "",
        "| Method | Time (s) | Images | Renders | MMD² | Val | Test |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in result["table"]:
        cells = [f"{e[k][0]:.0f}" for k in ("seconds", "images", "renders")]
        cells += [f"{e['mmd2'][0]:.4f} ± {e['mmd2'][1]:.4f}"]
        cells += [f"{100 * e[k][0]:.1f} ± {100 * e[k][1]:.1f}" for k in ("val", "test")]
        lines.append(f"| {e['method']} | " + " | ".join(cells) + " |")
    lines += ["", "Config: `" + json.dumps(result["config"]) + "`", ""]
    (out / "report.md").write_text("\n".join(lines))
    _curves(result["runs"], out / "curves.png")


def _curves(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in ((axes[0], "mmd2", "MMD² (Eq. 1, biased) per batch"),
                           (axes[1], "score", "task score of the accumulated network on V")):
        for i, mode in enumerate(m for m in MODES if any(r["mode"] == m for r in runs)):
            curves = [[h[key] for h in r["history"] if key in h] for r in runs if r["mode"] == mode]
            if not all(curves):
                continue
            arr = np.asarray(curves, dtype=float)
            mean, std = arr.mean(0), arr.std(0)
            ax.plot(mean, color=f"C{i}", label=mode)
            ax.fill_between(np.arange(len(mean)), mean - std, mean + std, color=f"C{i}", alpha=0.2)
        ax.set_xlabel("iteration")
        ax.set_title(label, fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sample_grid(transformed, psi, real_x: torch.Tensor, path: Path, mode: str, n: int = 12) -> None:
    """Meta-Sim Figs. 7–8: input scenes (top), their transformed versions, real targets (bottom).

    Inputs that are not images (``(n, d)``) are drawn as scatter plots of their first two features.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = real_x.dim() >= 3
    batch = transformed.simulate(psi, n if images else 500, seed=12345)
    inputs = transformed.base.render({k: batch.latents[k] for k in transformed.transformer.names})[0]
    rows = {"input scenes (P)": inputs, f"Meta-Sim ({mode})": batch.x, "real targets": real_x}
    if not images:
        fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2), sharex=True, sharey=True)
        for ax, (title, x) in zip(axes, rows.items(), strict=True):
            ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=3)
            ax.set_title(title, fontsize=9)
    else:
        fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.8, len(rows) * 0.95))
        for r, (title, x) in enumerate(rows.items()):
            for c in range(n):
                axes[r, c].imshow(x[c].reshape(x.shape[-2], x.shape[-1]).numpy(), cmap="gray_r")
                axes[r, c].set_xticks([])
                axes[r, c].set_yticks([])
            axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
