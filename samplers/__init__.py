"""Optuna samplers for simulator parameters: REINFORCE (Learning to Simulate), AutoSimulate, BO."""

from samplers.autosimulate import AutoSimulateSampler
from samplers.bayesopt import BayesOptSampler
from samplers.reinforce import ReinforceSampler

__all__ = ["AutoSimulateSampler", "BayesOptSampler", "ReinforceSampler"]
