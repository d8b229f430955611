"""PyTorch Lightning pieces of simsearch: main task models, a pruning callback, a quiet trainer."""

from lightning_modules.distribution_transformer import (
    DistributionTransformer,
    MetaSimTrainer,
    TransformedSimulator,
)
from lightning_modules.main_task import (
    LOSSES,
    METRICS,
    AccumulatedMainTaskModule,
    MainTaskModule,
)
from lightning_modules.pruning import PruningCallback
from lightning_modules.trainer import TensorBatches, fit_tensors, quiet_trainer

__all__ = [
    "LOSSES",
    "METRICS",
    "AccumulatedMainTaskModule",
    "DistributionTransformer",
    "MainTaskModule",
    "MetaSimTrainer",
    "PruningCallback",
    "TensorBatches",
    "fit_tensors",
    "TransformedSimulator",
    "quiet_trainer",
]
