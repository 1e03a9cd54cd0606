"""Training utilities: strategy selection, learning-rate schedules and the distributed training loop."""

from keras_focal.training.distributed import DistributedTrainer, distribute_dataset, distributed_fit
from keras_focal.training.schedules import WarmupStepDecay, make_optimizer
from keras_focal.training.strategy import is_chief, select_strategy

__all__ = ["DistributedTrainer", "WarmupStepDecay", "distribute_dataset", "distributed_fit", "is_chief",
           "make_optimizer", "select_strategy"]
