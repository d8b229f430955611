"""`simsearch compare`: resuming, determinism, the Images column, the report files and bad input."""

from __future__ import annotations

import csv
import dataclasses
import json

import optuna
import pytest

from simsearch import problems
from simsearch.cli import main
from simsearch.compare import compare, load_result
from simsearch.objective import recommended_trial
from simsearch.problems import Problem
from simsearch.problems.gmm2d import make_problem

TINY = "test-tiny-gmm2d"


def _tiny() -> Problem:
    """gmm2d with small data, one epoch and one reference point, so a comparison takes seconds."""
    base = make_problem(n_val=200, n_test=200)
    return dataclasses.replace(base, name=TINY, n_samples=100, epochs=1, eval_n_samples=200,
                               eval_epochs=1, references={})


if TINY not in problems.names():
    problems.register(TINY, _tiny)


def _study(out, sampler: str, seed: int = 0) -> optuna.Study:
    return optuna.load_study(study_name=f"compare-{TINY}-{sampler}-seed{seed}",
                             storage=f"sqlite:///{out / 'studies.db'}")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished comparison, run through the CLI: 2 samplers × 2 seeds, 250 images each."""
    out = tmp_path_factory.mktemp("cmp")
    argv = ["compare", "--problem", TINY, "--samplers", "random,cmaes", "--seeds", "2",
            "--budget-images", "250", "--out", str(out)]
    assert main(argv) == 0
    return out, argv


def test_images_column_is_the_images_generated_up_to_the_best_trial(finished):
    out, _ = finished
    result = load_result(out)
    for summary in result.studies:
        study = _study(out, summary["sampler"], summary["seed"])
        assert len(study.trials) == 3  # ceil(250 / M=100) trials reach the budget
        best = study.best_trial
        assert summary["best_trial"] == best.number
        assert summary["val"] == best.value
        assert summary["images_to_best"] == sum(
            t.user_attrs["images"] for t in study.trials if t.number <= best.number)
        assert summary["test"] == study.user_attrs["final"]["test"]
    for row in result.table:
        mine = [s for s in result.studies if s["sampler"] == row["method"]]
        assert row["images"]["mean"] == pytest.approx(
            sum(s["images_to_best"] for s in mine) / len(mine))


def test_report_files_hold_every_trial_and_the_table(finished):
    out, _ = finished
    result = load_result(out)
    report = (out / "report.md").read_text()
    assert "| Method | Time (s) | Images | Val | Test |" in report
    for row in result.table:
        assert f"| {row['method']} |" in report
    with (out / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.trials) == 2 * 2 * 3
    assert {"means[0,0,0]", "log_std[1,1,1]", "images", "cumulative_images"} <= set(rows[0])
    data = json.loads((out / "results.json").read_text())
    assert data["table"] == result.table
    for name in ("reward_vs_images", "reward_vs_time", "psi_trajectories", "samples_initial",
                 "samples_best"):
        assert (out / f"{name}.png").stat().st_size > 1000
        assert f"({name}.png)" in report


def test_same_settings_resume_and_different_settings_are_refused(finished, capsys):
    out, argv = finished
    before = {s: [t.datetime_complete for t in _study(out, s, 1).trials] for s in ("random", "cmaes")}
    assert main(argv) == 0  # everything is finished: nothing is redone
    assert {s: [t.datetime_complete for t in _study(out, s, 1).trials]
            for s in ("random", "cmaes")} == before
    changed = [a if a != "250" else "300" for a in argv]
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert "holds a different comparison" in err and "budget_images: 250 there, 300 now" in err
    assert [t.datetime_complete for t in _study(out, "cmaes", 1).trials] == before["cmaes"]
    fewer = [a if a != "random,cmaes" else "cmaes" for a in argv]  # samplers may be left out
    assert main(fewer) == 0
    assert [row["method"] for row in load_result(out).table] == ["cmaes"]
    assert [t.datetime_complete for t in _study(out, "cmaes", 1).trials] == before["cmaes"]


def test_interrupted_compare_resumes_without_redoing_finished_studies(tmp_path, monkeypatch):
    make_objective = Problem.objective

    def interrupting(self, *args, **kwargs):
        objective = make_objective(self, *args, **kwargs)

        def run(trial):
            if trial.study.study_name.endswith("-tpe-seed0") and trial.number == 1:
                raise KeyboardInterrupt  # Ctrl-C in the middle of the second study
            return objective(trial)

        run.direction = objective.direction
        return run

    monkeypatch.setattr(Problem, "objective", interrupting)
    with pytest.raises(KeyboardInterrupt):
        compare(TINY, ["random", "tpe"], seeds=1, trials=3, out=tmp_path, progress=False)
    monkeypatch.undo()
    first = _study(tmp_path, "random")
    done = [(t.number, t.datetime_complete) for t in first.trials]
    assert len(done) == 3 and "final" in first.user_attrs
    assert [t.state.name for t in _study(tmp_path, "tpe").trials] == ["COMPLETE", "FAIL"]

    scored = []
    score = Problem.score
    monkeypatch.setattr(Problem, "score", lambda self, *a, **k: scored.append(a) or score(self, *a, **k))
    result = compare(TINY, ["random", "tpe"], seeds=1, trials=3, out=tmp_path, progress=False,
                     report=False)
    assert [(t.number, t.datetime_complete) for t in _study(tmp_path, "random").trials] == done
    assert len(scored) == 1  # only tpe's final evaluation: random's is not redone
    tpe = _study(tmp_path, "tpe")
    assert [t.state.name for t in tpe.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert [s["trials"] for s in result.studies] == [3, 3]  # the interrupted trial does not count
    assert "final" in tpe.user_attrs


def test_two_runs_with_the_same_seeds_give_the_same_rows(tmp_path):
    def rows(folder):
        result = compare(TINY, ["random", "cmaes"], seeds=1, trials=2, out=tmp_path / folder,
                         progress=False, report=False)
        return [{k: v for k, v in r.items() if k != "time_s"} for r in result.table]

    assert rows("a") == rows("b")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--problem", "nope", "--trials", "2"], "unknown problem 'nope'; known problems: gmm2d"),
        (["--samplers", "random,nope", "--trials", "2"], "unknown sampler 'nope'; known samplers: random"),
        (["--samplers", "no_such_module:X", "--trials", "2"], "cannot import X from no_such_module"),
        (["--trials", "0"], "trials must be an int >= 1, got 0"),
        (["--budget-images", "0"], "budget_images must be an int >= 1, got 0"),
        (["--seeds", "0", "--trials", "2"], "seeds must be an int >= 1, got 0"),
        (["--seeds", "-1", "--trials", "2"], "seeds must be an int >= 1, got -1"),
        (["--jobs", "0", "--trials", "2"], "jobs must be an int >= 1, got 0"),
        (["--trials", "2", "--storage", "nosuchdb://x"], "cannot open storage 'nosuchdb://x'"),
    ],
)
def test_bad_input_is_a_clear_error_and_touches_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["compare", "--problem", TINY, "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "compare.json").exists()


def test_budget_is_exactly_one_of_trials_and_images(tmp_path):
    with pytest.raises(ValueError, match="exactly one budget"):
        compare(TINY, ["random"], seeds=1, trials=2, budget_images=200, out=tmp_path)
    with pytest.raises(ValueError, match="exactly one budget"):
        compare(TINY, ["random"], seeds=1, out=tmp_path)


def test_a_study_continues_only_with_the_sampler_options_it_began_with(tmp_path, monkeypatch):
    """AutoSimulateSampler's settings() are stored with each study; a resumed comparison whose
    sampler has other options (as after an upgrade that changed a default) is refused, naming
    the option, and nothing of the study is changed; so is a study begun before the options
    were recorded; with the same options it is read back."""
    from samplers.autosimulate import AutoSimulateSampler
    from simsearch import sampler_registry

    compare(TINY, ["autosimulate-linear"], seeds=1, trials=2, out=tmp_path, progress=False)
    study = _study(tmp_path, "autosimulate-linear")
    stored = study.user_attrs["sampler_settings"]
    assert stored == {**AutoSimulateSampler("linear").settings(), "init": stored["init"]}
    assert stored["init"]  # the simulator's declared ψ, adopted in prepare()
    done = [t.datetime_complete for t in study.trials]
    monkeypatch.setitem(sampler_registry.SAMPLERS, "autosimulate-linear",
                        lambda seed: AutoSimulateSampler("linear", step_scale_range=(0.1, 2.0),
                                                         seed=seed))
    with pytest.raises(ValueError, match=r"other options \(step_scale_init: 10\.0 there, 2\.0 now, "
                                         r"step_scale_range: \[0\.1, 10\.0\] there, \[0\.1, 2\.0\] "
                                         r"now\)"):
        compare(TINY, ["random", "autosimulate-linear"], seeds=1, trials=2, out=tmp_path,
                progress=False)
    assert [t.datetime_complete for t in _study(tmp_path, "autosimulate-linear").trials] == done
    names = optuna.study.get_all_study_names(f"sqlite:///{tmp_path / 'studies.db'}")
    assert names == [f"compare-{TINY}-autosimulate-linear-seed0"]  # refused before random ran
    monkeypatch.undo()
    with monkeypatch.context() as m:  # a study begun before the options were recorded
        m.setattr(sampler_registry, "SETTINGS_ATTR", "sampler_settings_not_written_yet")
        with pytest.raises(ValueError, match=r"has trials but no record of its sampler's options"):
            compare(TINY, ["autosimulate-linear"], seeds=1, trials=2, out=tmp_path, progress=False)
    result = compare(TINY, ["autosimulate-linear"], seeds=1, trials=2, out=tmp_path, progress=False)
    assert result.table[0]["method"] == "autosimulate-linear"
    assert [t.datetime_complete for t in _study(tmp_path, "autosimulate-linear").trials] == done


def test_simsearch_run_continues_a_study_only_with_the_sampler_options_it_began_with(
        tmp_path, monkeypatch, capsys):
    """`simsearch run` records AutoSimulateSampler's options and refuses to resume with others
    (exit status 2, the option named), leaving the study as it was."""
    from samplers.autosimulate import AutoSimulateSampler
    from simsearch import sampler_registry

    argv = ["run", "--problem", TINY, "--sampler", "autosimulate-linear", "--trials", "1",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    monkeypatch.setitem(sampler_registry.SAMPLERS, "autosimulate-linear",
                        lambda seed: AutoSimulateSampler("linear", step_size=0.2, seed=seed))
    assert main([a if a != "1" else "2" for a in argv]) == 2
    assert "step_size: 0.1 there, 0.2 now" in capsys.readouterr().err
    study = optuna.load_study(study_name=f"{TINY}-autosimulate-linear-seed0",
                              storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert len(study.trials) == 1


def test_autosimulate_studies_are_ranked_by_fresh_values_in_compare_and_run(tmp_path, capsys):
    """With AutoSimulate's default fresh_every=2, trials 0 and 2 of three carry a fresh model's
    reward; compare's best trial, its Val, the final evaluation, the accumulated-θ checkpoint and
    `simsearch run`'s best_params.json all come from the best of those, never from trial 1."""
    result = compare(TINY, ["autosimulate-linear"], seeds=1, trials=3, out=tmp_path / "cmp",
                     progress=False)
    study = _study(tmp_path / "cmp", "autosimulate-linear")
    fresh = {t.number: t.user_attrs.get("fresh_value") for t in study.trials}
    assert fresh[1] is None and None not in (fresh[0], fresh[2])
    best = max((0, 2), key=lambda n: (fresh[n], -n))
    assert recommended_trial(study).number == best
    (summary,) = result.studies
    assert summary["best_trial"] == study.user_attrs["final"]["trial"] == best
    assert summary["val"] == fresh[best]
    # the "(accumulated θ)" row scores the accumulated model as it was after that same trial
    assert summary["accumulated_val"] == pytest.approx(study.trials[best].value, abs=1e-6)
    assert summary["images_to_best"] == 100 * (best + 1)

    argv = ["run", "--problem", TINY, "--sampler", "autosimulate-linear", "--trials", "3",
            "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    study = optuna.load_study(study_name=f"{TINY}-autosimulate-linear-seed0",
                              storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    best = recommended_trial(study)
    assert best.number in (0, 2)
    shown = f"best fresh-model validation reward {best.user_attrs['fresh_value']:.4f} " \
            f"(trial {best.number})"
    assert shown in capsys.readouterr().out
    written = json.loads((tmp_path / "run" / "best_params.json").read_text())
    assert written == pytest.approx(best.params)


def test_a_study_is_not_continued_by_a_sampler_with_other_recorded_options(tmp_path):
    """A study begun by a sampler without settings() (random) has trials and no record: an
    AutoSimulate run refuses to continue it, naming the sampler that began it; a study begun by
    AutoSimulate is not continued by random either."""
    from simsearch.cli import run_study

    run_study(TINY, "random", 1, out=tmp_path, study_name="a", show_progress=False)
    with pytest.raises(ValueError, match=r"study 'a' has trials but no record .*begun by 'random'"):
        run_study(TINY, "autosimulate-linear", 2, out=tmp_path, study_name="a", show_progress=False)
    run_study(TINY, "autosimulate-linear", 1, out=tmp_path, study_name="b", show_progress=False)
    with pytest.raises(ValueError, match=r"begun by 'autosimulate-linear', whose options are "
                                         r"recorded; sampler 'random' cannot continue it"):
        run_study(TINY, "random", 2, out=tmp_path, study_name="b", show_progress=False)
    for name in ("a", "b"):
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'study.db'}")
        assert len(study.trials) == 1
