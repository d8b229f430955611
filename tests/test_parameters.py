import math

import numpy as np
import optuna
import pytest
import torch

from simsearch import Parameter, ParameterSpace


def test_search_space_names_and_bounds():
    space = ParameterSpace(
        [Parameter("a", 0.0, 1.0, 0.5), Parameter("m", -1.0, [1.0, 2.0], 0.0, shape=(2, 2))]
    )
    dists = space.search_space()
    assert list(dists) == ["a", "m[0,0]", "m[0,1]", "m[1,0]", "m[1,1]"]
    assert dists["m[0,1]"] == optuna.distributions.FloatDistribution(-1.0, 2.0)
    assert space.dim == 5


def test_round_trip_params_flat_psi():
    space = ParameterSpace([Parameter("a", 0, 1, 0.5), Parameter("v", -2, 2, [0, 1, -1], shape=(3,))])
    psi = space.init_psi()
    params = space.to_params(psi)
    assert params == {"a": 0.5, "v[0]": 0.0, "v[1]": 1.0, "v[2]": -1.0}
    back = space.from_params({**params, "lr": 0.1})  # a user's own parameter is ignored
    assert all(torch.equal(back[k], psi[k]) for k in psi)
    np.testing.assert_allclose(space.to_flat(space.clip({"a": torch.tensor(3.0),
                                                         "v": torch.tensor([5.0, 0, -5])})),
                               [1, 2, 0, -2])


def test_suggest_uses_trial():
    space = ParameterSpace([Parameter("v", -2, 2, 0, shape=(2,))])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    psi = space.suggest(trial)
    assert psi["v"].tolist() == pytest.approx([trial.params["v[0]"], trial.params["v[1]"]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="p", low=1.0, high=1.0, init=1.0), "parameter 'p': expected low < high"),
        (dict(name="p", low=2.0, high=1.0, init=1.5), "expected low < high"),
        (dict(name="p", low=-math.inf, high=1.0, init=0.0), "low must be finite"),
        (dict(name="p", low=0.0, high=math.nan, init=0.0), "high must be finite"),
        (dict(name="p", low=0.0, high=1.0, init=math.inf), "init must be finite"),
        (dict(name="p", low=0.0, high=1.0, init=1.5), "init must lie in [low, high]"),
        (dict(name="p", low=0.0, high=1.0, init=0.5, shape=(0,)), "shape must be an int >= 1"),
        (dict(name="p", low=0.0, high=1.0, init=[0.1, 0.2, 0.3], shape=(2,)), "init must broadcast"),
        (dict(name="not ok", low=0.0, high=1.0, init=0.5), "must be a Python identifier"),
    ],
)
def test_bad_declarations_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError) as info:
        Parameter(**kwargs)
    assert message in str(info.value)
    if kwargs["name"] == "p":
        assert "'p'" in str(info.value)


def test_repeated_name_and_empty_space():
    with pytest.raises(ValueError, match="parameter 'a' is declared more than once"):
        ParameterSpace([Parameter("a", 0, 1, 0.5), Parameter("a", 0, 2, 1)])
    with pytest.raises(ValueError, match="at least one parameter"):
        ParameterSpace([])


def test_check_names_shape_and_bounds():
    space = ParameterSpace([Parameter("v", -1, 1, 0, shape=(2,))])
    with pytest.raises(ValueError, match=r"missing \['v'\], unknown \['w'\]"):
        space.check({"w": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"parameter 'v': expected shape \(2,\), got \(3,\)"):
        space.check({"v": torch.zeros(3)})
    bounds = r"expected values in \[\[-1, -1\], \[1, 1\]\], got \[0, 3\]"
    with pytest.raises(ValueError, match=r"parameter 'v': " + bounds):
        space.check({"v": torch.tensor([0.0, 3.0])})
