"""Generalized Focal Loss (Li et al. 2020): Quality Focal Loss and Distribution Focal Loss."""

import keras
from keras import ops

from keras_focal.losses import _common as C


def quality_focal_loss(y_true, y_pred, beta=2.0, from_logits=False):
    """Element-wise Quality Focal Loss, unreduced.

    ```
    sigma = sigmoid(y_pred)   (or y_pred, clipped to [epsilon, 1 - epsilon], if from_logits=False)
    loss  = -|y - sigma|^beta ((1 - y) log(1 - sigma) + y log(sigma)) = |y - sigma|^beta BCE(y, sigma)
    ```

    `y_true` is the quality target (e.g. the IoU of the predicted box with its ground truth; 0 for negatives), the
    same shape as `y_pred`. From logits, BCE is `softplus(x) - y x`. The gradient is 0 where sigma == y, and
    finite everywhere for any `beta >= 0` (for `beta < 1` the infinite one-sided derivative at sigma == y is
    replaced by 0).

    Example:

    >>> import numpy as np
    >>> quality_focal_loss(np.array([[0.8, 0.0]], "float32"), np.array([[1.2, -3.0]], "float32"),
    ...                    from_logits=True).shape
    TensorShape([1, 2])
    """
    beta = C.check_arguments(beta=beta)["beta"]
    y_true, y_pred = C.to_compute(y_true, y_pred)
    C.check_same_shape(y_true, y_pred, "quality_focal_loss")
    if from_logits:
        return C.with_closed_form_gradient(_qfl_and_derivative, y_true, y_pred, beta=beta)
    sigma = C.clip_probabilities(y_pred)
    bce = -(y_true * ops.log(sigma) + (1.0 - y_true) * ops.log1p(-sigma))
    if beta == 0:
        return bce
    return C.safe_abs_pow(sigma - y_true, beta) * bce


def _qfl_and_derivative(y, x, beta):
    """QFL from logits and its derivative, from one exp(-|x|) and one log1p per element.

    With s = sigmoid(x), d = s - y and bce = softplus(x) - y x:
        loss = |d|^beta bce
        d/dx = beta |d|^(beta - 1) sign(d) s (1 - s) bce + |d|^beta (s - y)
    """
    u = ops.exp(-ops.abs(x))
    bce = ops.relu(x) - x * y + ops.log1p(u)
    r = 1.0 / (1.0 + u)
    s = ops.where(x >= 0, r, u * r)
    d = s - y
    if beta == 0:
        return bce, d
    power, power_derivative = C.abs_pow_and_derivative(d, beta)
    return power * bce, power_derivative * (u * r * r) * bce + power * d  # s (1 - s) = u r^2


def distribution_focal_loss(y_true, y_pred, from_logits=False):
    """Distribution Focal Loss, one value per target (the shape of `y_true`).

    `y_pred` has one more axis than `y_true`: a distribution S over the bins 0..n (softmax of `y_pred` if
    `from_logits`, else `y_pred` normalised and clipped to [epsilon, 1] as Keras does for probabilities).
    With `y` clipped to [0, n], `y_l = floor(y)`, `y_r = y_l + 1`:

    ```
    loss = -((y_r - y) log S[y_l] + (y - y_l) log S[y_r])
    ```

    A target equal to n is taken as the limit from below (`y_l = n - 1`, `y_r = n`, weights 0 and 1), which is
    what clamping it just below n gives, without choosing an arbitrary margin. The gradient with respect to the
    logits is `S - t` with `t` the two-bin target: it moves probability mass only towards `y_l` and `y_r`.

    Example:

    >>> import numpy as np
    >>> logits = np.zeros((2, 4, 17), "float32")          # 2 boxes, 4 sides, reg_max 16
    >>> distances = np.full((2, 4), 3.4, "float32")
    >>> distribution_focal_loss(distances, logits, from_logits=True).shape
    TensorShape([2, 4])
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_pred = ops.cast(y_pred, C.compute_dtype(y_pred))
    y_true = ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype)
    if len(y_pred.shape) != len(y_true.shape) + 1 or not C.shapes_compatible(
        tuple(y_true.shape), tuple(y_pred.shape[:-1])
    ):
        raise ValueError(
            "distribution_focal_loss: y_pred needs a bins axis: its shape must be y_true.shape + (n + 1,), "
            f"got y_true.shape={tuple(y_true.shape)} and y_pred.shape={tuple(y_pred.shape)}."
        )
    num_bins = y_pred.shape[-1]
    if num_bins is None or num_bins < 2:
        raise ValueError(
            "distribution_focal_loss: the bins axis (last axis of y_pred) must be static and hold at least 2 "
            f"bins, got y_pred.shape={tuple(y_pred.shape)}."
        )
    if from_logits:
        return C.with_closed_form_gradient(_dfl_and_derivative, y_true, y_pred, num_bins=num_bins)
    p = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
    log_s = ops.log(ops.clip(p, keras.config.epsilon(), 1.0))
    return -ops.sum(_two_bin_target(y_true, num_bins, log_s.dtype) * log_s, axis=-1)


def _two_bin_target(y_true, num_bins, dtype):
    """The target distribution t: weight y_r - y at bin y_l and y - y_l at bin y_r, with y clipped to [0, n]."""
    n = num_bins - 1
    y = ops.clip(y_true, 0.0, float(n))
    left = ops.minimum(ops.floor(y), float(n - 1))
    left_int = ops.cast(left, "int32")
    w_left = ops.expand_dims((left + 1.0) - y, -1)
    w_right = ops.expand_dims(y - left, -1)
    return w_left * ops.one_hot(left_int, num_bins, dtype=dtype) + w_right * ops.one_hot(
        left_int + 1, num_bins, dtype=dtype
    )


def _dfl_and_derivative(y, x, num_bins):
    """DFL from logits, -sum_k t_k log softmax(x)_k, and its derivative softmax(x) - t (sum_k t_k = 1)."""
    target = _two_bin_target(y, num_bins, x.dtype)
    log_s = ops.log_softmax(x, axis=-1)
    return -ops.sum(target * log_s, axis=-1), ops.exp(log_s) - target


@keras.saving.register_keras_serializable(package="keras_focal")
class QualityFocalLoss(C.LossFunctionWrapper):
    """Quality Focal Loss (GFL): `|y - sigma|^beta BCE(y, sigma)`, mean over the last axis.

    y_true is the IoU-quality target in [0, 1] (0 for negatives), the same shape as y_pred; see
    `quality_focal_loss`.

    Example:

    >>> loss = QualityFocalLoss(beta=2.0, from_logits=True)
    >>> float(loss([[0.8, 0.0]], [[1.2, -3.0]])) > 0
    True
    """

    def __init__(self, beta=2.0, from_logits=False, reduction="sum_over_batch_size", name="quality_focal_loss",
                 dtype=None):
        super().__init__(quality_focal_loss, last_axis="mean", match_unit_axis=True, name=name,
                         reduction=reduction, dtype=dtype, beta=beta, from_logits=from_logits)


@keras.saving.register_keras_serializable(package="keras_focal")
class DistributionFocalLoss(C.LossFunctionWrapper):
    """Distribution Focal Loss (GFL): one value per target; y_pred has an extra bins axis of size n + 1.

    See `distribution_focal_loss`.

    Example:

    >>> import numpy as np
    >>> loss = DistributionFocalLoss(from_logits=True)
    >>> float(loss(np.full((2, 4), 3.4, "float32"), np.zeros((2, 4, 17), "float32"))) > 0
    True
    """

    def __init__(self, from_logits=False, reduction="sum_over_batch_size", name="distribution_focal_loss",
                 dtype=None):
        super().__init__(distribution_focal_loss, name=name, reduction=reduction, dtype=dtype,
                         from_logits=from_logits)
