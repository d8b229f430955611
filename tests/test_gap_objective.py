"""The MMD² as an objective, as a second objective, and as a recorded user attribute."""

import math

import optuna
import pytest

from simsearch import SimulatorObjective, trial_seed
from simsearch.gap_objective import DistributionGapObjective
from simsearch.mmd import distribution_gap


def _objective(problem):
    return SimulatorObjective(problem.simulator, problem.make_model, problem.val, n_samples=100, epochs=1,
                              seed=3)


def test_gap_alone_is_the_objective_of_a_study_without_labels(gmm2d):
    gap = DistributionGapObjective(gmm2d.val[0], simulator=gmm2d.simulator, n_samples=150, seed=5)
    study = optuna.create_study(directions=gap.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(gap, n_trials=2)
    for trial in study.trials:
        psi = gmm2d.simulator.space.from_params(trial.params)
        x = gmm2d.simulator.simulate(psi, 150, trial_seed(5, trial.number)).x
        assert trial.value == pytest.approx(distribution_gap(x, gmm2d.val[0]))
        assert trial.user_attrs["mmd2"] == trial.value
    assert gap.directions == ["minimize"]


def test_gap_is_recorded_on_the_data_the_model_was_trained_on(gmm2d):
    objective = _objective(gmm2d)
    gap = DistributionGapObjective(gmm2d.val[0], objective=objective)
    study = optuna.create_study(directions=gap.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(gap, n_trials=2)
    trial = study.trials[1]
    assert 0.0 <= trial.value <= 1.0  # the reward (accuracy), not the gap
    psi = gmm2d.simulator.space.from_params(trial.params)
    trained_on = objective.simulator.simulate(psi, objective.n_samples, trial_seed(objective.seed, 1)).x
    assert trial.user_attrs["mmd2"] == pytest.approx(distribution_gap(trained_on, gmm2d.val[0]))
    assert {"images", "train_s", "mmd_s"} <= set(trial.user_attrs)


def test_reward_and_gap_as_two_objectives_give_a_pareto_front(gmm2d):
    gap = DistributionGapObjective(gmm2d.val[0], objective=_objective(gmm2d), multi_objective=True)
    assert gap.directions == ["maximize", "minimize"]
    study = optuna.create_study(directions=gap.directions, sampler=optuna.samplers.NSGAIISampler(seed=0))
    study.optimize(gap, n_trials=3)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    front = study.best_trials
    assert front and all(len(t.values) == 2 and t.values[1] == t.user_attrs["mmd2"] for t in front)
    for t in study.trials:  # nothing on the front is dominated by another trial
        for f in front:
            assert not (t.values[0] >= f.values[0] and t.values[1] <= f.values[1] and t.values != f.values)
    assert not math.isnan(front[0].values[0])


def test_bad_arguments_are_named(gmm2d):
    with pytest.raises(ValueError, match="exactly one of simulator="):
        DistributionGapObjective(gmm2d.val[0])
    with pytest.raises(ValueError, match="multi_objective=True needs objective="):
        DistributionGapObjective(gmm2d.val[0], simulator=gmm2d.simulator, multi_objective=True)
    with pytest.raises(ValueError, match="n_samples must be an int >= 2, got 1"):
        DistributionGapObjective(gmm2d.val[0], simulator=gmm2d.simulator, n_samples=1)
