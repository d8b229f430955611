"""AutoSimulateSampler: Optuna's contract, the chain of ψ in the storage, refusals, workers, resume."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time

import numpy as np
import optuna
import pytest
import torch
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)

from samplers.autosimulate import AutoSimulateSampler, adam_step
from simsearch.objective import SimulatorObjective
from simsearch.parameters import Parameter
from simsearch.simulator import BlackBoxSimulator

KEY = "autosimulate:"


class TestAutoSimulateContract(BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: AutoSimulateSampler(seed=0)


@pytest.fixture(autouse=True)
def _ignore_fallback_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not model parameter.*")
        yield


def _objective(problem, **options):
    options.setdefault("n_samples", 60)
    options.setdefault("epochs", 1)
    return problem.objective(accumulate=True, seed=options.pop("seed", 0), **options)


def _study(sampler, storage=None, name=None):
    return optuna.create_study(direction="maximize", sampler=sampler, storage=storage, study_name=name,
                               pruner=optuna.pruners.NopPruner(), load_if_exists=True)


def _euclidean_step(u, g, m, v, t):
    """adam_step in the Euclidean metric of u (direction g, squared norm ‖g‖²)."""
    return adam_step(u, g, float(g @ g), m, v, t, 0.05, (0.9, 0.999))


def test_adam_step_is_scale_invariant_parallel_to_the_gradient_and_stays_in_bounds():
    rng = np.random.default_rng(0)
    u = rng.uniform(0, 1, 6)
    u[0] = 0.999
    g = rng.normal(size=6)
    g[0] = -1.0  # pushes u[0] above 1
    steps = [_euclidean_step(u, s * g, np.zeros(6), 0.0, 1)[0] for s in (1e-4, 1.0, 1e4)]
    np.testing.assert_allclose(steps[0], steps[1], atol=1e-6)
    np.testing.assert_allclose(steps[2], steps[1], atol=1e-9)
    assert np.all((steps[1] >= 0) & (steps[1] <= 1)) and steps[1][0] == 1.0
    # first step: exactly -step_size * g / |g| (before the projection)
    np.testing.assert_allclose(steps[1][1:] - u[1:], -0.05 * g[1:] / np.linalg.norm(g), rtol=1e-6)


def test_adam_step_leaves_flat_coordinates_where_they_are():
    """Coordinates in which the objective is flat (gradient 1e-3 of the steep one's) barely move.
    Per-coordinate Adam's first steps are step_size · sign(g): it would move them as far as the
    steep coordinate — what walked ψ away from its start on digits (issue 5)."""
    u, m, v = np.full(8, 0.5), np.zeros(8), 0.0
    rng = np.random.default_rng(1)
    for t in range(1, 11):
        g = np.concatenate([[1.0], 1e-3 * rng.normal(size=7)])
        u, m, v = _euclidean_step(u, g, m, v, t)
    assert 0.5 - u[0] > 0.4  # the steep coordinate descends about step_size per step
    assert np.abs(u[1:] - 0.5).max() < 1e-3


@pytest.mark.parametrize("method", ["quadratic", "approx_quadratic", "linear", "no_val"])
def test_each_trial_proposes_the_previous_trials_psi_next(gmm2d, method):
    sim = gmm2d.simulator
    study = _study(AutoSimulateSampler(method, init=sim, seed=0, cg_max_iter=5))
    study.optimize(_objective(gmm2d), n_trials=3)
    trials = study.trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert trials[0].params == pytest.approx(sim.space.to_params(sim.init_psi()))
    low, high = sim.space.bounds()
    for prev, nxt in zip(trials[:-1], trials[1:], strict=True):
        assert nxt.params == prev.system_attrs[KEY + "psi_next"]
        assert nxt.system_attrs[KEY + "parent"] == prev.number
    for t in trials:
        attrs = t.system_attrs
        assert attrs[KEY + "step"] == t.number + 1
        psi_next = np.array(list(attrs[KEY + "psi_next"].values()))
        assert np.all((psi_next >= low) & (psi_next <= high))
        assert not np.allclose(psi_next, list(t.params.values()))  # it moved
        assert math.isfinite(attrs[KEY + "grad_norm"]) and attrs[KEY + "grad_norm"] > 0
        assert attrs[KEY + "seconds"] > 0
        cg_iterations, residual = attrs[KEY + "cg_iterations"], attrs[KEY + "cg_residual"]
        if method == "quadratic":
            assert 1 <= cg_iterations <= 5 + 1 and residual >= 0  # +1: warm-start residual product
        else:
            assert cg_iterations == (1 if method == "approx_quadratic" else 0) and residual is None
    assert AutoSimulateSampler.current_params(study) == trials[-1].system_attrs[KEY + "psi_next"]


def test_same_seed_same_trajectory(gmm2d):
    runs = []
    for _ in range(2):
        study = _study(AutoSimulateSampler("quadratic", init=gmm2d.simulator, seed=3, cg_max_iter=5))
        study.optimize(_objective(gmm2d, seed=3), n_trials=3)
        runs.append([t.system_attrs[KEY + "psi_next"] for t in study.trials])
    assert runs[0] == runs[1]


def test_subsample_and_frozen_layers_options(gmm2d):
    sampler = AutoSimulateSampler("quadratic", init=gmm2d.simulator, seed=0, theta="net.4",
                                  hessian_samples=20, val_samples=50, cg_max_iter=5)
    study = _study(sampler)
    study.optimize(_objective(gmm2d), n_trials=2)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    bad = _study(AutoSimulateSampler(init=gmm2d.simulator, theta="net.9"))
    bad.optimize(_objective(gmm2d), n_trials=1)
    assert "theta" in bad.trials[0].user_attrs["fail_reason"]


def test_failed_trials_do_not_move_the_chain(gmm2d):
    study = _study(AutoSimulateSampler("linear", init=gmm2d.simulator, seed=0))
    objective = _objective(gmm2d)
    study.optimize(objective, n_trials=1)

    def failing(trial):
        objective.simulator.suggest(trial)
        raise RuntimeError("simulated failure")

    study.optimize(failing, n_trials=1, catch=(RuntimeError,))
    study.optimize(objective, n_trials=1)
    t0, t1, t2 = study.trials
    assert t1.state == optuna.trial.TrialState.FAIL
    assert t1.params == t2.params == t0.system_attrs[KEY + "psi_next"]
    assert t2.system_attrs[KEY + "step"] == 2


class _Opaque(BlackBoxSimulator):
    def __init__(self):
        super().__init__([Parameter("shift", -1.0, 1.0, 0.0)])

    def sample(self, psi, n, generator):
        x = torch.randn(n, 2, generator=generator) + psi["shift"]
        return x, (x[:, 0] > 0).long()


def test_refuses_black_box_simulator_fresh_model_and_sklearn(gmm2d):
    from lightning_modules import AccumulatedMainTaskModule

    sampler = AutoSimulateSampler(seed=0)
    model = AccumulatedMainTaskModule.from_module(gmm2d.make_model())
    opaque = SimulatorObjective(_Opaque(), model, gmm2d.val, n_samples=40, epochs=1)
    with pytest.raises(TypeError, match="black-box simulator"):
        sampler.prepare(opaque)
    study = _study(sampler)
    study.optimize(opaque, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert "black-box simulator" in study.trials[0].user_attrs["fail_reason"]

    fresh = gmm2d.objective(n_samples=40, epochs=1)
    with pytest.raises(ValueError, match="accumulate"):
        sampler.prepare(fresh)
    study = _study(AutoSimulateSampler(seed=0))
    study.optimize(fresh, n_trials=1)
    assert "AccumulatedMainTaskModule" in study.trials[0].user_attrs["fail_reason"]

    from sklearn.svm import SVC

    svm = SimulatorObjective(gmm2d.simulator, SVC(), gmm2d.val, n_samples=40)
    with pytest.raises(TypeError, match="LightningModule"):
        sampler.prepare(svm)
    sampler.prepare(_objective(gmm2d))  # the right set-up passes and sets the start point
    study = _study(sampler)
    study.optimize(_objective(gmm2d), n_trials=1)
    start = gmm2d.simulator.space.to_params(gmm2d.simulator.init_psi())
    assert study.trials[0].params == pytest.approx(start)


def test_constructor_rejects_bad_options():
    with pytest.raises(ValueError, match="method must be one of"):
        AutoSimulateSampler("cubic")
    with pytest.raises(ValueError, match="step_size"):
        AutoSimulateSampler(step_size=0.0)
    with pytest.raises(ValueError, match="cg_max_iter"):
        AutoSimulateSampler(cg_max_iter=0)
    for bad in (0, 64.0, False):
        with pytest.raises(ValueError, match=f"chunk_size must be an int >= 1, got {bad!r}"):
            AutoSimulateSampler(chunk_size=bad)
    with pytest.raises(TypeError, match="init must be"):
        AutoSimulateSampler(init=3.0)
    with pytest.raises(ValueError, match=r"step_growth must be a finite number >= 1, got 0.9"):
        AutoSimulateSampler(step_growth=0.9)
    with pytest.raises(ValueError, match=r"step_growth must be a finite number >= 1, got inf"):
        AutoSimulateSampler(step_growth=float("inf"))
    with pytest.raises(ValueError, match=r"step_shrink must be a number in \(0, 1\], got 0"):
        AutoSimulateSampler(step_shrink=0)
    with pytest.raises(ValueError, match=r"step_scale_range must be .* got \(2.0, 10.0\)"):
        AutoSimulateSampler(step_scale_range=(2.0, 10.0))
    for bad in (3.0, "0.1,3", (0.1, "3")):
        with pytest.raises(ValueError, match=r"step_scale_range must be \(low, high\)"):
            AutoSimulateSampler(step_scale_range=bad)
    for bad in ("James-Stein", "none", True, 1.0):
        with pytest.raises(ValueError, match=r"shrinkage must be one of \(None, 'james_stein'\), "
                                             r"got " + repr(bad).replace("(", r"\(")):
            AutoSimulateSampler(shrinkage=bad)
    for bad in (0.05, 10.5, float("nan"), "2", True):
        with pytest.raises(ValueError, match=r"step_scale_init must be a number in step_scale_range "
                                             r"\[0.1, 10.0\], got"):
            AutoSimulateSampler(step_scale_init=bad)
    assert AutoSimulateSampler(step_scale_range=(0.1, 2.0)).step_scale_init == 2.0  # None: the cap
    for bad in (1, "yes", None):
        with pytest.raises(ValueError, match=r"chain_shrinkage must be True or False, got "):
            AutoSimulateSampler(chain_shrinkage=bad)
    with pytest.raises(ValueError, match=r"step_scale_init .* \[0.5, 2\], got 3"):
        AutoSimulateSampler(step_scale_range=(0.5, 2), step_scale_init=3)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"fresh_every must be an int >= 1, got {bad!r}"):
            AutoSimulateSampler(fresh_every=bad)


def _fixed_gradient(monkeypatch, signs, val_losses=None):
    """Make every trial's hypergradient ±g (trial t: ``signs[t]``) and its L_val
    ``val_losses[t]`` (default falling), record descend's arguments."""
    import dataclasses

    import samplers.autosimulate as autosimulate

    real_hg, real_descend, calls = autosimulate.hypergradient, autosimulate.descend, []

    def hypergradient(*args, **kwargs):
        result = real_hg(*args, **kwargs)
        sign = signs[len(calls)]
        grad = {k: sign * torch.linspace(0.5, 1.5, v.numel()).reshape(v.shape)
                for k, v in result.grad.items()}
        return dataclasses.replace(result, grad=grad)

    def descend(*args, **kwargs):
        calls.append((args[7], kwargs["restart"]))  # step_size, restart
        return real_descend(*args, **kwargs)

    losses = iter(val_losses or [1.0 / (t + 1) for t in range(len(signs))])
    monkeypatch.setattr(autosimulate, "hypergradient", hypergradient)
    monkeypatch.setattr(autosimulate, "descend", descend)
    monkeypatch.setattr(autosimulate, "_validation_loss", lambda *args: next(losses))
    return calls


@pytest.mark.parametrize("case", ["descends", "flips", "val_rises"])
def test_step_length_follows_the_sign_along_the_last_step_and_the_val_loss(gmm2d, monkeypatch, case):
    """A gradient that keeps its sign (each step still descends at the new ψ) while L_val falls
    grows the step by step_growth up to the range's end; one that flips every trial (each step
    overshot), or L_val rising, shrinks it by step_shrink down to the range's start and
    restarts the momentum (β₁ = 0 here, so the sign along the last step is exactly known)."""
    signs = [(-1.0) ** t if case == "flips" else 1.0 for t in range(5)]
    rising = [1.0 + t for t in range(5)] if case == "val_rises" else None
    calls = _fixed_gradient(monkeypatch, signs, rising)
    flip = case != "descends"
    sampler = AutoSimulateSampler("linear", init=gmm2d.simulator, seed=0, step_size=0.01,
                                  betas=(0.0, 0.999), step_growth=1.5, step_shrink=0.5,
                                  step_scale_range=(0.2, 3.0), step_scale_init=1.0)
    study = _study(sampler)
    study.optimize(_objective(gmm2d), n_trials=5)
    scales = [t.system_attrs[KEY + "step_scale"] for t in study.trials]
    expected = [1.0, 0.5, 0.25, 0.2, 0.2] if flip else [1.0, 1.5, 2.25, 3.0, 3.0]
    assert scales == pytest.approx(expected)
    assert [c[0] for c in calls] == pytest.approx([0.01 * e for e in expected])
    assert [c[1] for c in calls] == [False] + [flip] * 4
    assert [t.system_attrs[KEY + "val_loss"] for t in study.trials] == (
        rising or [1.0 / (t + 1) for t in range(5)])


@pytest.mark.parametrize("case", ["descends", "flips"])
def test_step_length_starts_at_step_scale_init(gmm2d, monkeypatch, case):
    """The first step is step_size · c_0 and the rule grows / shrinks from there."""
    signs = [(-1.0) ** t if case == "flips" else 1.0 for t in range(4)]
    calls = _fixed_gradient(monkeypatch, signs)
    sampler = AutoSimulateSampler("linear", init=gmm2d.simulator, seed=0, step_size=0.01,
                                  betas=(0.0, 0.999), step_growth=1.5, step_shrink=0.5,
                                  step_scale_range=(0.2, 3.0), step_scale_init=2.5)
    study = _study(sampler)
    study.optimize(_objective(gmm2d), n_trials=4)
    expected = [2.5, 1.25, 0.625, 0.3125] if case == "flips" else [2.5, 3.0, 3.0, 3.0]
    assert [t.system_attrs[KEY + "step_scale"] for t in study.trials] == pytest.approx(expected)
    assert [c[0] for c in calls] == pytest.approx([0.01 * e for e in expected])


def test_first_step_is_step_scale_init_times_longer(gmm2d):
    """Same data and gradient at the start: the first move of ψ with c_0 = 2 is exactly twice
    the move with c_0 = 1 (Adam's first step is step_size · c_0 along F⁺g / √(gᵀF⁺g)), as long as
    the box does not clip it."""
    space = gmm2d.simulator.space
    low, high = space.bounds()
    moves = {}
    for c0 in (1.0, 2.0):
        study = _study(AutoSimulateSampler("linear", init=gmm2d.simulator, seed=0, step_size=0.05,
                                           step_scale_range=(0.1, 3.0), step_scale_init=c0))
        study.optimize(_objective(gmm2d), n_trials=1)
        trial = study.trials[0]
        start = (space.to_flat(space.from_params(trial.params)) - low) / (high - low)
        nxt = (np.array([trial.system_attrs[KEY + "psi_next"][n] for n in space.flat_names()])
               - low) / (high - low)
        assert trial.system_attrs[KEY + "step_scale"] == c0
        assert np.all((nxt > 0) & (nxt < 1))  # not clipped, so the lengths compare exactly
        moves[c0] = nxt - start
    assert np.linalg.norm(moves[1.0]) > 1e-3
    np.testing.assert_allclose(moves[2.0], 2.0 * moves[1.0], rtol=1e-6, atol=1e-9)


def test_fixed_step_when_growth_and_shrink_are_one(gmm2d, monkeypatch):
    calls = _fixed_gradient(monkeypatch, [1.0, -1.0, 1.0])
    study = _study(AutoSimulateSampler("linear", init=gmm2d.simulator, seed=0, step_growth=1,
                                       step_shrink=1, chain_shrinkage=False))
    study.optimize(_objective(gmm2d), n_trials=3)
    assert [t.system_attrs[KEY + "step_scale"] for t in study.trials] == [10.0] * 3  # c_0
    assert [t.system_attrs[KEY + "val_loss"] for t in study.trials] == [None] * 3  # not computed
    assert calls == [(1.0, False)] * 3


@pytest.mark.parametrize(("c0", "shrinkage", "chain"),
                         [(1.0, None, False), (2.0, None, False), (1.0, "james_stein", False),
                          (1.0, "james_stein", True)])
def test_adaptive_step_resumes_in_a_new_sampler_exactly(gmm2d, c0, shrinkage, chain):
    """The step factor and momentum come from the storage: a new sampler instance continuing
    the study proposes the same ψ as the uninterrupted run (also when c_0 ≠ 1, with the
    noise-aware shrinkage, whose factor is recomputed from each trial's own data, and with the
    chain's shrinkage, whose moments travel with ψ)."""
    options = dict(init=gmm2d.simulator, seed=0, step_growth=1.5, step_shrink=0.5,
                   step_scale_range=(0.1, 3.0), step_scale_init=c0, shrinkage=shrinkage,
                   chain_shrinkage=chain)
    whole = _study(AutoSimulateSampler("linear", **options))
    whole.optimize(_objective(gmm2d), n_trials=5)
    storage = optuna.storages.InMemoryStorage()
    objective = _objective(gmm2d)
    _study(AutoSimulateSampler("linear", **options), storage, "r").optimize(objective, n_trials=3)
    resumed = _study(AutoSimulateSampler("linear", **options), storage, "r")
    resumed.optimize(objective, n_trials=2)
    for key in ("step_scale", "psi_next", "val_loss", "shrinkage", "wald", "score_rank",
                "chain_mean", "chain_moments", "chain_shrinkage"):
        assert [t.system_attrs[KEY + key] for t in resumed.trials] == [
            t.system_attrs[KEY + key] for t in whole.trials]
    assert len({t.system_attrs[KEY + "step_scale"] for t in whole.trials}) > 1  # it did adapt
    assert whole.trials[0].system_attrs[KEY + "step_scale"] == c0


def test_two_workers_share_the_chain(gmm2d, tmp_path):
    """Worker B asks while worker A's trial on the same parent runs: B gets a distinct, jittered
    point; afterwards the chain continues from the completed trial with the most steps."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    sim = gmm2d.simulator
    names = sim.space.flat_names()
    worker_a = _study(AutoSimulateSampler("linear", init=sim, seed=1), storage, "shared")
    worker_b = _study(AutoSimulateSampler("linear", init=sim, seed=2), storage, "shared")
    objective_a, objective_b = _objective(gmm2d), _objective(gmm2d)
    worker_a.optimize(objective_a, n_trials=1)
    trial_a = worker_a.ask()
    trial_b = worker_b.ask()
    value_a, value_b = objective_a(trial_a), objective_b(trial_b)
    head = worker_a.trials[0].system_attrs[KEY + "psi_next"]
    psi_a = np.array([trial_a.params[n] for n in names])
    psi_b = np.array([trial_b.params[n] for n in names])
    np.testing.assert_array_equal(psi_a, [head[n] for n in names])
    assert not np.allclose(psi_a, psi_b)
    low, high = sim.space.bounds()
    assert np.all((psi_b >= low) & (psi_b <= high))
    assert np.abs(psi_b - psi_a).max() < 0.5 * np.max(high - low)  # nearby, not random
    worker_b.tell(trial_b, value_b)
    worker_a.tell(trial_a, value_a)
    trials = worker_a.trials
    assert trials[1].system_attrs[KEY + "parent"] == trials[2].system_attrs[KEY + "parent"] == 0
    assert trials[1].system_attrs[KEY + "step"] == trials[2].system_attrs[KEY + "step"] == 2
    worker_a.optimize(objective_a, n_trials=1)
    trial_c = worker_a.trials[3]
    assert trial_c.system_attrs[KEY + "parent"] == 2  # tie on steps: the higher number
    assert trial_c.params == trials[2].system_attrs[KEY + "psi_next"]


_CRASHING_WORKER = textwrap.dedent(
    """
    import os, sys, time, optuna
    from simsearch.problems import get
    from samplers.autosimulate import AutoSimulateSampler
    url, checkpoint = sys.argv[1], sys.argv[2]
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
    problem = get("gmm2d")
    objective = problem.objective(accumulate=True, seed=0, n_samples=60, epochs=1,
                                  checkpoint_path=checkpoint)
    study = optuna.create_study(direction="maximize", storage=storage, study_name="resume",
                                sampler=AutoSimulateSampler("linear", init=problem.simulator, seed=0),
                                pruner=optuna.pruners.NopPruner())

    def crash_in_third_trial(trial):
        if trial.number == 2:
            time.sleep(1.5)  # mid-trial, after a heartbeat was recorded
            os._exit(3)  # a hard crash: trial 2 stays RUNNING in the storage
        return objective(trial)

    study.optimize(crash_in_third_trial, n_trials=3)
    """
)


def test_resume_after_crash_in_a_new_process(gmm2d, tmp_path):
    """With Optuna's heartbeat the crashed trial is failed as stale, and the new process continues
    exactly from the last completed trial's ψ_{t+1} and the checkpointed model."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    checkpoint = tmp_path / "model.pt"
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASHING_WORKER, url, str(checkpoint)],
        capture_output=True, text=True, timeout=300,
    )
    assert crashed.returncode == 3, crashed.stderr[-2000:]
    time.sleep(2.5)  # past the grace period: the crashed trial's heartbeat is stale
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
    objective = _objective(gmm2d, checkpoint_path=checkpoint)
    assert objective.model.trials_seen == 2  # the accumulated model after trial 1
    loaded = {k: v.clone() for k, v in objective.model.state_dict().items()}
    study = _study(AutoSimulateSampler("linear", init=gmm2d.simulator, seed=0), storage, "resume")
    study.optimize(objective, n_trials=1)
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert trials[3].system_attrs[KEY + "parent"] == 1
    assert trials[3].params == trials[1].system_attrs[KEY + "psi_next"]
    assert trials[3].system_attrs[KEY + "step"] == 3
    assert any(not torch.equal(loaded[k], v) for k, v in objective.model.state_dict().items())


def test_each_solve_starts_from_half_the_parents_final_damping(gmm2d, monkeypatch):
    """λ travels along the chain in the storage (start_damping): a trial's solve starts from half
    the λ its parent's solve ended with, never below the configured damping; without warm start
    every solve starts from the configured damping."""
    import dataclasses

    import samplers.autosimulate as autosimulate

    real, started = autosimulate.hypergradient, []

    def spy(*args, **kwargs):
        started.append(kwargs["damping"])
        result = real(*args, **kwargs)
        return dataclasses.replace(result, damping=8.0 * len(started))  # as if CG had raised λ

    monkeypatch.setattr(autosimulate, "hypergradient", spy)
    sim = gmm2d.simulator
    study = _study(AutoSimulateSampler("quadratic", init=sim, seed=0, cg_max_iter=5, damping=5.0))
    study.optimize(_objective(gmm2d), n_trials=3)
    assert started == [5.0, 5.0, 8.0]  # max(5, 8/2), max(5, 16/2)
    assert [t.system_attrs[KEY + "damping"] for t in study.trials] == [8.0, 16.0, 24.0]
    started.clear()
    study = _study(AutoSimulateSampler("quadratic", init=sim, seed=0, cg_max_iter=5, damping=5.0,
                                       warm_start=False))
    study.optimize(_objective(gmm2d), n_trials=2)
    assert started == [5.0, 5.0]


def test_stored_val_loss_is_the_fine_tuned_models_mean_validation_loss(gmm2d):
    """The L_val the step-length rule compares is the mean per-sample validation loss of the
    model the trial fine-tuned (eval mode), recomputed here from the accumulated model."""
    from samplers.hypergradient import expected_error

    objective = _objective(gmm2d)
    study = _study(AutoSimulateSampler("linear", init=gmm2d.simulator, seed=0, val_loss=expected_error))
    study.optimize(objective, n_trials=2)
    model = objective.model
    model.eval()
    with torch.no_grad():
        xv, yv = objective.val_data
        expected = float(expected_error(model(xv), yv).double().mean())
    assert study.trials[-1].system_attrs[KEY + "val_loss"] == pytest.approx(expected, rel=1e-6)
    assert study.trials[0].system_attrs[KEY + "val_loss"] != pytest.approx(expected, rel=1e-6)


def test_no_val_keeps_a_fixed_step_under_the_adaptive_defaults(gmm2d, monkeypatch):
    """no_val has no validation loss for the success test, so the default growth/shrink leave
    its factor c_t at c_0 (10 by default) and its momentum unrestarted even when the gradient
    flips (the chain's shrinkage, off here, would still scale its steps)."""
    calls = _fixed_gradient(monkeypatch, [1.0, -1.0, 1.0])
    study = _study(AutoSimulateSampler("no_val", init=gmm2d.simulator, seed=0,
                                       chain_shrinkage=False))
    study.optimize(_objective(gmm2d), n_trials=3)
    assert [t.system_attrs[KEY + "step_scale"] for t in study.trials] == [10.0] * 3
    assert [t.system_attrs[KEY + "val_loss"] for t in study.trials] == [None] * 3
    assert calls == [(1.0, False)] * 3


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_best_params_is_the_psi_of_the_best_complete_trial_in_the_studys_direction(direction):
    dist = {"a": optuna.distributions.FloatDistribution(0.0, 1.0)}
    study = optuna.create_study(direction=direction)
    with pytest.raises(ValueError, match="at least one COMPLETE trial.*0 trials"):
        AutoSimulateSampler.best_params(study)
    study.add_trial(optuna.trial.create_trial(params={"a": 0.9}, distributions=dist,
                                              state=optuna.trial.TrialState.FAIL))
    with pytest.raises(ValueError, match="at least one COMPLETE trial.*1 trials"):
        AutoSimulateSampler.best_params(study)
    for a, value in ((0.1, 0.5), (0.2, 0.8), (0.3, 0.2), (0.4, 0.8), (0.5, 0.3)):
        study.add_trial(optuna.trial.create_trial(params={"a": a}, distributions=dist, value=value))
    study.add_trial(optuna.trial.create_trial(params={"a": 0.6}, distributions=dist,
                                              state=optuna.trial.TrialState.RUNNING))
    expected = 0.2 if direction == "maximize" else 0.3  # ties (0.2 and 0.4 at 0.8): the first
    assert AutoSimulateSampler.best_params(study) == {"a": expected}
    assert AutoSimulateSampler.best_params(study) == study.best_trial.params


def test_best_params_recommends_an_evaluated_psi_of_the_chain(gmm2d):
    study = _study(AutoSimulateSampler("linear", init=gmm2d.simulator, seed=0))
    study.optimize(_objective(gmm2d), n_trials=3)
    best = max(study.trials, key=lambda t: t.value)
    assert AutoSimulateSampler.best_params(study) == best.params
    assert AutoSimulateSampler.current_params(study) == study.trials[-1].system_attrs[KEY + "psi_next"]


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_best_params_ranks_by_fresh_values_where_trials_have_them(direction):
    """Trials with a finite ``fresh_value`` (the objective's ``fresh_every``) are ranked by it in
    the study's direction and the others are left out, as are FAIL trials and non-finite fresh
    values; ``fresh=False`` ranks every trial by its value; with no finite fresh value at all the
    ranking falls back to the values."""
    dist = {"a": optuna.distributions.FloatDistribution(0.0, 1.0)}
    sign = 1.0 if direction == "maximize" else -1.0
    study = optuna.create_study(direction=direction)
    fail = optuna.trial.TrialState.FAIL
    for a, value, fresh, state in ((0.1, 0.5, 0.70, None), (0.2, 0.9, None, None),
                                   (0.3, 0.8, 0.60, None), (0.4, 0.6, 0.75, None),
                                   (0.5, None, 0.99, fail), (0.6, 0.7, math.nan, None)):
        attrs = {} if fresh is None else {"fresh_value": sign * fresh}
        study.add_trial(optuna.trial.create_trial(
            params={"a": a}, distributions=dist, user_attrs=attrs,
            **({"state": state} if state else {"value": sign * value})))
    assert AutoSimulateSampler.best_params(study) == {"a": 0.4}
    assert AutoSimulateSampler.best_params(study, fresh=False) == {"a": 0.2}
    unchecked = optuna.create_study(direction=direction)
    for a, value in ((0.1, 0.5), (0.2, 0.9)):
        unchecked.add_trial(optuna.trial.create_trial(
            params={"a": a}, distributions=dist, value=sign * value,
            user_attrs={"fresh_value": math.inf if a == 0.1 else math.nan}))
    assert AutoSimulateSampler.best_params(unchecked) == {"a": 0.2}


@pytest.mark.parametrize("fresh_every", [1, 3, None])
def test_prepare_sets_the_objectives_fresh_every(gmm2d, fresh_every):
    objective = _objective(gmm2d)
    sampler = AutoSimulateSampler("linear", init=gmm2d.simulator, seed=0, fresh_every=fresh_every)
    sampler.prepare(objective)
    assert objective.fresh_every == fresh_every
    assert sampler.settings()["fresh_every"] == fresh_every
    study = _study(sampler)
    study.optimize(objective, n_trials=2)
    checked = [t.number for t in study.trials if "fresh_value" in t.user_attrs]
    assert checked == {1: [0, 1], 3: [0], None: []}[fresh_every]
    ranked = [(t.user_attrs["fresh_value"], t) for t in study.trials if t.number in checked]
    ranked = ranked or [(t.value, t) for t in study.trials]
    assert AutoSimulateSampler.best_params(study) == max(ranked, key=lambda vt: vt[0])[1].params


def _planted_weights(monkeypatch, signal: float):
    """Replace every trial's Eq. 11 weights by w = signal · S_u β + ε (ε ~ N(0, 1) drawn
    independently of the latents, seeded by the trial's data seed; β fixed) and its gradient by
    (1/K) Σ_k ∇_ψ log q_ψ(s_k) w_k, as :func:`hypergradient` would return them: ``signal`` = 0
    is a hypergradient that is pure noise."""
    import dataclasses

    import samplers.autosimulate as autosimulate
    from samplers.autosimulate import score_rows
    from samplers.hypergradient import score_function_gradient, score_matrix

    real = autosimulate.hypergradient

    def hypergradient(module, simulator, psi, batch, *args, **kwargs):
        result = real(module, simulator, psi, batch, *args, **kwargs)
        rows = score_rows(simulator.space, score_matrix(simulator, batch.latents, psi))
        rng = np.random.default_rng([kwargs["seed"], 7])
        beta = np.linspace(-1.0, 1.0, rows.shape[1])
        w = torch.as_tensor(signal * rows @ beta + rng.standard_normal(len(rows)))
        grad = score_function_gradient(simulator, batch.latents, psi, w)
        return dataclasses.replace(result, grad=grad, weights=w)

    monkeypatch.setattr(autosimulate, "hypergradient", hypergradient)


def _first_move(gmm2d, shrinkage, seed):
    """The first trial's move of ψ in box coordinates u, and the trial."""
    space = gmm2d.simulator.space
    low, high = space.bounds()
    study = _study(AutoSimulateSampler("linear", init=gmm2d.simulator, seed=0, step_size=0.05,
                                       shrinkage=shrinkage))
    study.optimize(_objective(gmm2d, n_samples=200, seed=seed), n_trials=1)
    trial = study.trials[0]
    start = (space.to_flat(space.from_params(trial.params)) - low) / (high - low)
    nxt = (np.array([trial.system_attrs[KEY + "psi_next"][n] for n in space.flat_names()])
           - low) / (high - low)
    assert np.all((nxt > 0) & (nxt < 1))  # not clipped, so the lengths compare exactly
    return nxt - start, trial


@pytest.mark.parametrize("signal", [0.0, 10.0])
def test_shrinkage_stops_a_pure_noise_step_and_keeps_a_resolved_one(gmm2d, monkeypatch, signal):
    """Same data and weights, shrinkage off and on: the first move with it on is exactly ρ times
    the move without (ρ stored on the trial). With a hypergradient that is pure noise the moves
    shrink to a small fraction on average over data sets and to nothing on most of them; with a
    strongly resolved one they stay (ρ > 0.9)."""
    _planted_weights(monkeypatch, signal)
    ratios = []
    for seed in range(8):
        off, trial_off = _first_move(gmm2d, None, seed)
        on, trial_on = _first_move(gmm2d, "james_stein", seed)
        rho = trial_on.system_attrs[KEY + "shrinkage"]
        assert trial_off.system_attrs[KEY + "shrinkage"] == 1.0
        assert trial_on.system_attrs[KEY + "wald"] == pytest.approx(trial_off.system_attrs[KEY + "wald"])
        assert trial_on.system_attrs[KEY + "score_rank"] == gmm2d.simulator.space.dim
        assert np.linalg.norm(off) > 1e-3
        np.testing.assert_allclose(on, rho * off, rtol=1e-6, atol=1e-12)
        ratios.append(np.linalg.norm(on) / np.linalg.norm(off))
    if signal == 0.0:
        assert np.mean(ratios) < 0.25, ratios
        assert sum(r == 0.0 for r in ratios) >= 4, ratios
    else:
        assert min(ratios) > 0.9, ratios


@pytest.mark.parametrize("signal", [0.0, 10.0])
def test_chain_shrinkage_stops_steps_on_noise_across_trials(gmm2d, monkeypatch, signal):
    """Same data and weights with chain_shrinkage off and on (the Wald factor off, so every step
    is taken): the first step is the same (one trial measures no noise across trials: ρ_c = 1),
    the second one is exactly ρ_c times the step without (ρ_c stored on the trial; with pure
    noise on data seed 3, 0 < ρ_c < 1). With hypergradients that are pure noise ρ_c is 0 on many
    later trials and about 0.2 on average (p = 16: a positive-part James–Stein factor), and a
    trial after a step cut to nothing keeps the step factor (no evidence about the length);
    with a planted gradient, the same on every trial, ρ_c > 0.9."""
    _planted_weights(monkeypatch, signal)
    space = gmm2d.simulator.space
    low, high = space.bounds()

    def run(chain, seed, n_trials):
        study = _study(AutoSimulateSampler("linear", init=gmm2d.simulator, seed=0, step_size=0.02,
                                           shrinkage=None, chain_shrinkage=chain))
        study.optimize(_objective(gmm2d, n_samples=200, seed=seed), n_trials=n_trials)
        return study.trials

    def move(trial):
        nxt = np.array([trial.system_attrs[KEY + "psi_next"][n] for n in space.flat_names()])
        return (nxt - space.to_flat(space.from_params(trial.params))) / (high - low)

    off, on = run(False, 3, 2), run(True, 3, 6)
    assert [t.system_attrs[KEY + "chain_shrinkage"] for t in off] == [1.0, 1.0]
    assert np.linalg.norm(move(off[0])) > 1e-3 and np.linalg.norm(move(off[1])) > 1e-3
    np.testing.assert_allclose(move(on[0]), move(off[0]), rtol=1e-9, atol=1e-12)
    factors = [t.system_attrs[KEY + "chain_shrinkage"] for t in on]
    np.testing.assert_allclose(move(on[1]), factors[1] * move(off[1]), rtol=1e-6, atol=1e-12)
    if signal == 0.0:
        assert 0.0 < factors[1] < 1.0
        chains = [on] + [run(True, seed, 6) for seed in range(3)]
        later = [t.system_attrs[KEY + "chain_shrinkage"] for trials in chains for t in trials[1:]]
        assert np.mean(np.array(later) == 0.0) > 0.3 and np.mean(later) < 0.3, later
        unmoved = [(a, b) for trials in chains for a, b in zip(trials[:-1], trials[1:], strict=True)
                   if a.system_attrs[KEY + "chain_shrinkage"] == 0.0]
        assert len(unmoved) >= 3  # a trial after a step cut to nothing keeps the step factor
        assert all(b.system_attrs[KEY + "step_scale"] == a.system_attrs[KEY + "step_scale"]
                   for a, b in unmoved)
    else:
        assert min(factors) > 0.9, factors


@pytest.mark.parametrize("bad", [-0.5, 1.5, float("nan")])
def test_descend_refuses_a_shrink_factor_outside_0_1(bad):
    from samplers.autosimulate import descend

    with pytest.raises(ValueError, match=r"shrink_factor must be in \[0, 1\].*got"):
        descend(None, {}, {}, {}, np.zeros(1), 0.0, 1, 0.1, shrink_factor=bad)
