"""Meta-Sim Table 1 in miniature: real UCI digits rotated 90°, simulator upright.

Real test accuracy of a fresh CNN trained on data from: the default (upright) simulator; Meta-Sim with
the MMD loss only, the task loss only, and both (Algorithm 1); 3 seeds. Reference rows: the simulator
with its rotation mean set by hand to +90° (the best a rotation-and-location transform of this
simulator can hope for) and the oracle (real rotated training digits). Two problems:

* ``digits-rot`` — the stroke-rendered digits (an appearance gap on top of the rotation gap);
* ``digits-rot-textures`` — Meta-Sim §4.1's grammar: real upright digit textures, rotated and moved.

Writes the runner's report and sample grids to ``--out`` and copies the grids to ``docs/``.

    .venv/bin/python benchmarks/metasim_table1.py --problem digits-rot-textures --jobs 3 \
        --out out/metasim-textures

``--score-samples/--score-epochs`` set the scoring model's training set and epochs for every row,
references included (``MetaSimConfig.score_samples``). The ``digits-rot`` record (BENCHMARKS.md,
issue 8) uses ``--score-samples 16000 --score-epochs 6``, chosen on the selection seeds' validation
accuracy with ``benchmarks/metasim_scorer_size.py``; it is reported beside the 2,000 × 6 default.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import torch

from lightning_modules.distribution_transformer import TASK_NOISE
from simsearch import problems
from simsearch.metasim import FEATURES, PROBLEM_SETTINGS, MetaSimConfig, run_metasim
from simsearch.problems import mean_std

PROBLEMS = ("digits-rot", "digits-rot-textures")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problem", choices=PROBLEMS, default="digits-rot")
    parser.add_argument("--out", default="out/metasim-table1")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=MetaSimConfig.iterations)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at the same time")
    parser.add_argument("--threads", type=int, default=1)
    # ablations of the defaults (MetaSimConfig's docstring gives the reasons for them)
    parser.add_argument("--modes", default="mmd,task,both")
    parser.add_argument("--restarts", type=int, default=MetaSimConfig.restarts)
    parser.add_argument("--task-weight", type=float, default=MetaSimConfig.task_weight)
    parser.add_argument("--mutable", help="comma-separated mutable attributes, also G_θ's inputs "
                        "(default: simsearch.metasim.PROBLEM_SETTINGS)")
    parser.add_argument("--one-hot", help="comma-separated categorical latents G_θ also reads, one-hot "
                        "(e.g. label: a class-conditioned G_θ; default: PROBLEM_SETTINGS)")
    parser.add_argument("--features", choices=FEATURES, default=MetaSimConfig.features,
                        help="feature space of the MMD loss (MetaSimConfig.features)")
    parser.add_argument("--class-mmd", action="store_true",
                        help="class-conditional MMD loss against the labelled validation set "
                        "(MetaSimConfig.class_mmd)")
    parser.add_argument("--task-noise", choices=TASK_NOISE, default=MetaSimConfig.task_noise,
                        help="task-loss perturbation: per scene (Eq. 4) or one shared by the batch "
                        "(MetaSimConfig.task_noise)")
    parser.add_argument("--task-sigma", type=float, default=None,
                        help="σ of the shared perturbation, scale units (default: σ)")
    parser.add_argument("--spsa", help="comma-separated mutable attributes whose finite differences "
                        "are taken by simultaneous perturbation (MetaSimConfig.spsa)")
    parser.add_argument("--spsa-directions", type=int, default=MetaSimConfig.spsa_directions,
                        help="perturbation vectors per scene for --spsa")
    parser.add_argument("--holdout", type=float, default=MetaSimConfig.holdout,
                        help="fraction of the validation set kept from the training losses and used "
                        "only for selection (MetaSimConfig.holdout)")
    parser.add_argument("--select-every", type=int, default=MetaSimConfig.select_every,
                        help="score the continued restart on the held-out part every this many "
                        "iterations and keep the best G_θ (MetaSimConfig.select_every; 0: off)")
    parser.add_argument("--score-samples", type=int, default=None,
                        help="simulated examples the scoring model of every row trains on, references "
                        "included (MetaSimConfig.score_samples; default: the problem's eval_n_samples)")
    parser.add_argument("--score-epochs", type=int, default=None,
                        help="its epochs (MetaSimConfig.score_epochs; default: the problem's eval_epochs)")
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="first seed (selection runs: seeds other than the record's 0-2)")
    parser.add_argument("--no-docs", action="store_true", help="do not copy the plots to docs/")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    print(f"{date}; {platform.node()}; {platform.processor() or platform.machine()}; "
          f"torch {torch.__version__}; {args.threads} thread(s); {args.jobs} job(s); "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    problem = problems.get(args.problem)
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    start = time.perf_counter()
    modes = args.modes.split(",")
    mutable = tuple(args.mutable.split(",")) if args.mutable else None
    one_hot = tuple(args.one_hot.split(",")) if args.one_hot else None
    inputs = mutable
    if one_hot:
        inputs = (*(mutable or PROBLEM_SETTINGS[args.problem]["inputs"]), *one_hot)
    config = MetaSimConfig(iterations=args.iterations, restarts=args.restarts, task_weight=args.task_weight,
                           mutable=mutable, inputs=inputs, one_hot=one_hot, features=args.features,
                           class_mmd=args.class_mmd, task_noise=args.task_noise,
                           task_sigma=args.task_sigma,
                           spsa=tuple(args.spsa.split(",")) if args.spsa else (),
                           spsa_directions=args.spsa_directions, holdout=args.holdout,
                           select_every=args.select_every, score_samples=args.score_samples,
                           score_epochs=args.score_epochs)
    run_metasim(args.problem, modes, seeds, config, out=args.out, jobs=args.jobs)
    psi90 = problem.simulator.init_psi()
    psi90["rotation"] = torch.tensor(90.0)
    references = {
        "simulator, rotation mean set to +90° by hand": psi90,
        "oracle (real rotated training digits)": problem.references["oracle"],
    }
    rows = []
    for name, source in references.items():
        tests = [problem.score(source, seed, n_samples=args.score_samples, epochs=args.score_epochs)["test"]
                 for seed in seeds]
        rows.append((name, *mean_std(tests)))
    print(f"\ntotal {time.perf_counter() - start:.0f} s\n")
    print(Path(args.out, "report.md").read_text())
    print("| Reference | Test |\n|---|---|")
    for name, mean, std in rows:
        print(f"| {name} | {100 * mean:.1f} ± {100 * std:.1f} |")
    if args.no_docs:
        return
    docs = Path(__file__).resolve().parents[1] / "docs"
    stem = "metasim_" + args.problem.replace("-", "_")
    for mode in modes:
        shutil.copy(Path(args.out, f"samples_{mode}.png"), docs / f"{stem}_samples_{mode}.png")
    shutil.copy(Path(args.out, "curves.png"), docs / f"{stem}_curves.png")


if __name__ == "__main__":
    main()
