"""GFL regression helpers: the ``Integral`` (distribution -> expected distance) and the learnable ``Scale``."""

import keras
from keras import ops


def expected_distances(distribution_logits, reg_max=16):
    """``[..., 4 * (reg_max + 1)]`` logits -> ``[..., 4]`` float32 expected distances ``sum_i i * softmax_i``."""
    x = ops.cast(distribution_logits, "float32")
    n = reg_max + 1
    if x.shape[-1] is not None and x.shape[-1] != 4 * n:
        raise ValueError(f"Integral(reg_max={reg_max}) expects a last axis of {4 * n}, got {x.shape[-1]}")
    x = ops.reshape(x, tuple(ops.shape(x)[:-1]) + (4, n))
    return ops.sum(ops.softmax(x, axis=-1) * ops.arange(n, dtype="float32"), axis=-1)


@keras.saving.register_keras_serializable(package="keras_focal")
class Integral(keras.layers.Layer):
    """Expected value of a discrete distribution over ``0..reg_max`` for each of the 4 box sides.

    Generalized Focal Loss (Li et al. 2020, §3.3): the head predicts ``4 * (reg_max + 1)`` logits per anchor;
    a softmax over each side's ``reg_max + 1`` bins gives ``P(y_i)`` and the distance is
    ``sum_i i * P(y_i)``, in stride units. ``[..., 4 * (reg_max + 1)] -> [..., 4]`` (float32 output).
    The side order is whatever the head uses (left, top, right, bottom in keras_focal).
    """

    def __init__(self, reg_max=16, **kwargs):
        super().__init__(**kwargs)
        self.reg_max = int(reg_max)

    def call(self, inputs):
        return expected_distances(inputs, self.reg_max)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(tuple(inputs.shape[:-1]) + (4,), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({"reg_max": self.reg_max})
        return config


@keras.saving.register_keras_serializable(package="keras_focal")
class Scale(keras.layers.Layer):
    """Multiplies its input by one learnable scalar (initialised to ``scale``, 1.0), as the per-level
    ``Scale`` of FCOS / GFL heads."""

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale_init = float(scale)

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale",
            shape=(),
            initializer=keras.initializers.Constant(self.scale_init),
            trainable=True,
        )

    def call(self, inputs):
        return inputs * ops.cast(self.scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale_init})
        return config
