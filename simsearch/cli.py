"""The ``simsearch`` command line.

    simsearch problems                                    list the built-in problems
    simsearch run --problem gmm2d --sampler tpe --trials 30 --out out/run
                                                          one resumable study (SQLite by default)
    simsearch show --problem traffic-count --params real --out grid.png
                                                          PNG grid of samples at a ψ
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import optuna

from simsearch import problems
from simsearch.sampler_registry import make_sampler

__all__ = ["main", "run_study"]


def run_study(
    problem_name: str,
    sampler_name: str,
    trials: int,
    seed: int = 0,
    out: str | Path = "out/run",
    storage: str | None = None,
    study_name: str | None = None,
    show_progress: bool = True,
) -> optuna.Study:
    """Run (or resume) one study until it has ``trials`` finished trials."""
    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    problem = problems.get(problem_name)
    sampler = make_sampler(sampler_name, seed)
    objective = problem.objective(seed=seed)
    storage = storage or f"sqlite:///{out / 'study.db'}"
    study = optuna.create_study(
        storage=storage,
        study_name=study_name or f"{problem_name}-{sampler_name}-seed{seed}",
        direction=objective.direction,
        sampler=sampler,
        load_if_exists=True,
    )
    study.set_user_attr("problem", problem_name)
    study.set_user_attr("sampler", sampler_name)
    study.set_user_attr("seed", seed)
    done = sum(t.state.is_finished() for t in study.trials)
    if done < trials:
        study.optimize(objective, n_trials=trials - done, show_progress_bar=show_progress)
    return study


def _cmd_problems(args: argparse.Namespace) -> int:
    for name in problems.names():
        problem = problems.get(name)
        print(f"{name:16s} {problem.description}  (ψ: {problem.simulator.space.dim} values)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = run_study(
        args.problem, args.sampler, args.trials, args.seed, args.out, args.storage, args.study
    )
    best = study.best_trial
    out = Path(args.out)
    (out / "best_params.json").write_text(json.dumps(best.params, indent=2) + "\n")
    print(f"study {study.study_name!r}: {len(study.trials)} trials")
    print(f"best validation reward {best.value:.4f} (trial {best.number})")
    print(f"best ψ written to {out / 'best_params.json'}; storage in {out}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from simsearch.show import resolve_psi, sample_grid

    problem = problems.get(args.problem)
    psi = resolve_psi(problem, args.params, args.run_dir)
    sample_grid(problem, psi, n=args.n, seed=args.seed, with_val=args.with_val, out=args.out,
                title=f"{problem.name}: simulated, ψ = {args.params}")
    print(f"{args.n} samples of {problem.name} at ψ = {args.params} written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simsearch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("problems", help="list the built-in problems")
    p.set_defaults(func=_cmd_problems)

    p = sub.add_parser("run", help="run or resume one study")
    p.add_argument("--problem", default="gmm2d")
    p.add_argument("--sampler", default="tpe")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/run")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite in --out)")
    p.add_argument("--study", default=None, help="study name (default: problem-sampler-seed)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("show", help="write a PNG grid of samples simulated at a ψ, with labels")
    p.add_argument("--problem", default="gmm2d")
    p.add_argument("--params", default="default",
                   help="default | real | best (best_params.json in --run-dir) | FILE.json")
    p.add_argument("--run-dir", default="out/run", help="where `simsearch run` wrote best_params.json")
    p.add_argument("--n", type=int, default=16, help="samples to show")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--with-val", action="store_true", help="also show validation samples")
    p.add_argument("--out", default="grid.png")
    p.set_defaults(func=_cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError) as exc:
        print(f"simsearch: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
