"""Optuna's own sampler contract tests, run unchanged against ReinforceSampler."""

from __future__ import annotations

import pytest
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)

from samplers.reinforce import ReinforceSampler

pytestmark = pytest.mark.filterwarnings("ignore:ReinforceSampler models float parameters")


class TestReinforceSamplerContract(
    BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase
):
    @pytest.fixture
    def sampler(self):
        return lambda: ReinforceSampler(population_size=2, seed=0)
