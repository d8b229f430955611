import importlib.util
import json
import sys
from pathlib import Path

import optuna

from simsearch.cli import main

ROOT = Path(__file__).resolve().parents[1]


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_drop_into_study_mixes_user_and_simulator_parameters():
    study = load_example("drop_into_study").main(["--trials", "3"])
    params = study.trials[0].params
    assert {"lr", "width", "means[0,0,0]", "log_std[1,1,1]"} <= set(params)
    assert len(params) == 2 + 16


def test_wrap_lightning_model_unmodified(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = load_example("wrap_lightning_model").main(["--trials", "3"])
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all(len(t.intermediate_values) == 5 for t in study.trials)
    assert list(tmp_path.iterdir()) == []


def test_cli_run_leaves_a_loadable_sqlite_study_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--problem", "gmm2d", "--sampler", "random", "--trials", "3", "--out", str(out)]) == 0
    assert "best validation reward" in capsys.readouterr().out
    study = optuna.load_study(study_name="gmm2d-random-seed0", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 3
    assert set(json.loads((out / "best_params.json").read_text())) == set(study.best_trial.params)
    assert main(["run", "--sampler", "random", "--trials", "5", "--out", str(out)]) == 0
    assert len(optuna.load_study(study_name="gmm2d-random-seed0",
                                 storage=f"sqlite:///{out / 'study.db'}").trials) == 5


def test_cli_errors_name_the_problem(capsys):
    assert main(["run", "--problem", "nope", "--trials", "1"]) == 2
    assert "unknown problem 'nope'; known problems: gmm2d" in capsys.readouterr().err
    assert main(["problems"]) == 0
    assert "gmm2d" in capsys.readouterr().out


def test_cli_metasim_passes_the_config_defaults_and_overrides(monkeypatch, tmp_path):
    import simsearch.metasim as metasim

    seen = []
    monkeypatch.setattr(metasim, "run_metasim", lambda *args: seen.append(args))
    assert main(["metasim", "--seeds", "2", "--out", str(tmp_path)]) == 0
    assert main(["metasim", "--modes", "both", "--restarts", "1", "--iterations", "7",
                 "--out", str(tmp_path)]) == 0
    (problem, modes, seeds, config, out), override = seen[0], seen[1][3]
    assert (problem, modes, seeds, out) == ("digits-rot", ["mmd", "task", "both"], [0, 1],
                                            str(tmp_path))
    assert config == metasim.MetaSimConfig()  # the CLI runs what the Python API runs by default
    assert (override.restarts, override.iterations, seen[1][1]) == (1, 7, ["both"])
