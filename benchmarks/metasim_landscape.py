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

    .venv/bin/python benchmarks/metasim_landscape.py --problem digits-rot-textures
    .venv/bin/python benchmarks/metasim_landscape.py --problem digits-rot --appearance
"""

from __future__ import annotations

import argparse

import torch

from simsearch import problems
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
    args = parser.parse_args()
    torch.set_num_threads(1)
    problem = problems.get(args.problem)
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


if __name__ == "__main__":
    main()
