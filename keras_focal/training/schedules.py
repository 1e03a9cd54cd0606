"""How the detectors are optimised: SGD or AdamW, a linear warm-up then cosine decay (Keras' `CosineDecay`) or step
decay (Detectron's 1x schedule), and optionally an exponential moving average of the weights (Keras' `use_ema`).

Schedules and optimizers are registries (`SCHEDULES`, `OPTIMIZERS`): name -> builder."""

import keras
from keras import ops

COSINE_FINAL_FRACTION = 0.01  # ultralytics cfg/default.yaml: lrf, the final rate as a fraction of the base rate
EMA_MOMENTUM = 0.99  # a time constant of 1 / (1 - m) = 100 steps, a tenth of the main job's 1000 (see make_optimizer)


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


def step_schedule(base, total_steps, warmup_steps, warmup_factor, steps_per_epoch, epochs, decay_epochs=None,
                  final_fraction=None):
    """Detectron's 1x: linear warm-up, then 10x drops after `decay_epochs` (default at 2/3 and 8/9 of training)."""
    if decay_epochs is None:
        decay_epochs = [round(epochs * 2 / 3), round(epochs * 8 / 9)]
    boundaries = [e * steps_per_epoch for e in decay_epochs if 0 < e < epochs]
    return WarmupStepDecay(base, warmup_steps, boundaries, warmup_factor=warmup_factor)


def cosine_schedule(base, total_steps, warmup_steps, warmup_factor, steps_per_epoch, epochs, decay_epochs=None,
                    final_fraction=None):
    """Keras' `CosineDecay` with its own linear warm-up: from `warmup_factor * base` to `base` over `warmup_steps`,
    then `base * (final + (1 - final) * (1 + cos(pi * t / T)) / 2)` with t the steps since the warm-up and
    T = total_steps - warmup_steps, reaching `final_fraction * base` at the last step (ultralytics' lrf 0.01,
    `cfg/default.yaml`)."""
    final_fraction = COSINE_FINAL_FRACTION if final_fraction is None else float(final_fraction)
    warmup_steps = max(0, min(int(warmup_steps), int(total_steps) - 1))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=base * warmup_factor if warmup_steps else base,
        decay_steps=max(1, int(total_steps) - warmup_steps), alpha=final_fraction,
        warmup_target=base if warmup_steps else None, warmup_steps=warmup_steps)


SCHEDULES = {"step": step_schedule, "cosine": cosine_schedule}


def _sgd(schedule, weight_decay, **kwargs):
    return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=weight_decay, **kwargs)


def _adamw(schedule, weight_decay, **kwargs):
    return keras.optimizers.AdamW(schedule, weight_decay=weight_decay, **kwargs)


# name -> (builder, default base rate given the global batch size)
OPTIMIZERS = {
    "sgd": (_sgd, lambda batch_size: 0.01 * batch_size / 16),  # RetinaNet paper: 0.01 at batch 16, linear scaling
    "adamw": (_adamw, lambda batch_size: 1e-3),
}


def make_optimizer(kind="adamw", steps_per_epoch=1, epochs=1, batch_size=16, learning_rate=None, warmup_steps=200,
                   decay_epochs=None, weight_decay=1e-4, clipnorm=10.0, schedule="step", warmup_factor=1 / 3,
                   final_fraction=None, ema=False, ema_momentum=EMA_MOMENTUM):
    """The training optimizer with its learning-rate schedule.

    kind: "sgd" (momentum 0.9, the paper's; base rate 0.01 * batch_size / 16, Detectron's linear scaling) or
        "adamw" (base rate 1e-3; trains faster from random init).
    schedule: "step" (`WarmupStepDecay`: 10x drops after `decay_epochs`, default at 2/3 and 8/9 of training, as
        the 1x schedule) or "cosine" (Keras' `CosineDecay` with its warm-up, down to `final_fraction` of the base
        rate, default 0.01, at the last step); both warm up linearly from `warmup_factor` of the base rate over
        `warmup_steps`.
    clipnorm: global gradient-norm clipping (None or 0: off); keeps from-scratch training stable.
    ema: keep an exponential moving average of the trainable weights in the optimizer (Keras' `use_ema`):
        `avg = m * avg + (1 - m) * w` after every step, `avg = w` at the first. `fit` copies the average into the
        model when it ends (`finalize_variable_values`); `keras_focal.training.ema_callbacks` swaps it in for
        evaluation and checkpoints during training. The averages are optimizer variables, so a checkpoint of the
        optimizer (BackupAndRestore, model.keras) holds them.
    """
    if kind not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer kind {kind!r}: expected one of {sorted(OPTIMIZERS)}.")
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}: expected one of {sorted(SCHEDULES)}.")
    if ema and not 0.0 < float(ema_momentum) < 1.0:
        raise ValueError(f"ema_momentum must be in (0, 1), got {ema_momentum}.")
    build, default_rate = OPTIMIZERS[kind]
    base = float(learning_rate or default_rate(batch_size))
    rate = SCHEDULES[schedule](base, total_steps=int(steps_per_epoch) * int(epochs), warmup_steps=int(warmup_steps),
                               warmup_factor=float(warmup_factor), steps_per_epoch=int(steps_per_epoch),
                               epochs=int(epochs), decay_epochs=decay_epochs, final_fraction=final_fraction)
    options = {"global_clipnorm": clipnorm or None}
    if ema:
        options.update(use_ema=True, ema_momentum=float(ema_momentum))
    return build(rate, weight_decay, **options)
