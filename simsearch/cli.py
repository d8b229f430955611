"""The ``simsearch`` command line.

    simsearch problems                                    list the built-in problems
    simsearch run --problem gmm2d --sampler tpe --trials 30 --out out/run
                                                          one resumable study (SQLite by default)
    simsearch show --problem traffic-count --params real --out grid.png
                                                          PNG grid of samples at a ψ
    simsearch compare --problem gmm2d --samplers random,tpe,bayesopt --seeds 2 --trials 10 --out out/compare
                                                          samplers side by side: report.md, plots
    simsearch metasim --problem digits-rot --seeds 3 --out out/metasim
                                                          Meta-Sim's distribution transformer: report
    simsearch worker --storage journal:out/study.log --study s1 --problem gmm2d --sampler tpe --trials 40
                                                          join a shared study (start several)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import optuna

from simsearch import problems
from simsearch.metasim import MetaSimConfig
from simsearch.objective import recommended_trial
from simsearch.sampler_registry import check_sampler_settings, make_sampler

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
    """Run (or resume) one study until it has ``trials`` finished trials.

    Samplers that fine-tune one model across trials (AutoSimulate) get an accumulated model,
    checkpointed beside the storage so that a resumed run continues from it. Raises ValueError
    when the study was begun with other sampler options
    (:func:`~simsearch.sampler_registry.check_sampler_settings`)."""
    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    problem = problems.get(problem_name)
    sampler = make_sampler(sampler_name, seed)
    study_name = study_name or f"{problem_name}-{sampler_name}-seed{seed}"
    objective = problem.objective_for(sampler, seed, checkpoint_path=out / f"{study_name}.pt")
    storage = storage or f"sqlite:///{out / 'study.db'}"
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction=objective.direction,
        sampler=sampler,
        pruner=optuna.pruners.NopPruner(),  # every trial trains its ξ epochs, as in the papers
        load_if_exists=True,
    )
    check_sampler_settings(study, sampler, sampler_name,
                           "start a new study (another --out folder or --study name)")
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
    best = recommended_trial(study)  # by fresh values where AutoSimulate recorded them
    out = Path(args.out)
    (out / "best_params.json").write_text(json.dumps(best.params, indent=2) + "\n")
    print(f"study {study.study_name!r}: {len(study.trials)} trials")
    fresh = best.user_attrs.get("fresh_value")
    shown = (f"fresh-model validation reward {fresh:.4f}" if fresh is not None
             and math.isfinite(fresh)
             else f"validation reward {best.value:.4f}")
    print(f"best {shown} (trial {best.number})")
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

    p = sub.add_parser("compare", help="run samplers side by side on one problem and budget; report")
    p.add_argument("--problem", default="gmm2d")
    p.add_argument("--samplers", default="random,tpe,bayesopt",
                   help="comma-separated sampler names or module:Class")
    p.add_argument("--seeds", type=int, default=2, help="number of seeds (0 … N-1)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--trials", type=int, help="trials per study")
    budget.add_argument("--budget-images", type=int, help="images generated per study")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite in --out)")
    p.add_argument("--out", default="out/compare")
    p.add_argument("--jobs", type=int, default=1, help="studies run at the same time")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("metasim", help="train Meta-Sim's distribution transformer; report.md, plots")
    p.add_argument("--problem", default="digits-rot")
    p.add_argument("--modes", default="mmd,task,both", help="comma-separated: mmd, task, both")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0 … N-1)")
    defaults = MetaSimConfig()
    p.add_argument("--iterations", type=int, default=defaults.iterations,
                   help="Algorithm 1 iterations per run, the restarts' included")
    p.add_argument("--restarts", type=int, default=defaults.restarts,
                   help="pre-trained starts; the best after --restart-iterations is continued")
    p.add_argument("--restart-iterations", type=int, default=defaults.restart_iterations)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="scenes per iteration")
    p.add_argument("--lr", type=float, default=defaults.lr,
                   help="Adam learning rate of the transformer")
    p.add_argument("--out", default="out/metasim")
    p.set_defaults(func=_cmd_metasim)

    p = sub.add_parser("worker", help="join a study in a shared storage; run until it has N trials")
    p.add_argument("--storage", required=True,
                   help="journal:PATH | redis://HOST:PORT/DB[?prefix=P] | postgresql://… (RDB URL)")
    p.add_argument("--study", required=True, help="study name (created if missing)")
    p.add_argument("--problem", default="gmm2d")
    p.add_argument("--sampler", default="tpe")
    p.add_argument("--trials", type=int, default=30, help="finished trials of the study in total")
    p.add_argument("--seed", type=int, default=0, help="study seed: data of trial t depend on (seed, t)")
    p.add_argument("--sampler-seed", type=int, default=None,
                   help="seed of this worker's sampler (default: unseeded, so workers differ)")
    p.add_argument("--n-samples", type=int, default=None, help="M per trial (default: the problem's)")
    p.add_argument("--epochs", type=int, default=None, help="ξ per trial (default: the problem's)")
    p.add_argument("--checkpoint", default=None,
                   help="this worker's accumulated-model checkpoint (samplers such as autosimulate)")
    p.add_argument("--heartbeat", type=int, default=60, help="seconds between trial heartbeats")
    p.add_argument("--grace", type=int, default=None,
                   help="seconds without heartbeat before a trial is stale (default 5 × heartbeat)")
    p.set_defaults(func=_cmd_worker)
    return parser


def _cmd_worker(args: argparse.Namespace) -> int:
    from simsearch.workers import budget_state, open_storage, run_worker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = problems.get(args.problem)
    sampler = make_sampler(args.sampler, args.sampler_seed)
    options = {"n_samples": args.n_samples, "epochs": args.epochs}
    objective = problem.objective_for(sampler, args.seed, checkpoint_path=args.checkpoint,
                                      **{k: v for k, v in options.items() if v is not None})
    grace = args.grace or 5 * args.heartbeat
    storage = open_storage(args.storage, heartbeat_interval=args.heartbeat, grace_period=grace)
    study = optuna.create_study(storage=storage, study_name=args.study, sampler=sampler,
                                pruner=optuna.pruners.NopPruner(), direction=objective.direction,
                                load_if_exists=True)
    check_sampler_settings(study, sampler, args.sampler,
                           "start a new study (another --study name or --storage)")
    report = run_worker(study, objective, args.trials, heartbeat_interval=args.heartbeat,
                        grace_period=grace)
    state = budget_state(study, args.trials)
    print(f"worker {os.getpid()}: ran trials {report.ran}; study {args.study!r} has "
          f"{state.finished}/{args.trials} trials finished")
    if report.failed_stale:
        print(f"failed stale trials (their worker died): {report.failed_stale}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from simsearch.compare import compare
    from simsearch.report import format_table

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    result = compare(args.problem, samplers, args.seeds, args.trials, args.budget_images,
                     args.storage, args.out, args.jobs)
    print(format_table(result.table))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def _cmd_metasim(args: argparse.Namespace) -> int:
    from simsearch.metasim import run_metasim

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    config = MetaSimConfig(iterations=args.iterations, restarts=args.restarts,
                           restart_iterations=args.restart_iterations,
                           batch_size=args.batch_size, lr=args.lr)
    run_metasim(args.problem, modes, list(range(args.seeds)), config, args.out)
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError) as exc:
        print(f"simsearch: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
