"""`simsearch compare` with every registered sampler on one problem, 3 seeds, one image budget (issue 6).

Runs :func:`simsearch.compare.compare` (resumable: rerunning the same command continues it) and
prints, as Markdown for BENCHMARKS.md, the command, date, machine, the results table exactly as
``report.md`` holds it and the reference points. The budget is the same number of images for every
sampler (each trial generates the problem's M images, so B / M trials).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare_problems.py --problem gmm2d \\
        --budget-images 10000 --out out/bench-compare-gmm2d
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import torch

from simsearch.compare import compare
from simsearch.report import format_table
from simsearch.sampler_registry import SAMPLERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="gmm2d")
    parser.add_argument("--budget-images", type=int, default=10000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="default: every registered one")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = args.out or f"out/bench-compare-{args.problem}"
    samplers = args.samplers.split(",")
    start = time.perf_counter()
    result = compare(args.problem, samplers, args.seeds, budget_images=args.budget_images, out=out,
                     jobs=args.jobs)
    s = result.settings
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    print(f"command: `{env}.venv/bin/python {' '.join(sys.argv)}`")
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: "
          f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); wall {time.perf_counter() - start:.0f} s for this call")
    print(f"problem {s.problem}: M = {s.n_samples}, ξ = {s.epochs}; budget {s.budget_images} images "
          f"per study; final evaluation {s.eval_n_samples} samples, {s.eval_epochs} epochs; "
          f"{s.seeds} seeds\n")
    print(format_table(result.table))
    print("\nReference points:\n")
    print(format_table(result.references, ["val", "test"]))


if __name__ == "__main__":
    main()
