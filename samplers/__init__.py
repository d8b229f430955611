"""Optuna samplers for simulator parameters: REINFORCE (Learning to Simulate), AutoSimulate, BO."""

from samplers.autosimulate import AutoSimulateSampler
from samplers.bayesopt import BayesOptSampler
from samplers.reinforce import ReinforceSampler

__all__: list[str] = []
__all__ += ["BayesOptSampler"]
__all__ += ["AutoSimulateSampler"]
__all__ += ["ReinforceSampler"]
