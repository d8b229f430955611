import copy
import math
import os

import numpy as np
import optuna
import pytest
import pytorch_lightning as pl
import torch

from lightning_modules import AccumulatedMainTaskModule, MainTaskModule
from simsearch import SimulatorObjective
from simsearch.problems.gmm2d import GaussianMixtureSimulator


def small_objective(gmm2d, **kw):
    kw.setdefault("n_samples", 200)
    kw.setdefault("epochs", 2)
    return gmm2d.objective(**kw)


def run(objective, n_trials=2, sampler=None, **study_kw):
    study = optuna.create_study(
        direction=objective.direction, sampler=sampler or optuna.samplers.RandomSampler(seed=0),
        **study_kw,
    )
    study.optimize(objective, n_trials=n_trials)
    return study


def test_user_attrs_and_per_epoch_reports(gmm2d):
    study = run(small_objective(gmm2d, epochs=3), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs["images"] == 200
    for key in ("simulate_s", "train_s", "evaluate_s"):
        assert trial.user_attrs[key] >= 0
    assert sorted(trial.intermediate_values) == [0, 1, 2]
    assert trial.value == trial.intermediate_values[2]
    assert 0.0 <= trial.value <= 1.0


def test_same_seed_same_study_and_different_seed_differs(gmm2d):
    values = [
        [t.value for t in run(small_objective(gmm2d, seed=s), n_trials=3).trials] for s in (5, 5, 6)
    ]
    assert values[0] == values[1]
    assert values[0] != values[2]


def test_pruner_stops_trials(gmm2d):
    class PruneFromSecondTrial(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number >= 1 and max(trial.intermediate_values) >= 1

    study = run(small_objective(gmm2d, epochs=4), n_trials=2, pruner=PruneFromSecondTrial())
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert study.trials[1].state == optuna.trial.TrialState.PRUNED
    assert sorted(study.trials[1].intermediate_values) == [0, 1]  # stopped after epoch 1


class RecordingSampler(optuna.samplers.RandomSampler):
    def __init__(self):
        super().__init__(seed=0)
        self.contexts = []

    def observe_training(self, trial, context):
        self.contexts.append(context)


def test_pruned_trial_leaves_the_accumulated_model_untouched(gmm2d, tmp_path):
    class PruneSecondTrial(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number == 1

    objective = small_objective(gmm2d, accumulate=True, checkpoint_path=tmp_path / "m.pt")
    study = optuna.create_study(direction="maximize", pruner=PruneSecondTrial(),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=1)
    after_first = [p.detach().clone() for p in objective.model.parameters()]
    study.optimize(objective, n_trials=1)
    assert study.trials[1].state == optuna.trial.TrialState.PRUNED
    assert objective.model.trials_seen == 1
    for a, b in zip(after_first, objective.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_observe_training_hook_receives_context(gmm2d):
    sampler = RecordingSampler()
    study = run(small_objective(gmm2d), n_trials=2, sampler=sampler)
    assert len(sampler.contexts) == 2
    ctx = sampler.contexts[1]
    assert ctx.trial.number == 1 and ctx.simulator is gmm2d.simulator
    assert len(ctx.batch) == 200 and set(ctx.batch.latents) == {"y", "c", "point"}
    assert isinstance(ctx.module, MainTaskModule)
    params = gmm2d.simulator.space.to_params(ctx.psi)
    assert params == pytest.approx(study.trials[1].params)
    assert "hook_s" in study.trials[1].user_attrs


def test_sklearn_estimator_as_model(gmm2d):
    from sklearn.svm import SVC

    objective = SimulatorObjective(gmm2d.simulator, SVC(), gmm2d.val, n_samples=300, epochs=1)
    study = run(objective, n_trials=2)
    assert all(0 <= t.value <= 1 for t in study.trials)
    assert study.trials[0].intermediate_values == {0: study.trials[0].value}


def test_accumulated_model_is_kept_saved_and_restored_after_failure(gmm2d, tmp_path):
    path = tmp_path / "amtm.pt"
    objective = small_objective(gmm2d, accumulate=True, checkpoint_path=path)
    model = objective.model
    before = [p.detach().clone() for p in model.parameters()]
    run(objective, n_trials=2)
    assert model.trials_seen == 2 and path.exists()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    # a new objective (as in a new process) resumes from the checkpoint
    fresh = small_objective(gmm2d, accumulate=True, checkpoint_path=path)
    assert fresh.model.trials_seen == 2
    for a, b in zip(fresh.model.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)

    # a trial whose loss turns NaN fails, and θ is restored to its state before the trial
    saved = [p.detach().clone() for p in fresh.model.parameters()]
    fresh.model.loss_fn = lambda out, y: out.sum(1) * math.nan
    study = run(fresh, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert study.trials[0].user_attrs["fail_phase"] == "train"
    assert "training loss became nan" in study.trials[0].user_attrs["fail_reason"]
    for a, b in zip(saved, fresh.model.parameters(), strict=True):
        assert torch.equal(a, b)


class Exploding(GaussianMixtureSimulator):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def render(self, latents):
        x, y = super().render(latents)
        if self.mode == "raise":
            raise RuntimeError("renderer crashed")
        return x * math.nan, y


@pytest.mark.parametrize("mode, reason", [("raise", "renderer crashed"), ("nan", "non-finite")])
def test_simulator_failure_fails_the_trial_not_the_study(gmm2d, mode, reason):
    objective = SimulatorObjective(Exploding(mode), gmm2d.make_model, gmm2d.val, n_samples=50, epochs=1)
    study = run(objective, n_trials=2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    assert study.trials[0].user_attrs["fail_phase"] == "simulate"
    assert reason in study.trials[0].user_attrs["fail_reason"]
    objective.raise_on_failure = True
    with pytest.raises(Exception, match=reason):
        run(objective, n_trials=1)


class UserModule(pl.LightningModule):
    """A user's own module: plain automatic optimisation, logs 'val_acc'."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_users_own_lightning_module_and_no_files_left(gmm2d, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    objective = SimulatorObjective(gmm2d.simulator, UserModule, gmm2d.val, n_samples=200, epochs=2,
                                   monitor="val_acc")
    study = run(objective, n_trials=2)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert sorted(study.trials[0].intermediate_values) == [0, 1]
    assert os.listdir(tmp_path) == []  # no lightning_logs/, no checkpoints
    wrong = SimulatorObjective(gmm2d.simulator, UserModule, gmm2d.val, n_samples=50, epochs=1)
    failed = run(wrong, n_trials=1).trials[0]
    assert failed.user_attrs["fail_phase"] == "evaluate"
    assert "logged no 'val_reward'" in failed.user_attrs["fail_reason"]


def test_module_instance_starts_from_the_same_weights_each_trial(gmm2d):
    module = gmm2d.make_model()
    initial = [p.detach().clone() for p in module.parameters()]
    objective = SimulatorObjective(gmm2d.simulator, module, gmm2d.val, n_samples=100, epochs=1)
    run(objective, n_trials=1)
    for a, b in zip(initial, module.parameters(), strict=True):
        assert torch.equal(a, b)  # the user's instance is never trained in place


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_samples=0), "n_samples \\(M\\) must be an int >= 1, got 0"),
        (dict(epochs=0), "epochs \\(ξ\\) must be an int >= 1, got 0"),
        (dict(epochs=-2), "epochs \\(ξ\\) must be an int >= 1, got -2"),
        (dict(batch_size=0), "batch_size must be an int >= 1"),
        (dict(val_data=(np.zeros((0, 2)), np.zeros(0))), "val_data is empty"),
        (dict(val_data=(np.zeros((3, 2)), np.zeros(2))), "x and y differ in length: 3 != 2"),
        (dict(direction="up"), "direction must be 'maximize' or 'minimize', got 'up'"),
    ],
)
def test_bad_objective_arguments(gmm2d, kwargs, message):
    args = dict(val_data=gmm2d.val)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        SimulatorObjective(gmm2d.simulator, gmm2d.make_model, **args)


def test_direction_contradicting_the_study_is_an_error(gmm2d):
    objective = small_objective(gmm2d)
    study = optuna.create_study(direction="minimize")
    with pytest.raises(ValueError, match="objective's metric is to maximize.*direction='minimize'"):
        study.optimize(objective, n_trials=1)


def test_factory_taking_the_trial_tunes_model_hyperparameters(gmm2d):
    def factory(trial):
        net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        return AccumulatedMainTaskModule(net, lr=trial.suggest_float("lr", 1e-3, 1e-1, log=True))

    objective = SimulatorObjective(gmm2d.simulator, factory, gmm2d.val, n_samples=100, epochs=1)
    study = run(objective, n_trials=2)
    assert "lr" in study.trials[0].params and "means[0,0,0]" in study.trials[0].params



def _fresh_by_hand(objective, trial, initial_state):
    """Ground truth for ``fresh_value``: the trial's data regenerated from its ψ and seed, a copy
    of the model reset to ``initial_state``, ξ epochs with the trial's seed; its val reward."""
    from lightning_modules import fit_tensors
    from simsearch.objective import trial_seed

    seed = trial_seed(objective.seed, trial.number)
    psi = objective.simulator.space.from_params(trial.params)
    batch = objective.simulator.simulate(psi, objective.n_samples, seed)
    module = copy.deepcopy(objective.model)
    module.load_state_dict(initial_state)
    fit_tensors(module, batch.x, batch.y, objective.epochs, objective.batch_size, seed)
    return float(module.evaluate(*objective.val_data))


def test_fresh_every_records_a_fresh_models_reward_on_the_trials_own_data(gmm2d, tmp_path):
    """``fresh_value`` on trials 0, k, 2k, …: equal to a fresh model trained by hand on the
    trial's data; on trial 0 (no data seen yet) the trial's own value, which is the same
    training. The accumulated model and the chain are untouched by it; after a resume from a
    checkpoint the fresh model still starts from the initial weights, not the checkpoint's."""
    path = tmp_path / "amtm.pt"
    objective = small_objective(gmm2d, accumulate=True, checkpoint_path=path, fresh_every=2)
    initial = copy.deepcopy(objective.model.state_dict())
    study = run(objective, n_trials=3)
    attrs = [t.user_attrs for t in study.trials]
    assert ["fresh_value" in a for a in attrs] == [True, False, True]
    assert attrs[0]["fresh_value"] == study.trials[0].value
    assert attrs[0]["fresh_value"] == pytest.approx(_fresh_by_hand(objective, study.trials[0], initial))
    assert attrs[2]["fresh_value"] == pytest.approx(_fresh_by_hand(objective, study.trials[2], initial))
    assert attrs[2]["fresh_value"] != study.trials[2].value and attrs[2]["fresh_s"] > 0

    plain = run(small_objective(gmm2d, accumulate=True), n_trials=3)
    assert [t.value for t in plain.trials] == [t.value for t in study.trials]

    resumed = small_objective(gmm2d, accumulate=True, checkpoint_path=path, fresh_every=1)
    assert resumed.model.trials_seen == 3
    trial = run(resumed, n_trials=1).trials[0]
    assert trial.user_attrs["fresh_value"] == pytest.approx(_fresh_by_hand(resumed, trial, initial))


def test_fresh_every_is_refused_when_bad_or_without_an_accumulated_model(gmm2d):
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"fresh_every must be an int >= 1, got {bad!r}"):
            small_objective(gmm2d, accumulate=True, fresh_every=bad)
    with pytest.raises(ValueError, match="fresh_every needs an accumulated model"):
        small_objective(gmm2d, fresh_every=1)
