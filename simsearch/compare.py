"""Compare samplers side by side on one problem, one budget, several seeds (``simsearch compare``).

Every sampler runs on the same problem with the same M (``n_samples``) and ξ (``epochs``) per trial,
the same seeds 0 … N−1 and the same budget: T counted trials, or B images (a trial that fails
before it simulates counts the M images it asked for). Each (sampler, seed) pair is one Optuna study
named ``compare-<problem>-<sampler>-seed<s>`` in one storage (default: ``studies.db``, SQLite, in the
output folder; it opens in ``optuna-dashboard``). Nothing is pruned: every trial trains its ξ
epochs, as in the papers (Optuna's default MedianPruner would stop half of them). Samplers with
``needs_accumulated_model`` (e.g. AutoSimulate) get an objective whose model is kept and
fine-tuned across trials, checkpointed in ``checkpoints/`` so a resumed study continues with the
same θ.

**Final evaluation** (LTS §4, AutoSimulate §5 "test accuracy"): for each study, a fresh model is
trained on ``problem.eval_n_samples`` samples drawn at the best validation trial's ψ for
``problem.eval_epochs`` epochs (for ``gmm2d``: 2000 samples, 10 epochs, against M = 500, ξ = 5 in
the search) and scored once on the held-out test set (``Problem.score(psi, seed)``, with the
study's seed, so every sampler's ψ is judged with the same data and model initialisation seeds).
The best trial is the one ``study.best_trial`` names, except in an AutoSimulate study whose trials
recorded fresh values (``fresh_every``): there it is the best by fresh value
(:func:`simsearch.objective.recommended_trial`), so that its *Val* is, as a black-box trial's, a
fresh model's reward on that trial's own data. For accumulated samplers the accumulated model as it
was after that same best trial is also scored on the test set (its own row, "… (accumulated θ)",
with the same Time and Images).

**Table** (AutoSimulate Tables 2–3: Method | Time | Images | Val | Test), mean ± std over seeds:
*Time* is the wall seconds spent up to and including the best validation trial (the sum of the
trials' start → complete durations, so sampling, simulating, training, evaluating and sampler hooks
count, and time a resumed run spent stopped does not); *Images* the images generated up to and
including it (sum of the trials' ``images`` attributes); *Val* its validation reward; *Test* the
final evaluation's test score.

**Resuming.** The settings are written to ``compare.json``; running again with the same settings
resumes: studies that reached the budget are not redone (nor their final evaluation, stored as a
study attribute), unfinished ones continue. A trial left RUNNING by a killed process, or ended by an
exception that escaped the objective (Ctrl-C), does not count towards the budget: a study's run
starts by failing its RUNNING trials, so each (sampler, seed) study belongs to one ``compare``
process at a time — run two comparisons on one storage only with different output settings, and
share one study between processes with ``simsearch worker`` instead. A sampler with a
``settings()`` method (AutoSimulateSampler) records its options in each study it begins, and a
study is continued only by a sampler with the same options: after an upgrade that changed a
default, resuming refuses, naming the option (and so does a folder begun before the options were
recorded, 2026-12-06; :func:`simsearch.sampler_registry.check_sampler_settings`, also used by
``simsearch run`` and ``simsearch worker``). Samplers may be
added to (or left out of) a comparison: each (sampler, seed) study stands on its own, and the
report covers the samplers of the latest call. An output folder or storage that holds a comparison
with any other setting different is refused.

>>> import tempfile
>>> result = compare("gmm2d", ["random", "bayesopt"], seeds=1, trials=2, out=tempfile.mkdtemp(),
...                  progress=False, report=False)
>>> [(row["method"], row["images"]["mean"] <= 2 * 500) for row in result.table]
[('random', True), ('bayesopt', True)]
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from simsearch import problems
from simsearch.objective import ranking_values, recommended_trial
from simsearch.problems import mean_std
from simsearch.sampler_registry import SAMPLERS, check_sampler_settings, make_sampler
from simsearch.validation import check_positive_int

__all__ = ["CompareResult", "Settings", "compare", "load_result"]

SETTINGS_FILE = "compare.json"
_ATTR = "compare_settings"


@dataclass(frozen=True)
class Settings:
    """What makes two comparisons the same comparison (``compare.json``)."""

    problem: str
    samplers: tuple[str, ...]
    seeds: int
    trials: int | None
    budget_images: int | None
    n_samples: int
    epochs: int
    eval_n_samples: int
    eval_epochs: int
    storage: str | None  # None: the default SQLite file in the output folder (which may move)

    def url(self, out: str | Path) -> str:
        """The Optuna storage URL of this comparison in output folder ``out``."""
        return self.storage or f"sqlite:///{Path(out) / 'studies.db'}"

    def study_name(self, sampler: str, seed: int) -> str:
        return f"compare-{self.problem}-{sampler}-seed{seed}"

    def budget(self) -> int:
        return self.trials if self.trials is not None else self.budget_images  # type: ignore[return-value]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "samplers": list(self.samplers)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        return cls(**{**data, "samplers": tuple(data["samplers"])})


@dataclass
class CompareResult:
    """Everything a comparison produced, read back from its storage.

    ``table``: one row per method (mean ± std over seeds); ``studies``: one record per (sampler,
    seed); ``trials``: one record per trial; ``references``: reference points of the problem.
    """

    settings: Settings
    out: Path
    table: list[dict[str, Any]]
    studies: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    references: list[dict[str, Any]] = field(default_factory=list)


def compare(
    problem: str,
    samplers: Sequence[str],
    seeds: int,
    trials: int | None = None,
    budget_images: int | None = None,
    storage: str | None = None,
    out: str | Path = "out/compare",
    jobs: int = 1,
    progress: bool = True,
    report: bool = True,
) -> CompareResult:
    """Run (or resume) every sampler × seed study, evaluate and return the results table.

    Args:
        problem: a name from ``simsearch problems``.
        samplers: names from :data:`~simsearch.sampler_registry.SAMPLERS` or ``module:Class``.
        seeds: number of seeds N ≥ 1 (seeds 0 … N−1).
        trials, budget_images: the budget of every study — exactly one of them, ≥ 1.
        storage: an Optuna storage URL; default ``sqlite:///<out>/studies.db``.
        out: output folder (settings, storage, checkpoints, report).
        jobs: studies run at the same time (separate processes).
        progress: show a progress bar on stderr.
        report: score the problem's reference points and write ``report.md``, ``trials.csv``,
            ``results.json`` and the PNG plots.
    """
    settings = _settings(problem, samplers, seeds, trials, budget_images, storage, out, jobs)
    out = Path(out)
    _check_settings_file(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    _open_storage(settings.url(out))
    pairs = [(s, seed) for s in settings.samplers for seed in range(settings.seeds)]
    _check_existing_studies(settings, pairs, out)
    (out / SETTINGS_FILE).write_text(json.dumps(settings.to_json(), indent=2) + "\n")
    bar = _Progress(settings, settings.url(out), pairs, progress)
    try:
        if jobs == 1:
            for sampler, seed in pairs:
                bar.describe(sampler, seed)
                _run_study(settings, sampler, seed, str(out), bar.trial_done)
        else:
            _run_parallel(settings, pairs, out, jobs, bar)
    finally:
        bar.close()
    result = load_result(out)
    if report:
        from simsearch.report import write_report

        result.references = _references(settings, out)
        write_report(result)
    return result


# -- validation --------------------------------------------------------------------------------
def _settings(problem, samplers, seeds, trials, budget_images, storage, out, jobs) -> Settings:
    prob = problems.get(problem)  # ValueError listing the known problems
    if isinstance(samplers, str) or not samplers:
        raise ValueError(f"samplers must be a non-empty list of names, got {samplers!r}")
    samplers = tuple(samplers)
    if len(set(samplers)) != len(samplers):
        raise ValueError(f"samplers: each name once, got {list(samplers)}")
    for name in samplers:
        if name not in SAMPLERS and ":" not in name:
            raise ValueError(f"unknown sampler {name!r}; known samplers: {', '.join(SAMPLERS)} "
                             "or module:Class")
        make_sampler(name, 0)  # imports module:Class names and checks they construct
    check_positive_int("seeds", seeds)
    check_positive_int("jobs", jobs)
    if (trials is None) == (budget_images is None):
        raise ValueError("give exactly one budget: trials (--trials T) or images (--budget-images B), "
                         f"got trials={trials!r}, budget_images={budget_images!r}")
    if trials is not None:
        check_positive_int("trials", trials)
    else:
        check_positive_int("budget_images", budget_images)
    return Settings(
        problem=problem, samplers=samplers, seeds=seeds, trials=trials, budget_images=budget_images,
        n_samples=prob.n_samples, epochs=prob.epochs, eval_n_samples=prob.eval_n_samples,
        eval_epochs=prob.eval_epochs, storage=storage,
    )


def _check_settings_file(out: Path, settings: Settings) -> None:
    path = out / SETTINGS_FILE
    if path.exists():
        _refuse_if_different(json.loads(path.read_text()), settings, f"the output folder {out}")


def _refuse_if_different(
    stored: dict[str, Any], settings: Settings, where: str, ignore: tuple[str, ...] = ("samplers",)
) -> None:
    mine = settings.to_json()
    diff = {k: (stored.get(k), v) for k, v in mine.items() if k not in ignore and stored.get(k) != v}
    if diff:
        lines = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in diff.items())
        raise ValueError(
            f"{where} holds a different comparison ({lines}); use another --out folder, or the "
            "same settings to resume it"
        )


def _check_study(study: optuna.Study, settings: Settings, sampler: optuna.samplers.BaseSampler,
                 sampler_name: str) -> None:
    """Refuse a study of another comparison, or begun with other sampler options."""
    stored = study.user_attrs.get(_ATTR)
    if stored is not None:
        _refuse_if_different(stored, settings, f"study {study.study_name!r}",
                             ignore=("samplers", "storage"))  # a study is where it is
    check_sampler_settings(study, sampler, sampler_name,
                           "use another --out folder (and another --storage, if one was given)")


def _check_existing_studies(settings: Settings, pairs: Sequence[tuple[str, int]], out: Path) -> None:
    """Check every study this comparison would resume before any of them runs, so that a refusal
    comes before work on the others (which would otherwise run first, one by one or in parallel)."""
    url = settings.url(out)
    existing = set(optuna.study.get_all_study_names(url))
    problem = problems.get(settings.problem)
    for sampler_name, seed in pairs:
        name = settings.study_name(sampler_name, seed)
        if name in existing:
            sampler = make_sampler(sampler_name, seed)
            problem.objective_for(sampler, seed)  # prepare(): the options a run would have
            _check_study(optuna.load_study(study_name=name, storage=url, sampler=sampler),
                         settings, sampler, sampler_name)


def _open_storage(url: str) -> None:
    try:
        optuna.storages.get_storage(url)
    except Exception as exc:  # any driver / URL error: say which URL and why
        raise ValueError(f"cannot open storage {url!r}: {type(exc).__name__}: {exc}") from exc


# -- running one study -------------------------------------------------------------------------
def _counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that count towards the budget: finished by the objective (complete, pruned, or
    failed in a phase it reported), not ended by an interruption."""
    return [
        t for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and "fail_phase" in t.user_attrs)
    ]


def _used(trials: Sequence[FrozenTrial], settings: Settings) -> int:
    counted = _counted(trials)
    if settings.trials is not None:
        return len(counted)
    return sum(int(t.user_attrs.get("images", settings.n_samples)) for t in counted)


def _run_study(
    settings: Settings, sampler_name: str, seed: int, out: str,
    on_trial: Callable[[int], None] | None = None,
) -> None:
    """Run one (sampler, seed) study to its budget, then its final evaluation (both resumable)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = problems.get(settings.problem)
    sampler = make_sampler(sampler_name, seed)
    accumulate = bool(getattr(sampler, "needs_accumulated_model", False))
    name = settings.study_name(sampler_name, seed)
    ckpt = Path(out) / "checkpoints" / f"{name}.pt"
    objective = problem.objective_for(sampler, seed, checkpoint_path=ckpt)
    url = settings.url(out)
    study = optuna.create_study(storage=url, study_name=name, sampler=sampler,
                                pruner=optuna.pruners.NopPruner(), direction=objective.direction,
                                load_if_exists=True)
    _check_study(study, settings, sampler, sampler_name)
    if study.user_attrs.get(_ATTR) is None:
        study.set_user_attr(_ATTR, settings.to_json())
        study.set_user_attr("sampler", sampler_name)
        study.set_user_attr("seed", seed)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # left by a killed run

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        if accumulate and trial.state == TrialState.COMPLETE and (
                recommended_trial(study).number == trial.number):
            shutil.copyfile(ckpt, ckpt.with_suffix(".best.pt"))
        if on_trial is not None:
            on_trial(_used([trial], settings))

    while (left := settings.budget() - _used(study.get_trials(deepcopy=False), settings)) > 0:
        n = left if settings.trials is not None else math.ceil(left / settings.n_samples)
        study.optimize(objective, n_trials=n, callbacks=[after_trial])
    if "final" not in study.user_attrs:
        _final_evaluation(study, problem, seed, accumulate, ckpt.with_suffix(".best.pt"))


def _final_evaluation(study, problem, seed: int, accumulate: bool, best_ckpt: Path) -> None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        study.set_user_attr("final", {"trial": None})
        return
    best = recommended_trial(study)  # by fresh values where AutoSimulate recorded them
    psi = problem.simulator.space.from_params(best.params)
    final: dict[str, Any] = {"trial": best.number, **problem.score(psi, seed)}
    if accumulate and best_ckpt.exists():
        model = problem.objective(accumulate=True, seed=seed).model.load(best_ckpt)
        final["accumulated_val"] = float(model.evaluate(*problem.val))
        final["accumulated_test"] = float(model.evaluate(*problem.test))
    study.set_user_attr("final", final)


def _run_parallel(settings: Settings, pairs, out: Path, jobs: int, bar: _Progress) -> None:
    ctx = multiprocessing.get_context("spawn")  # no forked torch / database state
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx,
                                                initializer=_worker_init, initargs=(jobs,)) as pool:
        futures = [pool.submit(_run_study, settings, s, seed, str(out)) for s, seed in pairs]
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=2.0)
            for f in done:
                f.result()  # re-raise a worker's error here
            bar.poll()


def _worker_init(jobs: int) -> None:
    import os

    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))


class _Progress:
    """One bar over samplers × seeds × budget (trials or images)."""

    def __init__(self, settings: Settings, url: str, pairs, enabled: bool) -> None:
        self.settings, self.url, self.pairs = settings, url, pairs
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            unit = "trial" if settings.trials is not None else "image"
            self.bar = tqdm(total=settings.budget() * len(pairs), unit=unit, file=sys.stderr,
                            desc=f"compare {settings.problem}", dynamic_ncols=True)
            self.poll()

    def _done(self) -> int:
        total = 0
        for sampler, seed in self.pairs:
            try:
                study = optuna.load_study(study_name=self.settings.study_name(sampler, seed),
                                          storage=self.url)
            except KeyError:
                continue
            total += min(self.settings.budget(), _used(study.get_trials(deepcopy=False), self.settings))
        return total

    def poll(self) -> None:
        if self.bar is not None:
            self.bar.n = self._done()
            self.bar.refresh()

    def describe(self, sampler: str, seed: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{sampler} seed {seed}")

    def trial_done(self, units: int) -> None:
        if self.bar is not None:
            self.bar.update(units)

    def close(self) -> None:
        if self.bar is not None:
            self.poll()
            self.bar.close()


# -- reading results back ----------------------------------------------------------------------
def load_result(out: str | Path) -> CompareResult:
    """The table, studies and trials of the comparison in ``out`` (read from its storage)."""
    out = Path(out)
    path = out / SETTINGS_FILE
    if not path.exists():
        raise ValueError(f"{out} holds no comparison: {SETTINGS_FILE} not found")
    settings = Settings.from_json(json.loads(path.read_text()))
    studies, trials = [], []
    for sampler in settings.samplers:
        for seed in range(settings.seeds):
            try:
                study = optuna.load_study(study_name=settings.study_name(sampler, seed),
                                          storage=settings.url(out))
            except KeyError:
                continue
            summary, records = _summarise(study, sampler, seed, settings)
            studies.append(summary)
            trials.extend(records)
    return CompareResult(settings, out, _table(settings, studies), studies, trials)


def _summarise(study, sampler: str, seed: int, settings: Settings):
    counted = {t.number for t in _counted(study.trials)}
    ranked = ranking_values([t for t in study.trials if t.number in counted])
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    records, images, seconds, best = [], 0, 0.0, None
    for t in study.trials:
        if t.number not in counted:
            continue
        images += int(t.user_attrs.get("images", 0))
        if t.datetime_complete is not None and t.datetime_start is not None:
            seconds += (t.datetime_complete - t.datetime_start).total_seconds()
        rank = ranked.get(t.number)
        if rank is not None and (
            best is None or (rank > best["value"] if maximize else rank < best["value"])
        ):
            best = {"number": t.number, "value": rank, "images": images, "seconds": seconds}
        records.append({
            "sampler": sampler, "seed": seed, "trial": t.number, "state": t.state.name,
            "value": t.value, "best_so_far": None if best is None else best["value"],
            "images": t.user_attrs.get("images"), "cumulative_images": images,
            "cumulative_seconds": seconds,
            **{k: t.user_attrs.get(k) for k in ("simulate_s", "train_s", "evaluate_s", "hook_s")},
            "params": t.params,
        })
    final = study.user_attrs.get("final", {})
    summary = {
        "sampler": sampler, "seed": seed, "study": study.study_name,
        "direction": "maximize" if maximize else "minimize", "trials": len(records),
        "images_total": images, "seconds_total": seconds,
        "best_trial": None if best is None else best["number"],
        "time_to_best_s": None if best is None else best["seconds"],
        "images_to_best": None if best is None else best["images"],
        "val": None if best is None else best["value"],
        "test": final.get("test"), "final_val": final.get("val"),
        "accumulated_val": final.get("accumulated_val"),
        "accumulated_test": final.get("accumulated_test"),
    }
    return summary, records


def _stat(values: list[Any]) -> dict[str, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "n": len(values)}


def _table(settings: Settings, studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for sampler in settings.samplers:
        mine = [s for s in studies if s["sampler"] == sampler]
        if not mine:
            continue
        common = {
            "time_s": _stat([s["time_to_best_s"] for s in mine]),
            "images": _stat([s["images_to_best"] for s in mine]),
        }
        rows.append({"method": sampler, **common, "val": _stat([s["val"] for s in mine]),
                     "test": _stat([s["test"] for s in mine])})
        if any(s["accumulated_test"] is not None for s in mine):
            rows.append({"method": f"{sampler} (accumulated θ)", **common,
                         "val": _stat([s["accumulated_val"] for s in mine]),
                         "test": _stat([s["accumulated_test"] for s in mine])})
    return rows


def _references(settings: Settings, out: Path) -> list[dict[str, Any]]:
    """The problem's reference points (default ψ, real ψ, oracle, ...) trained and scored like a
    final evaluation, once per seed; cached in ``references.json``."""
    path = out / "references.json"
    if path.exists():
        return json.loads(path.read_text())
    problem = problems.get(settings.problem)
    rows = []
    for name, source in problem.reference_sources().items():
        scores = [problem.score(source, seed) for seed in range(settings.seeds)]
        rows.append({"method": name, "val": _stat([s["val"] for s in scores]),
                     "test": _stat([s["test"] for s in scores])})
    path.write_text(json.dumps(rows, indent=2) + "\n")
    return rows
