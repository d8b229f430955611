"""Reference rewards of the built-in problems: default ψ, ψ_real and the oracle, over seeds.

For every problem and reference source (``default`` ψ, ``real`` ψ where the validation data are
simulated, and the problem's extra references such as ``oracle`` — real training digits, or data
from p for gmm2d), a fresh default model is trained with the problem's evaluation settings
(``eval_n_samples`` images, ``eval_epochs`` epochs) and scored on the validation and the test set.
Prints one Markdown table: mean ± sample std over the seeds. ``--changes`` adds one more source:
the default ψ with the given values changed (a ψ found by hand, say), named by those changes.

    .venv/bin/python benchmarks/problem_references.py [--seeds 3] [--problems gmm2d,traffic-count,...]
        [--changes '{"jitter": 0.15}']
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import optuna
import torch

from simsearch.problems import get, mean_std

PROBLEMS = "gmm2d,traffic-count,traffic-seg,digits,digits-rot"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--problems", default=PROBLEMS)
    parser.add_argument("--changes", type=json.loads, default=None,
                        help="JSON object of ψ values changed from the default: one more source")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds = list(range(args.seeds))
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: "
          f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
          f"load average at start {os.getloadavg()[0]:.1f}; seeds {seeds}\n")
    print("| problem | metric | training data | M, ξ | val | test | s per run |")
    print("|---|---|---|---|---|---|---|")
    for name in args.problems.split(","):
        problem = get(name)
        metric = getattr(problem.make_model(), "metric_fn", None)
        metric_name = getattr(metric, "__name__", "score").lstrip("_")
        sources = problem.reference_sources()
        if args.changes:
            sources["default + " + json.dumps(args.changes)] = problem.psi_source(
                _changed_psi(problem, args.changes))
        for source_name, source in sources.items():
            scores: dict[str, list[float]] = {"val": [], "test": []}
            started = time.perf_counter()
            for seed in seeds:
                result = problem.score(source, seed)
                for split in scores:
                    scores[split].append(result[split])
            seconds = (time.perf_counter() - started) / len(seeds)
            cells = [f"{m:.3f} ± {s:.3f}" for m, s in (mean_std(scores[k]) for k in ("val", "test"))]
            print(f"| {name} | {metric_name} | {source_name} | {problem.eval_n_samples}, "
                  f"{problem.eval_epochs} | {cells[0]} | {cells[1]} | {seconds:.0f} |", flush=True)


def _changed_psi(problem, changes: dict) -> dict[str, torch.Tensor]:
    """The problem's default ψ with ``changes`` (ψ names to values) applied."""
    psi = problem.simulator.init_psi()
    unknown = sorted(set(changes) - set(psi))
    if unknown:
        raise ValueError(f"--changes: {problem.name} has no ψ parameter(s) {unknown}; known: {sorted(psi)}")
    for name, value in changes.items():
        psi[name] = torch.as_tensor(value, dtype=torch.float32).expand_as(psi[name]).clone()
    return psi


if __name__ == "__main__":
    main()
