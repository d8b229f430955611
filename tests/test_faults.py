"""Fault injection (issue 7): faults decided by the trial seed, each failing its own phase, and a
study with 20 % simulator exceptions + 10 % NaN losses that still completes and still learns."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from simsearch import trial_seed
from simsearch.faults import FAULTS, FaultySimulator, InjectedFault
from simsearch.workers import budget_state, open_storage, run_worker

PHASE = {"raise": "simulate", "nan_images": "simulate", "nan_loss": "train"}
MESSAGE = {"raise": "simulate failed: InjectedFault", "nan_images": "non-finite inputs",
           "nan_loss": "train failed: FloatingPointError"}


def test_fault_is_a_function_of_the_seed_with_the_given_rates(gmm2d):
    rates = {"raise_rate": 0.2, "nan_image_rate": 0.05, "nan_loss_rate": 0.1}
    a, b = FaultySimulator(gmm2d.simulator, **rates), FaultySimulator(gmm2d.simulator, **rates)
    seeds = [trial_seed(0, n) for n in range(4000)]
    faults = [a.fault(s) for s in seeds]
    assert faults == [b.fault(s) for s in seeds]  # any process decides the same
    for fault, rate in zip(FAULTS, rates.values(), strict=True):
        assert abs(faults.count(fault) / len(seeds) - rate) < 0.03  # 5 binomial std
    assert FaultySimulator(gmm2d.simulator).fault(seeds[0]) is None


def test_simulate_faults_and_unchanged_data(gmm2d):
    sim = gmm2d.simulator
    psi = sim.init_psi()
    faulty = FaultySimulator(sim, raise_rate=0.3, nan_image_rate=0.3)
    seeds = {f: next(s for s in range(1000) if faulty.fault(s) == f) for f in ("raise", "nan_images", None)}
    with pytest.raises(InjectedFault, match="injected simulator failure"):
        faulty.simulate(psi, 10, seeds["raise"])
    assert torch.isnan(faulty.simulate(psi, 10, seeds["nan_images"]).x).all()
    clean, inner = faulty.simulate(psi, 10, seeds[None]), sim.simulate(psi, 10, seeds[None])
    assert torch.equal(clean.x, inner.x) and torch.equal(clean.y, inner.y)
    assert faulty.has_log_prob and faulty.search_space() == sim.search_space()
    assert torch.equal(faulty.log_prob(clean.latents, psi), sim.log_prob(clean.latents, psi))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"raise_rate": -0.1}, "raise_rate must lie in"),
        ({"nan_loss_rate": 1.5}, "nan_loss_rate must lie in"),
        ({"raise_rate": 0.6, "nan_image_rate": 0.6}, "sum to at most 1, got 1.2"),
        ({"delay_s": -1.0}, "delay_s must be >= 0"),
    ],
)
def test_bad_options_are_named(gmm2d, options, message):
    with pytest.raises(ValueError, match=message):
        FaultySimulator(gmm2d.simulator, **options)


def test_each_fault_fails_the_trial_in_its_phase(gmm2d):
    faulty = FaultySimulator(gmm2d.simulator, raise_rate=0.25, nan_image_rate=0.25, nan_loss_rate=0.25)
    objective = faulty.objective(gmm2d, seed=3, n_samples=50, epochs=1)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.NopPruner())
    outcomes = [faulty.fault(trial_seed(3, n)) for n in range(100)]
    study.optimize(objective, n_trials=max(outcomes.index(f) for f in (None, *FAULTS)) + 1)
    seen = set()
    for t in study.trials:
        fault = faulty.fault(trial_seed(3, t.number))
        seen.add(fault)
        if fault is None:
            assert t.state == TrialState.COMPLETE
        else:
            assert t.state == TrialState.FAIL and t.user_attrs["fail_phase"] == PHASE[fault]
            assert MESSAGE[fault] in t.user_attrs["fail_reason"]
    assert seen == {None, *FAULTS}


def test_reinforce_with_faults_completes_ignores_failed_trials_and_improves(gmm2d, tmp_path):
    """20 % simulator exceptions + 10 % NaN losses on gmm2d through a worker: the study reaches its
    budget, failed trials name their phase, no policy update uses a failed trial, and the policy's
    trials from a deliberately bad start (every mean at 4, LTS Fig. 4) get better rewards.
    ``benchmarks/reinforce_faults.py`` measures the same set-up over several seeds and longer
    (BENCHMARKS.md, issue 7)."""
    from samplers.reinforce import ReinforceSampler

    sim = gmm2d.simulator
    bad = {"means": torch.full_like(sim.init_psi()["means"], 4.0), "log_std": sim.init_psi()["log_std"]}
    sampler = ReinforceSampler.for_simulator(sim, init=bad, population_size=4, learning_rate=0.1, seed=0)
    faulty = FaultySimulator(sim, raise_rate=0.2, nan_loss_rate=0.1)
    objective = faulty.objective(gmm2d, seed=0, n_samples=100, epochs=3, batch_size=20)
    study = optuna.create_study(storage=open_storage(f"journal:{tmp_path / 's.log'}"), sampler=sampler,
                                direction="maximize", pruner=optuna.pruners.NopPruner())
    run_worker(study, objective, n_trials=56)

    assert budget_state(study, 56).done and len(study.trials) == 56
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert {t.user_attrs["fail_phase"] for t in failed} == {"simulate", "train"}
    assert all(t.user_attrs["fail_reason"].startswith(t.user_attrs["fail_phase"] + " failed")
               for t in failed)
    records = {t.number: t.system_attrs["reinforce:state"] for t in study.trials}
    updates = [r for r in records.values() if "from_trials" in r]
    used = [n for r in updates for n in r["from_trials"]]
    assert len(updates) >= 8 and all(study.trials[n].state == TrialState.COMPLETE for n in used)
    rewards: dict[int, list[float]] = {}
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            rewards.setdefault(records[t.number]["generation"], []).append(t.value)
    later = [r for g in range(max(rewards) // 2, max(rewards) + 1) for r in rewards[g]]
    assert np.mean(later) > np.mean(rewards[0]) + 0.03  # second half of the generations vs the first
