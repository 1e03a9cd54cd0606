"""The training recipe: which optimizer, schedule, weight average and mosaic period a run uses, from plain arguments.

The command line parses flags into a `Recipe`; the recipe builds the optimizer (`make_optimizer`), says at which
epoch mosaic / mixup close, and orders the callbacks that carry it out during `fit`:

    recipe = Recipe(schedule="cosine", ema=True, mosaic=1.0, close_mosaic=1)
    optimizer = recipe.optimizer("adamw", steps_per_epoch=250, epochs=4, batch_size=8)
    mixer = recipe.mosaic_mixup()                   # a keras_focal.data.MosaicMixup, or None; make_dataset(mosaic=)
    callbacks = recipe.callbacks(callbacks, optimizer, mixer, epochs=4)

Weight EMA through Keras: the optimizer keeps the averages (`use_ema`), `keras.callbacks.SwapEMAWeights
(swap_on_epoch=True)` puts them in the model at each epoch end, for the evaluation and checkpoint callbacks that
follow it, and takes the raw weights back at the next epoch's start; `fit` ends with the averages in the model
(`finalize_variable_values`), so what is evaluated, exported and saved after training is the average.
`BackupAndRestore` must save before the swap (it then holds the raw weights in the model and the averages in the
optimizer, and a resumed run continues both): `callbacks` puts it first.
"""

from __future__ import annotations

import dataclasses

import keras

from keras_focal.training.schedules import EMA_MOMENTUM, make_optimizer


class CloseMosaic(keras.callbacks.Callback):
    """Sets a `MosaicMixup`'s rates to 0 from epoch `close_at` on (0-based) and to its initial rates before it, at
    each epoch's start, so a resumed run gets the rates of its epoch (YOLOX: the last 15 of 300 epochs without
    them, section 2.2; ultralytics `close_mosaic`: the last 10). Batches already prefetched keep the old rates."""

    def __init__(self, mixer, close_at):
        super().__init__()
        self.mixer = mixer
        self.close_at = int(close_at)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= self.close_at:
            self.mixer.close()
        else:
            self.mixer.reopen()


@dataclasses.dataclass
class Recipe:
    """schedule: "cosine" or "step" (`make_optimizer`); warmup_steps: linear warm-up steps.
    ema / ema_momentum: weight EMA in the optimizer (Keras' `use_ema`).
    mosaic / mixup: probabilities per training image (`keras_focal.data.MosaicMixup`); 0 for none.
    close_mosaic: the last this many epochs train without mosaic and mixup.
    multi_scale: 0, or a fraction f: each training batch is resized to a random square size, a multiple of 32 in
        [(1 - f) S, (1 + f) S] for the training size S (`multi_scale_range`; ultralytics `multi_scale`: 0.5).
    """

    schedule: str = "step"
    warmup_steps: int = 200
    ema: bool = False
    ema_momentum: float = EMA_MOMENTUM
    mosaic: float = 0.0
    mixup: float = 0.0
    close_mosaic: int = 0
    multi_scale: float = 0.0

    def optimizer(self, kind="adamw", steps_per_epoch=1, epochs=1, batch_size=16, **kwargs):
        """`make_optimizer` with this recipe's schedule, warm-up and EMA; kwargs go to it (learning_rate, ...)."""
        return make_optimizer(kind, steps_per_epoch=steps_per_epoch, epochs=epochs, batch_size=batch_size,
                              warmup_steps=self.warmup_steps, schedule=self.schedule, ema=self.ema,
                              ema_momentum=self.ema_momentum, **kwargs)

    def mosaic_mixup(self, **kwargs):
        """A `keras_focal.data.MosaicMixup` with this recipe's rates (kwargs: its other arguments), or None when
        both rates are 0. Call it outside any strategy scope (its rates are variables)."""
        if not (self.mosaic or self.mixup):
            return None
        from keras_focal.data.mosaic import MosaicMixup  # the data package does not depend on training

        return MosaicMixup(mosaic=self.mosaic, mixup=self.mixup, **kwargs)

    def multi_scale_range(self, image_size):
        """`make_dataset(multi_scale=)` for the training size (an int, or (H, W): the larger side): (min, max)
        pixels, or None when multi_scale is 0."""
        if not self.multi_scale:
            return None
        if not 0.0 < float(self.multi_scale) < 1.0:
            raise ValueError(f"multi_scale is a fraction of the image size in (0, 1), got {self.multi_scale}.")
        size = max(image_size) if isinstance(image_size, (tuple, list)) else image_size
        return (1.0 - self.multi_scale) * size, (1.0 + self.multi_scale) * size

    def close_epoch(self, epochs):
        """The first epoch (0-based) without mosaic and mixup."""
        return max(0, int(epochs) - int(self.close_mosaic))

    def callbacks(self, callbacks, optimizer, mixer=None, epochs=1):
        """`callbacks` with the recipe's own in the order they must run: BackupAndRestore first (it saves the raw
        weights), then CloseMosaic, then SwapEMAWeights, then the rest (evaluation and checkpoints see the EMA)."""
        callbacks = list(callbacks)
        backups = [c for c in callbacks if isinstance(c, keras.callbacks.BackupAndRestore)]
        rest = [c for c in callbacks if not isinstance(c, keras.callbacks.BackupAndRestore)]
        own = []
        if mixer is not None and self.close_mosaic:
            own.append(CloseMosaic(mixer, self.close_epoch(epochs)))
        if getattr(optimizer, "use_ema", False):
            own.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
        return backups + own + rest
