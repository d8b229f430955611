"""Meta-Sim Table 1's protocol for the ψ found by REINFORCE and AutoSimulate (issue 8).

Each sampler searches the *global* ψ of ``digits-rot`` (21 numbers, the rotation mean among them) in
an ordinary study run by :func:`simsearch.compare.compare` (``--trials`` trials of the problem's
M and ξ per seed, reward = real validation accuracy). The best ψ of each study is then scored as every
row of ``benchmarks/metasim_table1.py`` is: a fresh CNN trained on ``eval_n_samples`` digits from
that ψ (``problem.score``), tested once on the 500 real test digits; its MMD² to the real validation
inputs is measured as in the Meta-Sim runner (:func:`simsearch.metasim.gap_to_real`).
``--score-samples`` / ``--score-epochs`` score the same best ψ a second time with a CNN trained on
that many samples for that many epochs (``metasim_table1.py``'s options of the same names, issue 8's
record of 2026-12-05), printed as a second test column beside the problem's own protocol.

    .venv/bin/python benchmarks/metasim_samplers.py --trials 20 --out out/metasim-samplers
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
import warnings

import optuna
import torch

from simsearch import problems
from simsearch.compare import compare
from simsearch.metasim import gap_to_real
from simsearch.problems import mean_std


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="digits-rot")
    parser.add_argument("--samplers", default="reinforce,autosimulate")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", default="out/metasim-samplers")
    parser.add_argument("--score-samples", type=_positive_int, default=None,
                        help="also score the best ψ with a CNN trained on this many samples")
    parser.add_argument("--score-epochs", type=_positive_int, default=None,
                        help="... for this many epochs (default: the problem's eval_epochs)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    print(f"{date}; {platform.node()}; torch {torch.__version__}; 1 thread")
    start = time.perf_counter()
    result = compare(args.problem, args.samplers.split(","), seeds=args.seeds, trials=args.trials,
                     out=args.out, progress=False, report=False)
    problem = problems.get(args.problem)
    print(f"\n{args.problem}: {args.trials} trials × M = {problem.n_samples}, ξ = {problem.epochs} per "
          f"study; best ψ scored with {problem.eval_n_samples} samples × {problem.eval_epochs} epochs; "
          f"{time.perf_counter() - start:.0f} s in all\n")
    rescore = args.score_samples is not None or args.score_epochs is not None
    size = (args.score_samples or problem.eval_n_samples, args.score_epochs or problem.eval_epochs)
    extra = f" Test, {size[0]} × {size[1]} (%) | per seed |" if rescore else ""
    print("| Method | Time to best (s) | Images (to best / total) | rotation of best ψ (°) | MMD² "
          f"| Test accuracy (%) | per seed |{extra}")
    print("|---|---|---|---|---|---|---|" + ("---|---|" if rescore else ""))
    for sampler in args.samplers.split(","):
        studies = sorted((s for s in result.studies if s["sampler"] == sampler), key=lambda s: s["seed"])
        rotations, gaps, rescored = [], [], []
        for s in studies:
            study = optuna.load_study(study_name=s["study"], storage=result.settings.url(result.out))
            psi = problem.simulator.space.from_params(study.best_trial.params)
            rotations.append(float(psi["rotation"]))
            gaps.append(gap_to_real(problem, problem.simulator, psi, s["seed"]))
            if rescore:
                score = problem.score(psi, s["seed"], n_samples=size[0], epochs=size[1])
                rescored.append(100 * score["test"])
        tests = [100 * s["test"] for s in studies]
        per_seed = ", ".join(f"{t:.1f}" for t in rescored)

        def cell(values: list[float], fmt: str) -> str:
            mean, std = mean_std(values)
            return f"{mean:{fmt}} ± {std:{fmt}}"

        print(f"| {sampler} | {cell([s['time_to_best_s'] for s in studies], '.0f')} "
              f"| {cell([s['images_to_best'] for s in studies], '.0f')} / "
              f"{studies[0]['images_total']} | {', '.join(f'{r:.0f}' for r in rotations)} "
              f"| {cell(gaps, '.3f')} | {cell(tests, '.1f')} | {', '.join(f'{t:.1f}' for t in tests)} |"
              + (f" {cell(rescored, '.1f')} | {per_seed} |" if rescore else ""))


if __name__ == "__main__":
    main()
