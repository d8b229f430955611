"""simsearch: learn simulator parameters ψ with Optuna so that a model trained on simulated data
does best on (real) validation data — Learning to Simulate, AutoSimulate and Meta-Sim as ordinary
Optuna tools."""

from simsearch.gap_objective import DistributionGapObjective
from simsearch.objective import (
    PhaseError,
    SimulatorObjective,
    TrainingContext,
    ranking_values,
    recommended_trial,
    trial_seed,
)
from simsearch.parameters import Parameter, ParameterSpace, Psi
from simsearch.simulator import (
    BaseSimulator,
    BlackBoxSimulator,
    LatentSpec,
    SimulatedBatch,
    Simulator,
)

__all__ = [
    "BaseSimulator",
    "BlackBoxSimulator",
    "DistributionGapObjective",
    "LatentSpec",
    "Parameter",
    "ParameterSpace",
    "PhaseError",
    "Psi",
    "SimulatedBatch",
    "SimulatorObjective",
    "Simulator",
    "TrainingContext",
    "ranking_values",
    "recommended_trial",
    "trial_seed",
]
__version__ = "0.1.0"
