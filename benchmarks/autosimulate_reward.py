"""Reward against images generated: the four AutoSimulate variants beside REINFORCE and TPE (issue 5).

Every sampler runs ``--trials`` trials per seed with the problem's M and ξ. AutoSimulate variants
fine-tune one accumulated model (Alg. 1); TPE and REINFORCE train a fresh model per trial. So that
the curves compare the *ψ* each method recommends and not how its model was trained, after every
``--every`` trials the current recommendation is scored by ``problem.score(ψ, seed)``: a fresh model
trained on ``eval_n_samples`` samples for ``eval_epochs`` epochs, evaluated on the validation and
test sets. Black-box samplers recommend the best trial so far (``study.best_trial``, ranked by the
trials' validation values). AutoSimulate recommends by ``--recommend``: ``best`` (default since
2026-12-04), the ψ_t of the completed trial that :meth:`AutoSimulateSampler.best_params` names:
since 2026-12-06 the best by fresh value where trials have one (``fresh_every``, a fresh model
trained on the trial's own data), else by value; ``value``, the best by value only (the
accumulated model's validation metric, the rule of ``best`` before 2026-12-06; never test data);
``next``, the ψ it will propose next (:meth:`AutoSimulateSampler.current_params`, the chain
head's ψ_{t+1}; the records before 2026-12-04).
Several rules (``--recommend next,best``) score each in the same run, as rows ``name@rule``.
A ψ scored before in the same run (a best trial that has not changed) is not scored again: the
score depends on ψ and the seed only.

Goal (AutoSimulate Table 2): the best AutoSimulate variant reaches 95 % of the best final mean
validation reward of any sampler with ≤ 1/2.5 of the images the fastest black-box sampler needs
(a sampler that never reaches the target needs "> budget"). For a negative reward (traffic-count's
−ℓ1) "95 % of the best" is read as "within 5 % of it": best − 0.05 · |best|. When the target is at
or below the start ψ's own reward the verdict is printed as FORMAL: the AutoSimulate variants start
at the declared ψ and "reach" such a target with their first recommendation.

The AutoSimulate variants descend the mean validation loss of ``--val-loss``: ``train`` is the
model's own training loss l (the paper's Eq. 1a; cross-entropy for the classifiers),
``expected_error`` is 1 − p(y | x), the smooth stand-in for the error rate
(:func:`samplers.hypergradient.expected_error`). Each AutoSimulate step is multiplied by the
James–Stein factor ρ of its Wald statistic (:func:`samplers.autosimulate.wald_shrinkage`; the
sampler's default since 2026-12-05, ``--shrinkage none`` turns it off) and by the chain's factor
ρ_c (:func:`samplers.autosimulate.chain_shrinkage`, the noise across trials; default since
2026-12-06, ``--chain-shrinkage off``); the checkpoints record every step's ρ and ρ_c beside its
length factor. Samplers can be run in separate processes
(``--samplers``, ``--out``) and their JSON results tabulated together with ``--load``, also with
different ``--trials`` (a black-box sampler run longer, to measure how many images it needs when
it does not reach the target within the AutoSimulate runs' budget; the curves are then tabulated
on the union of their checkpoints and each sampler's "> N" is its own budget).

``--score accumulated`` is the other reading, the papers' own: AutoSimulate's Tables 2–3 report the
accumulated main-task model's validation score and the images it took, and Learning to Simulate's
§4.3 fine-tunes an "accumulated main task model" on every trial's data beside the policy's fresh
ones. Each checkpoint then scores the accumulated model itself on the validation and test sets,
nothing is retrained: an AutoSimulate variant's own model; for TPE and REINFORCE a companion
model (``SimulatorObjective(companion=...)``) fine-tuned on every trial's data while their fresh
models drive the search; and, as the reference in place of the start ψ, ``fixed``: an accumulated
model fine-tuned on data from the start ψ in every trial (no search). All these models start from
the same initial weights per seed. Each gain is then taken against ``fixed`` at the same number
of images, and the verdict is FORMAL when ``fixed`` reaches the target no later than the fastest
AutoSimulate variant.

``--plot PNG`` draws the table's curves (with ``--load`` too): each row's mean validation reward
against images with a band of ± one sd over seeds, the reference and the target.

    .venv/bin/python benchmarks/autosimulate_reward.py --problem gmm2d --seeds 3 --trials 20
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import optuna

from samplers.autosimulate import AutoSimulateSampler
from samplers.hypergradient import METHODS, expected_error
from simsearch.problems import get

BLACK_BOX = ("tpe", "reinforce")
FIXED = "fixed"  # --score accumulated: the accumulated model fine-tuned on the start ψ's data


VAL_LOSSES = {"train": None, "expected_error": expected_error}


def _sampler(name: str, problem, seed: int, val_loss: str, step: dict):
    start = problem.simulator.space.to_params(problem.simulator.init_psi())
    if name in METHODS:
        return AutoSimulateSampler(name, init=problem.simulator, seed=seed,
                                   val_loss=VAL_LOSSES[val_loss], **step)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == FIXED:
        return optuna.samplers.PartialFixedSampler(start, optuna.samplers.RandomSampler(seed))
    from samplers.reinforce import ReinforceSampler

    return ReinforceSampler(init=start, seed=seed)


RULES = {"next": AutoSimulateSampler.current_params, "best": AutoSimulateSampler.best_params,
         "value": lambda study: AutoSimulateSampler.best_params(study, fresh=False)}


def run_one(problem, name: str, seed: int, trials: int, every: int, val_loss: str,
            step: dict, rules: list[str], accumulated: bool = False) -> dict[str, list[dict]]:
    """One study; the curve of each recommendation rule (black-box samplers: ``best`` only), or
    with ``accumulated`` the curve of the accumulated model (``--score accumulated``)."""
    if name in METHODS or name == FIXED:
        objective = problem.objective(accumulate=True, seed=seed)
        model = objective.model
    else:  # the companion starts from the weights an accumulated objective of this seed has
        model = problem.objective(accumulate=True, seed=seed).model if accumulated else None
        objective = problem.objective(seed=seed, companion=model)
    sampler = _sampler(name, problem, seed, val_loss, step)
    if name in METHODS:
        sampler.prepare(objective)  # the objective's fresh_every: the sampler's
    study = optuna.create_study(direction=objective.direction, sampler=sampler,
                                pruner=optuna.pruners.NopPruner())
    scored: dict[tuple, dict[str, float]] = {}

    def fresh_score(recommendation):  # a fresh model on the recommended ψ; None: none yet
        def score(study: optuna.Study) -> dict[str, float] | None:
            params = recommendation(study)
            if params is None:
                return None
            key = tuple(sorted(params.items()))
            if key not in scored:
                scored[key] = problem.score(problem.simulator.space.from_params(params), seed=seed)
            return scored[key]
        return score

    if accumulated:
        scorers = {rules[0]: lambda _: {"val": model.evaluate(*problem.val),
                                        "test": model.evaluate(*problem.test)}}
    elif name in METHODS:
        scorers = {r: fresh_score(RULES[r]) for r in rules}
    else:
        scorers = {"best": fresh_score(lambda s: s.best_trial.params)}
    curves: dict[str, list[dict]] = {r: [] for r in scorers}
    start = time.perf_counter()

    def checkpoint(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = trial.number + 1
        if done % every and done != trials:
            return
        search_s = time.perf_counter() - start
        images = sum(t.user_attrs.get("images", 0) for t in study.trials)
        for rule, scorer in scorers.items():
            score = scorer(study)
            if score is None:
                continue
            entry = {"trials": done, "images": images, "search_s": search_s, **score}
            if name in METHODS:  # the step-length factor and shrinkage ρ of each step so far
                entry["step_scale"] = [t.system_attrs.get("autosimulate:step_scale")
                                       for t in study.trials]
                entry["shrinkage"] = [t.system_attrs.get("autosimulate:shrinkage")
                                      for t in study.trials]
                entry["chain_shrinkage"] = [t.system_attrs.get("autosimulate:chain_shrinkage")
                                            for t in study.trials]
            curves[rule].append(entry)

    study.optimize(objective, n_trials=trials, callbacks=[checkpoint])
    return curves


def _label(name: str, rule: str, rules: list[str]) -> str:
    """A result row's name: the sampler's, with ``@rule`` when an AutoSimulate run scores several."""
    return f"{name}@{rule}" if name in METHODS and len(rules) > 1 else name


def _base(label: str) -> str:
    return label.split("@")[0]


START = "_start"  # key of the start ψ's scores in a result file
SCORE = "_score"  # key of the --score reading in a result file (absent: fresh)


def _score_start(problem, seeds: range) -> list[dict]:
    return [problem.score(problem.simulator.init_psi(), seed=s) for s in seeds]


def _mean_curve(runs: list[list[dict]], key: str) -> tuple[list[int], np.ndarray]:
    n = min(len(r) for r in runs)
    images = [runs[0][i]["images"] for i in range(n)]
    return images, np.array([[r[i][key] for i in range(n)] for r in runs])


def _images_to(images: list[int], mean: np.ndarray, target: float) -> float:
    hits = [im for im, v in zip(images, mean, strict=True) if v >= target]
    return float(hits[0]) if hits else math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="gmm2d")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--samplers", default=",".join((*METHODS, *BLACK_BOX)))
    parser.add_argument("--val-loss", choices=sorted(VAL_LOSSES), default="train")
    parser.add_argument("--step-size", type=float, default=None,
                        help="AutoSimulate's step_size (default: the sampler's)")
    parser.add_argument("--step-growth", type=float, default=None,
                        help="AutoSimulate's step_growth (default: the sampler's)")
    parser.add_argument("--step-shrink", type=float, default=None,
                        help="AutoSimulate's step_shrink (default: the sampler's)")
    parser.add_argument("--step-scale-max", type=float, default=None,
                        help="upper end of AutoSimulate's step_scale_range (default: the sampler's)")
    parser.add_argument("--step-scale-init", type=float, default=None,
                        help="AutoSimulate's step_scale_init c_0, the first step's factor "
                             "(default: the sampler's)")
    parser.add_argument("--shrinkage", choices=("none", "james_stein"), default=None,
                        help="AutoSimulate's shrinkage of each step by the James–Stein factor of its "
                             "Wald statistic (default: the sampler's)")
    parser.add_argument("--chain-shrinkage", choices=("off", "on"), default=None,
                        help="AutoSimulate's chain_shrinkage: the James–Stein factor of the chain's "
                             "mean natural gradient across trials (default: the sampler's)")
    parser.add_argument("--fresh-every", default=None,
                        help="AutoSimulate's fresh_every: an int k, or 'off' (default: the "
                             "sampler's)")
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="run seeds offset … offset + seeds − 1 (the records use 0: seeds 0, 1, 2; "
                             "choose settings on other seeds)")
    parser.add_argument("--level", type=float, default=None,
                        help="also print the images each sampler's mean val needs to reach this "
                             "fixed level (a selection criterion set before the runs, e.g. an "
                             "earlier record's target)")
    parser.add_argument("--recommend", default="best",
                        help="AutoSimulate's recommendation rule(s), comma-separated: next (the ψ it "
                             "proposes next), best (the best completed trial's ψ, ranked by its "
                             "fresh value where trials have one, else by value) and/or value "
                             "(ranked by value only); not used with --score accumulated")
    parser.add_argument("--score", choices=("fresh", "accumulated"), default="fresh",
                        help="fresh: score each recommended ψ by a fresh model (the records); "
                             "accumulated: score the accumulated model itself against the fixed "
                             "start ψ's (the papers' reading; add 'fixed' to --samplers)")
    parser.add_argument("--out", default="out/autosimulate-reward")
    parser.add_argument("--load", nargs="+", metavar="JSON",
                        help="tabulate these result files of earlier runs instead of running")
    parser.add_argument("--plot", metavar="PNG", default=None,
                        help="also draw the table's curves (mean ± sd over seeds against images, "
                             "with the reference and the target) into this PNG file")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = get(args.problem)
    results: dict[str, list[list[dict]]] = {}
    init: list[dict] | None = None
    if args.load:
        for path in args.load:
            loaded = json.loads(Path(path).read_text())
            init = loaded.pop(START, None) or init  # the start ψ scored in the run's own process
            if loaded.pop(SCORE, "fresh") != args.score:
                parser.error(f"{path} holds another reading than --score {args.score}")
            results.update(loaded)
        args.seeds = min(len(runs) for runs in results.values())
        args.trials = max(r[-1]["trials"] for runs in results.values() for r in runs)
    else:
        default = AutoSimulateSampler()
        step = {k: v for k, v in (("step_size", args.step_size), ("step_growth", args.step_growth),
                                  ("step_shrink", args.step_shrink),
                                  ("step_scale_init", args.step_scale_init)) if v is not None}
        if args.step_scale_max is not None:
            step["step_scale_range"] = (default.step_scale_range[0], args.step_scale_max)
        if args.shrinkage is not None:
            step["shrinkage"] = None if args.shrinkage == "none" else args.shrinkage
        if args.chain_shrinkage is not None:
            step["chain_shrinkage"] = args.chain_shrinkage == "on"
        if args.fresh_every is not None:
            step["fresh_every"] = None if args.fresh_every == "off" else int(args.fresh_every)
        shown = {"step_size": default.step_size, "step_growth": default.step_growth,
                 "step_shrink": default.step_shrink, "step_scale_range": default.step_scale_range,
                 "step_scale_init": default.step_scale_init, "shrinkage": default.shrinkage,
                 "chain_shrinkage": default.chain_shrinkage, "fresh_every": default.fresh_every,
                 **step}
        seeds = range(args.seed_offset, args.seed_offset + args.seeds)
        print(f"AutoSimulate validation loss: {args.val_loss}, "
              + ", ".join(f"{k} {v}" for k, v in shown.items()) + f"; seeds {list(seeds)}")
        accumulated = args.score == "accumulated"
        names = args.samplers.split(",")
        if FIXED in names and not accumulated:
            parser.error(f"--samplers {FIXED} is the reference of --score accumulated only")
        init = None if accumulated else _score_start(problem, seeds)
        rules = ["model"] if accumulated else args.recommend.split(",")
        if not accumulated and any(r not in RULES for r in rules):
            parser.error(f"--recommend must list rules among {sorted(RULES)}, got {args.recommend!r}")
        print("scored: each sampler's accumulated model" if accumulated else
              f"AutoSimulate recommends: {', '.join(rules)}; black-box samplers: best trial")
        for name in names:
            runs = [run_one(problem, name, s, args.trials, args.every, args.val_loss, step, rules,
                            accumulated) for s in seeds]
            for rule in runs[0]:
                results[_label(name, rule, rules)] = [r[rule] for r in runs]
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.problem}.json").write_text(
            json.dumps({START: init, SCORE: args.score, **results}, indent=1))

    curves = {name: _mean_curve(runs, "val") for name, runs in results.items()}
    if args.score == "accumulated":
        if FIXED not in curves or len(curves) == 1:
            if not args.load:  # a run split over processes: the rest is in another file
                print(f"saved; tabulate with --load beside the rest of the rows (with {FIXED})")
                return
            parser.error(f"--score accumulated tabulates searching samplers against {FIXED}: "
                         f"--load files holding both, got rows {sorted(curves)}")
        print(f"problem {args.problem}: M={problem.n_samples}, ξ={problem.epochs}, {args.trials} "
              f"trials, {args.seeds} seeds; scored: the accumulated models; reference: {FIXED}")
        reference = dict(zip(curves[FIXED][0], curves[FIXED][1].mean(0), strict=True))
        if any(i not in reference for im, _ in curves.values() for i in im):
            print(f"(some checkpoints are not {FIXED}'s: each gain below uses only those it has)")
        ref_name = FIXED
    else:
        if init is None:
            print("(the loaded runs hold no start score: the start ψ is scored now, with the code "
                  "of now)")
            init = _score_start(problem, range(args.seed_offset, args.seed_offset + args.seeds))
        print(f"problem {args.problem}: M={problem.n_samples}, ξ={problem.epochs}, {args.trials} "
              f"trials, {args.seeds} seeds; scored with {problem.eval_n_samples} samples × "
              f"{problem.eval_epochs} epochs")
        start_val, ref_name = float(np.mean([r["val"] for r in init])), "start ψ"
        print(f"start ψ (declared init): val {start_val:.3f}, "
              f"test {np.mean([r['test'] for r in init]):.3f}")
        reference = {i: start_val for im, _ in curves.values() for i in im}
    budget = {name: im[-1] for name, (im, _) in curves.items()}  # loaded runs may differ in length
    images = sorted({i for im, _ in curves.values() for i in im})
    scored = "accumulated model" if args.score == "accumulated" else "recommended ψ"
    print(f"\nmean validation reward (± sd over seeds) of the {scored}, by images generated:\n")
    print("| sampler | " + " | ".join(str(i) for i in images) + " | final test | search s |")
    print("|---|" + "---|" * (len(images) + 2))
    for name, runs in results.items():
        own, vals = curves[name]
        _, tests = _mean_curve(runs, "test")
        secs = np.mean([r[-1]["search_s"] for r in runs])
        at = {i: f"{m:.3f} ± {s:.3f}"
              for i, m, s in zip(own, vals.mean(0), vals.std(0, ddof=1), strict=True)}
        cells = [at.get(i, "") for i in images]
        print(f"| {name} | " + " | ".join(cells) + f" | {tests.mean(0)[-1]:.3f} | {secs:.0f} |")
    gain = {name: float(np.mean([v - reference[i] for i, v in zip(im, vals.mean(0), strict=True)
                                 if i in reference])) for name, (im, vals) in curves.items()}
    print(f"\nmean over the checkpoints of (mean val − {ref_name}'s val): "
          + ", ".join(f"{n} {g:+.3f}" for n, g in gain.items()))
    best = max(vals.mean(0)[-1] for name, (_, vals) in curves.items() if name != FIXED)
    target = best - 0.05 * abs(best)  # 95 % of the best; for a negative reward, 5 % worse than it
    need = {name: _images_to(im, vals.mean(0), target) for name, (im, vals) in curves.items()}
    print(f"\nbest final mean val {best:.3f}; target 95 % = {target:.3f}; images to reach it: "
          + ", ".join(f"{n} {v:g}" if math.isfinite(v) else f"{n} > {budget[n]}" for n, v in need.items()))
    if args.level is not None:
        fixed = {name: _images_to(im, vals.mean(0), args.level) for name, (im, vals) in curves.items()}
        print(f"images to reach the fixed level {args.level:.3f}: " + ", ".join(
            f"{n} {v:g}" if math.isfinite(v) else f"{n} > {budget[n]}" for n, v in fixed.items()))
    auto = min((need[n] for n in need if _base(n) in METHODS), default=math.inf)
    black = min((need[n] for n in need if _base(n) in BLACK_BOX), default=math.inf)
    # a black-box sampler that never reaches the target needs more than its own budget: the
    # smallest such budget bounds what the fastest of them needs from below
    black_budget = min((budget[n] for n in need if _base(n) in BLACK_BOX), default=0)
    if math.isinf(auto):
        verdict = "NOT MET: no AutoSimulate variant reaches the target"
    elif math.isinf(black):
        verdict = ("MET" if 2.5 * auto <= black_budget else "INCONCLUSIVE") + (
            f": AutoSimulate {auto:g}; no black-box sampler reaches the target within {black_budget}")
    else:
        verdict = ("MET" if auto <= black / 2.5 else "NOT MET") + (
            f": {auto:g} vs {black:g} / 2.5 = {black / 2.5:g}")
    if args.score == "accumulated":  # the same training without any search gets there as soon
        formal = need[FIXED] <= auto
        why = f"{FIXED}, with no search, reaches it at {need[FIXED]:g} images"
    else:
        formal = target <= start_val
        why = (f"the target {target:.3f} is at or below the start ψ's own val {start_val:.3f}, "
               "where every AutoSimulate variant starts")
    if formal and not verdict.startswith("NOT MET"):
        verdict = f"FORMAL ({verdict}): {why}: no evidence that AutoSimulate finds a good ψ sooner"
    print(f"goal (best AutoSimulate ≤ 1/2.5 of the black-box images): {verdict}")
    if args.plot:
        _plot(Path(args.plot), curves, reference, target, ref_name,
              f"{args.problem}: {scored}, {args.seeds} seeds (M={problem.n_samples}, "
              f"ξ={problem.epochs})")
        print(f"plot: {args.plot}")


def _plot(path: Path, curves: dict[str, tuple[list[int], np.ndarray]], reference: dict[int, float],
          target: float, ref_name: str, title: str) -> None:
    """The curves of the table: each row's mean validation reward against images, a band of ± one
    sd over seeds, the reference (the start ψ's val, or ``fixed``'s curve) and the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (name, (images, vals)) in enumerate(curves.items()):
        if name == FIXED:  # drawn as the reference
            continue
        mean, sd = vals.mean(0), vals.std(0, ddof=1) if len(vals) > 1 else np.zeros(len(images))
        style = "--" if _base(name) in BLACK_BOX else "-"
        ax.plot(images, mean, style, color=f"C{i % 10}", label=name, linewidth=1.4)
        ax.fill_between(images, mean - sd, mean + sd, color=f"C{i % 10}", alpha=0.12, linewidth=0)
    xs = sorted(reference)
    ax.plot(xs, [reference[x] for x in xs], ":", color="black", label=ref_name)
    ax.axhline(target, color="grey", linewidth=0.8, label=f"target {target:.3f}")
    ax.set_xlabel("images generated")
    ax.set_ylabel("validation reward")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
