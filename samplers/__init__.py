"""Optuna samplers for simulator parameters: REINFORCE (Learning to Simulate), AutoSimulate, BO."""

__all__: list[str] = []
