"""How the detectors are optimised: linear warmup then step decay (Detectron 1x schedule), SGD or AdamW."""

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


def make_optimizer(kind="adamw", steps_per_epoch=1, epochs=1, batch_size=16, learning_rate=None, warmup_steps=200,
                   decay_epochs=None, weight_decay=1e-4, clipnorm=10.0):
    """The optimizer `examples/train.py` uses, with a `WarmupStepDecay` schedule.

    kind: "sgd" (momentum 0.9, the paper's; base rate 0.01 * batch_size / 16, Detectron's linear scaling) or
        "adamw" (base rate 1e-3; trains faster from random init).
    decay_epochs: epochs after which the rate drops 10x; default at 2/3 and 8/9 of training, as the 1x schedule.
    clipnorm: global gradient-norm clipping (None or 0: off); keeps from-scratch training stable.
    """
    if decay_epochs is None:
        decay_epochs = [round(epochs * 2 / 3), round(epochs * 8 / 9)]
    boundaries = [e * steps_per_epoch for e in decay_epochs if 0 < e < epochs]
    clipnorm = clipnorm or None
    if kind == "sgd":
        schedule = WarmupStepDecay(learning_rate or 0.01 * batch_size / 16, warmup_steps, boundaries)
        return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=weight_decay, global_clipnorm=clipnorm)
    if kind == "adamw":
        schedule = WarmupStepDecay(learning_rate or 1e-3, warmup_steps, boundaries)
        return keras.optimizers.AdamW(schedule, weight_decay=weight_decay, global_clipnorm=clipnorm)
    raise ValueError(f"Unknown optimizer kind {kind!r}: expected 'sgd' or 'adamw'.")
