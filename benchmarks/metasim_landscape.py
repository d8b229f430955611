"""The MMD² of Eq. 1 along a global rotation of the upright simulator (issue 8's wrong minima).

For each rotation mean r (degrees, every other ψ at its default) 600 digits are simulated and the
unbiased MMD² to the 300 real validation inputs (rotated +90°) is printed, in two feature spaces —
the default random-convolution features and raw pixels — and for kernel bandwidths of ¼ to 4 times
the median heuristic. A second minimum at −90° beside the target's +90° in every row says that the
minima come from the data, not from the choice of φ or h (see ``MetaSimConfig``'s restarts).

``--appearance`` (stroke digits): instead, at rotation +90° (the target), the MMD² (default features)
of 1,000 digits as one appearance ψ at a time moves off its default, next to the same MMD² at the
default for three data seeds (the estimator's noise) and for real training digits (the floor): the
attributes along which the MMD² changes are the ones worth making mutable
(``simsearch.metasim.PROBLEM_SETTINGS``).

``--appearance --features`` (issue 8: does a trained network's feature space rank appearance ψ the
way the accuracy they train to does?): for every ψ of the scan, on selection seeds (10, 11 by
default; never the record's 0-2), the real *validation* accuracy of the problem's CNN trained on
2,000 digits at ψ for 6 epochs (``problem.score``'s protocol; its test accuracy is not printed),
and the unbiased MMD² of 1,000 digits at ψ to the real validation inputs in four feature spaces:
the default random-conv features; the penultimate layer of a CNN trained the same way on the
simulator at its default ψ turned +90° (what Meta-Sim's accumulated task network sees once the
pose is learnt: ``MetaSimConfig(features="task")``); the penultimate layer of a CNN trained on
half of the labelled validation digits, the MMD² taken to the other half and the two halves'
values averaged (cross-fitting: a network's features of its own training points are not those
of fresh ones); and the penultimate layer of :func:`simsearch.metasim.val_features` (a CNN
trained on all of V, no cross-fitting, from the run's seed; ``MetaSimConfig(features="val")``
trains one per restart, from the restart's seed). Then
Spearman's ρ of each MMD² with the validation accuracy over the scan (a
useful φ: strongly negative, with the accuracy's maximum at the MMD²'s minimum).

    .venv/bin/python benchmarks/metasim_landscape.py --problem digits-rot-textures
    .venv/bin/python benchmarks/metasim_landscape.py --problem digits-rot --appearance
    .venv/bin/python benchmarks/metasim_landscape.py --problem digits-rot --appearance --features
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from simsearch import problems
from simsearch.metasim import trained_features, val_features
from simsearch.mmd import default_features, distribution_gap, median_bandwidth, mmd2
from simsearch.problems import Problem

#: ψ values scanned by ``--appearance`` (the middle one is the stroke simulator's default).
APPEARANCE = {
    "width": (0.10, 0.13, 0.17, 0.21, 0.25),
    "slant": (-0.3, -0.15, 0.0, 0.15, 0.3),
    "aspect": (0.7, 0.85, 1.0, 1.15, 1.3),
    "scale": (0.85, 0.92, 1.0, 1.08, 1.15),
    "warp": (0.05, 0.1, 0.15, 0.25, 0.35),
    "jitter": (0.03, 0.06, 0.1, 0.15, 0.2),
    "noise": (0.05, 0.15, 0.3, 0.6, 1.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", choices=("digits-rot", "digits-rot-textures"), default="digits-rot")
    parser.add_argument("--step", type=int, default=15, help="degrees between rotations")
    parser.add_argument("--appearance", action="store_true", help="scan appearance ψ at +90° instead")
    parser.add_argument("--features", action="store_true",
                        help="with --appearance: validation accuracy and MMD² in trained features")
    parser.add_argument("--seeds", default="10,11", help="selection seeds of --features")
    args = parser.parse_args()
    torch.set_num_threads(1)
    problem = problems.get(args.problem)
    if args.appearance and args.features:
        _appearance_features(problem, [int(s) for s in args.seeds.split(",")])
        return
    if args.appearance:
        _appearance(problem)
        return
    features = {"random-conv": default_features, "pixels": lambda x: x.flatten(1)}
    real = {name: phi(problem.val[0]) for name, phi in features.items()}
    angles = list(range(-180, 181, args.step))
    rows: dict[tuple[str, float], list[float]] = {}
    with torch.no_grad():
        for angle in angles:
            psi = problem.simulator.init_psi()
            psi["rotation"] = torch.tensor(float(angle))
            x = problem.simulator.simulate(psi, 600, seed=0).x
            for name, phi in features.items():
                fx = phi(x)
                h = median_bandwidth(fx, real[name])
                for factor in (0.25, 0.5, 1.0, 2.0, 4.0):
                    rows.setdefault((name, factor), []).append(float(mmd2(fx, real[name], h * factor)))
    print(f"{args.problem}: unbiased MMD² of 600 simulated digits at rotation r "
          "to the real validation inputs\n")
    print("| φ | h / median | " + " | ".join(f"{a}°" for a in angles) + " | argmin |")
    print("|---|---|" + "---|" * (len(angles) + 1))
    for (name, factor), values in rows.items():
        best = angles[min(range(len(values)), key=values.__getitem__)]
        print(f"| {name} | {factor:g} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {best}° |")


def _appearance(problem: Problem) -> None:
    """The ``--appearance`` table (module docstring)."""

    def gap(x: torch.Tensor) -> float:
        return distribution_gap(x, problem.val[0])

    def at(**values: float) -> dict[str, torch.Tensor]:
        psi = problem.simulator.init_psi()
        psi.update({k: torch.tensor(v) for k, v in {"rotation": 90.0, **values}.items()})
        return psi

    with torch.no_grad():
        noise = [gap(problem.simulator.simulate(at(), 1000, seed=s).x) for s in range(3)]
        floor = gap(problem.references["oracle"](1000, 0)[0])
        print(f"{problem.name}: unbiased MMD² of 1,000 digits to the real validation inputs; "
              f"default ψ at +90°, seeds 0-2: {', '.join(f'{v:.4f}' for v in noise)}; "
              f"real training digits: {floor:.4f}\n")
        print("| ψ | values | MMD² (seed 0) |\n|---|---|---|")
        for name, values in APPEARANCE.items():
            gaps = [gap(problem.simulator.simulate(at(**{name: v}), 1000, seed=0).x) for v in values]
            print(f"| {name} | {', '.join(f'{v:g}' for v in values)} | "
                  f"{', '.join(f'{g:.4f}' for g in gaps)} |")



def _appearance_features(problem: Problem, seeds: list[int]) -> None:
    """The ``--appearance --features`` table (module docstring)."""
    from scipy.stats import spearmanr

    def at(**values: float) -> dict[str, torch.Tensor]:
        psi = problem.simulator.init_psi()
        psi.update({k: torch.tensor(v) for k, v in {"rotation": 90.0, **values}.items()})
        return psi

    def trained(x: torch.Tensor, y: torch.Tensor, seed: int):
        return trained_features(problem, x, y, seed, seed)

    val_x, val_y = problem.val
    half = torch.randperm(len(val_x), generator=torch.Generator().manual_seed(0))
    halves = (half[: len(half) // 2], half[len(half) // 2 :])
    task_nets, val_nets, whole = {}, {}, {}
    for seed in seeds:
        batch = problem.simulator.simulate(at(), problem.eval_n_samples, 1000 + seed)
        task_nets[seed] = trained(batch.x, batch.y, 1000 + seed)
        val_nets[seed] = [trained(val_x[h], val_y[h], 2000 + seed + 10 * k) for k, h in enumerate(halves)]
        whole[seed] = val_features(problem, seed)
    grid = [("default", 0.0)] + [(k, v) for k, vs in APPEARANCE.items() for v in vs
                                  if abs(v - float(at()[k])) > 1e-6]
    rows = []
    print(f"{problem.name}: at rotation +90°, one ψ moved at a time; seeds {seeds} (means); val: real "
          "validation accuracy of a CNN trained at ψ; MMD² (unbiased, 1,000 digits vs the real "
          "validation inputs) in random-conv features, a sim-trained CNN's (default ψ at +90°), a "
          "val-trained CNN's (cross-fitted halves) and simsearch.metasim.val_features' (all of V)\n")
    print("| ψ | value | val (%) | MMD² random-conv | MMD² sim-trained CNN | MMD² val-trained CNN "
          "(halves) | MMD² val-trained CNN (all of V) |")
    print("|---|---|---|---|---|---|---|")
    for name, value in grid:
        psi = at() if name == "default" else at(**{name: value})
        val, conv, sim, real, full = [], [], [], [], []
        for seed in seeds:
            val.append(problem.score(psi, seed)["val"])
            x = problem.simulator.simulate(psi, 1000, 3000 + seed).x
            conv.append(distribution_gap(x, val_x))
            sim.append(distribution_gap(x, val_x, features=task_nets[seed]))
            real.append(np.mean([distribution_gap(x, val_x[halves[1 - k]], features=net)
                                 for k, net in enumerate(val_nets[seed])]))
            full.append(distribution_gap(x, val_x, features=whole[seed]))
        rows.append([np.mean(val), np.mean(conv), np.mean(sim), np.mean(real), np.mean(full)])
        shown = "" if name == "default" else f"{value:g}"
        gaps = " | ".join(f"{v:.4f}" for v in rows[-1][1:])
        print(f"| {name} | {shown} | {100 * rows[-1][0]:.1f} | {gaps} |", flush=True)
    table = np.asarray(rows)
    print("\nSpearman ρ (MMD², val accuracy) over the scan; ψ of the MMD² minimum; its val:")
    best = grid[int(table[:, 0].argmax())]
    print(f"(val maximum: {best[0]} {best[1]:g}, {100 * table[:, 0].max():.1f} %)")
    labels = ("random-conv", "sim-trained CNN", "val-trained CNN (halves)", "val-trained CNN (all of V)")
    for j, label in enumerate(labels, start=1):
        rho = spearmanr(table[:, j], table[:, 0])[0]
        arg = int(table[:, j].argmin())
        print(f"- {label}: ρ = {rho:.2f}; minimum at {grid[arg][0]} {grid[arg][1]:g} "
              f"(val {100 * table[arg, 0]:.1f} %)")


if __name__ == "__main__":
    main()
