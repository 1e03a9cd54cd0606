"""Training utilities: strategy selection and learning-rate schedules."""

from keras_focal.training.schedules import WarmupStepDecay
from keras_focal.training.strategy import is_chief, select_strategy

__all__ = ["WarmupStepDecay", "is_chief", "select_strategy"]
