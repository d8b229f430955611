"""BayesOptSampler: Optuna's sampler contract, plus the properties the module docstring promises."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)
from optuna.trial import TrialState

from samplers.bayesopt import BayesOptSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"x": FloatDistribution(-3.0, 3.0), "y": FloatDistribution(-3.0, 3.0)}
# Enough points for the package's GP to fit a sensible length scale (with 5 it picks ~1e-5).
POINTS = [(x, y) for x in (-2.5, -0.5, 1.5) for y in (-2.5, -0.5, 1.5)] + [
    (-1.5, 0.5), (0.5, -1.5), (2.5, 2.5)]


def _bowl(x: float, y: float) -> float:
    return (x - 1.0) ** 2 + (y + 0.5) ** 2


# n_startup_trials=1: the GP is used from the second trial on, so the contract tests exercise it
# (one GP hyper-parameter fit per call instead of the package's six keeps them quick).
FAST = {"n_startup_trials": 1, "gp_options": {"n_restarts_optimizer": 0}}
class TestBasic(BasicSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: BayesOptSampler(**FAST)


class TestRelative(RelativeSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: BayesOptSampler(**FAST)


class TestSingleOnly(SingleOnlySamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: BayesOptSampler(**FAST)


def _study(direction: str = "maximize", sign: float = 1.0, extra=()) -> optuna.Study:
    """A study holding the POINTS as completed trials with value ``sign * bowl``; ``extra`` adds
    (params, value or None, state) trials after them."""
    study = optuna.create_study(direction=direction)
    for x, y in POINTS:
        study.add_trial(optuna.create_trial(params={"x": x, "y": y}, distributions=SPACE,
                                            value=sign * _bowl(x, y)))
    for (x, y), value, state in extra:
        study.add_trial(optuna.create_trial(params={"x": x, "y": y}, distributions=SPACE,
                                            value=value, state=state))
    return study


def _propose(study: optuna.Study, sampler: BayesOptSampler) -> dict:
    trial = study.ask()  # a new RUNNING trial without params
    frozen = study._storage.get_trial(trial._trial_id)
    return sampler.sample_relative(study, frozen, SPACE)


def _same(params: dict):
    # Equal up to the last digits multi-threaded BLAS reductions may change between two fits.
    return pytest.approx(params, rel=1e-6, abs=1e-9)


def test_minimize_registers_negated_values():
    # The package maximises: a minimize study with values v must propose what a maximize study
    # with values -v proposes (same seed, same trial number).
    # A small kappa makes the proposal follow the GP mean, which the sign flips.
    def sampler():
        return BayesOptSampler(seed=3, acquisition_options={"kappa": 0.1})

    low = _propose(_study("minimize", 1.0), sampler())
    assert low == _same(_propose(_study("maximize", -1.0), sampler()))
    assert low != _same(_propose(_study("maximize", 1.0), sampler()))
    # and it exploits the right way: closer to the bowl's minimum than any registered point
    assert _bowl(low["x"], low["y"]) < min(_bowl(x, y) for x, y in POINTS)


def test_running_trial_is_registered_with_the_constant_lie():
    # A RUNNING trial at p with pending="max" must give the same proposal as a COMPLETE trial at p
    # whose value is the best registered target.
    p = (-2.0, 2.5)  # not one of the POINTS
    best = max(-_bowl(x, y) for x, y in POINTS)  # in the package's maximised sign
    running = _study("minimize", extra=[(p, None, TrialState.RUNNING)])
    lied = _study("minimize", extra=[(p, -best, TrialState.COMPLETE)])
    assert _propose(running, BayesOptSampler(seed=5, pending="max")) == _same(_propose(
        lied, BayesOptSampler(seed=5)))
    # pending=None ignores it: the same as a study where that trial failed.
    failed = _study("minimize", extra=[(p, None, TrialState.FAIL)])
    assert _propose(running, BayesOptSampler(seed=5, pending=None)) == _same(_propose(
        failed, BayesOptSampler(seed=5)))
    assert _propose(running, BayesOptSampler(seed=5)) != _same(
        _propose(failed, BayesOptSampler(seed=5)))


def test_concurrent_workers_do_not_propose_the_same_point():
    study = _study("minimize")
    other = optuna.load_study(study_name=study.study_name, storage=study._storage,
                              sampler=BayesOptSampler())
    study.sampler = BayesOptSampler()
    first = study.ask(SPACE)  # stays RUNNING: the second worker sees it as pending
    second = other.ask(SPACE)
    assert first.params != second.params


def _run(study: optuna.Study, n: int) -> None:
    study.optimize(lambda t: _bowl(t.suggest_float("x", -3, 3), t.suggest_float("y", -3, 3)),
                   n_trials=n)


def test_restart_with_a_new_sampler_continues_identically():
    # State lives in the storage: a fresh sampler (a restarted process) picks up where the first
    # stopped and proposes exactly what an uninterrupted run proposes.
    whole = optuna.create_study(direction="minimize", sampler=BayesOptSampler(seed=11))
    _run(whole, 10)
    split = optuna.create_study(direction="minimize", sampler=BayesOptSampler(seed=11))
    _run(split, 6)
    split.sampler = BayesOptSampler(seed=11)
    _run(split, 4)
    for a, b in zip(whole.trials, split.trials, strict=True):
        assert a.params == _same(b.params)


def test_seeds_differ_and_unseeded_runs_differ():
    def params(seed):
        study = optuna.create_study(direction="minimize", sampler=BayesOptSampler(seed=seed))
        _run(study, 7)
        return [t.params for t in study.trials]

    assert params(1) == params(1)
    assert params(1) != params(2)
    assert params(None) != params(None)


def test_acquisition_options_pass_through_and_decay_is_replayed():
    sampler = BayesOptSampler(acquisition="ucb", n_startup_trials=2,
                              acquisition_options={"kappa": 2.0, "exploration_decay": 0.5})
    assert sampler._acquisition(2).kappa == 2.0
    assert sampler._acquisition(5).kappa == pytest.approx(2.0 * 0.5**3)
    ei = BayesOptSampler(acquisition="ei", acquisition_options={"xi": 0.3})
    assert ei._acquisition(0).xi == 0.3
    a = _propose(_study("minimize"), BayesOptSampler(seed=0, acquisition="ucb",
                                                     acquisition_options={"kappa": 0.0}))
    b = _propose(_study("minimize"), BayesOptSampler(seed=0, acquisition="ucb",
                                                     acquisition_options={"kappa": 10.0}))
    assert a != b


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"acquisition": "pi"}, "acquisition must be one of"),
        ({"n_startup_trials": 0}, "n_startup_trials must be an int >= 1, got 0"),
        ({"pending": "median"}, "pending must be one of"),
        ({"acquisition_options": {"bogus": 1}}, "bogus"),
    ],
)
def test_bad_options_are_named(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        BayesOptSampler(**kwargs)
