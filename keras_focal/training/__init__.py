"""Training utilities: strategy selection, the training recipe (learning-rate schedules, weight EMA, mosaic period)
and the distributed training loop."""

from keras_focal.training.distributed import DistributedTrainer, distribute_dataset, distributed_fit
from keras_focal.training.recipe import CloseMosaic, Recipe
from keras_focal.training.schedules import SCHEDULES, WarmupStepDecay, make_optimizer
from keras_focal.training.strategy import is_chief, select_strategy

__all__ = ["CloseMosaic", "DistributedTrainer", "Recipe", "SCHEDULES", "WarmupStepDecay", "distribute_dataset",
           "distributed_fit", "is_chief", "make_optimizer", "select_strategy"]
