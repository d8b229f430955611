import optuna
import pytest

from simsearch import problems
from simsearch.problems.gmm2d import REAL_MEANS


def test_unknown_problem_lists_known():
    with pytest.raises(ValueError, match="unknown problem 'nope'; known problems: .*gmm2d"):
        problems.get("nope")


def test_gmm2d_data_and_references(gmm2d):
    assert gmm2d.val[0].shape == (500, 2) and gmm2d.test[0].shape == (2000, 2)
    assert set(gmm2d.reference_sources()) == {"default", "one_component", "oracle"}
    assert gmm2d.real_psi is None  # q (2 components) cannot represent p (3 components)
    assert REAL_MEANS.shape == (2, 3, 2)


def test_gmm2d_reference_points_are_ordered(gmm2d):
    """LTS Table 2's story: 1 Gaussian per class is poor, data from p is near perfect."""
    scores = {name: gmm2d.score(src, seed=0, model="svm")["test"]
              for name, src in gmm2d.reference_sources().items()}
    assert scores["oracle"] > 0.95
    assert scores["one_component"] < 0.8 and scores["default"] < 0.8


def test_a_good_two_component_psi_exists(gmm2d):
    """The checkerboard can be covered with 2 components per class (LTS: 2 Gaussians -> 0.996)."""
    import torch

    means = torch.tensor([[[0.0, 1.5], [0.0, -1.5]], [[0.0, 1.5], [0.0, -1.5]]])
    log_std = torch.log(torch.tensor([[[3.0, 0.6], [0.6, 0.6]], [[0.6, 0.6], [3.0, 0.6]]]))
    score = gmm2d.score({"means": means, "log_std": log_std}, seed=0, model="svm")
    assert score["test"] > 0.9


@pytest.mark.parametrize("name", ["random", "tpe", "gp", "cmaes"])
def test_optuna_samplers_run_unchanged_on_gmm2d(gmm2d, name):
    from simsearch.sampler_registry import make_sampler

    objective = gmm2d.objective(n_samples=100, epochs=1, seed=0)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(name, seed=0))
    study.optimize(objective, n_trials=4)
    assert len(study.trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4


def test_unknown_sampler_lists_known():
    from simsearch.sampler_registry import make_sampler

    with pytest.raises(ValueError, match="unknown sampler 'sgd'; known samplers: random, tpe"):
        make_sampler("sgd")


def test_problem_objective_with_the_svm_model(gmm2d):
    objective = gmm2d.objective(model="svm", n_samples=200, seed=0)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=2)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_objective_for_a_sampler_accumulates_and_prepares(gmm2d, tmp_path):
    from simsearch.sampler_registry import make_sampler

    auto = make_sampler("autosimulate", seed=0)
    objective = gmm2d.objective_for(auto, seed=0, checkpoint_path=tmp_path / "m.pt", n_samples=50)
    assert objective.accumulated and objective.checkpoint_path == tmp_path / "m.pt"
    fresh = gmm2d.objective_for(make_sampler("tpe", seed=0), seed=0)
    assert not fresh.accumulated and fresh.checkpoint_path is None
    reinforce = make_sampler("reinforce", seed=0)
    assert not reinforce._init  # built by name: would start at the centre of the bounds
    gmm2d.objective_for(reinforce, seed=0)
    assert reinforce._init == gmm2d.simulator.space.to_params(gmm2d.simulator.init_psi())
