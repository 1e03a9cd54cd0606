"""Learning-rate schedule of the detectors: linear warmup, then step decay (Detectron 1x schedule)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_focal")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from `warmup_factor * base` over `warmup_steps`, then `base * decay_rate ** k` after the k-th
    boundary. Detectron's 1x: base 0.01 at batch 16, boundaries 60k and 80k of 90k, decay 0.1, warmup 500 steps
    from a third of the base rate."""

    def __init__(self, base_learning_rate, warmup_steps=500, boundaries=(), decay_rate=0.1, warmup_factor=1 / 3):
        self.base_learning_rate = float(base_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.boundaries = tuple(int(b) for b in boundaries)
        self.decay_rate = float(decay_rate)
        self.warmup_factor = float(warmup_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        passed = sum(ops.cast(step >= b, "float32") for b in self.boundaries) if self.boundaries else 0.0
        rate = self.base_learning_rate * ops.power(self.decay_rate, passed)
        if self.warmup_steps > 0:
            progress = ops.minimum(step / self.warmup_steps, 1.0)
            rate = rate * (self.warmup_factor + (1.0 - self.warmup_factor) * progress)
        return rate

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "warmup_steps": self.warmup_steps,
            "boundaries": list(self.boundaries),
            "decay_rate": self.decay_rate,
            "warmup_factor": self.warmup_factor,
        }
