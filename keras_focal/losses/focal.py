"""The focal-loss family (Lin et al. 2017): sigmoid focal loss, balanced cross-entropy and the softmax variants.

Every loss is a plain function returning unreduced values (what a detector calls directly) plus a thin
`keras.losses.Loss` subclass. From logits, everything is computed in log-sigmoid / softplus / log-softmax form,
never as a sigmoid followed by a log; half-precision inputs are computed and returned in float32.
"""

import keras
from keras import ops

from keras_focal.losses import _common as C


# ----------------------------------------------------------------------------------------------------------------
# Sigmoid focal loss


def _modulating_powers(a, gamma):
    """(a**gamma, a**(gamma - 1)) for a in [0, 1], both finite; the second only matters where it is multiplied by
    something that vanishes at least as fast as `a` (it is 0 at a == 0 when gamma < 1)."""
    if gamma == 0:
        return None, None
    if C.is_small_int(gamma):
        a_gm1 = C.int_pow(a, gamma - 1)
        return a_gm1 * a, a_gm1
    if gamma > 1:
        a_gm1 = ops.power(a, gamma - 1.0)
        return a_gm1 * a, a_gm1
    a_g = ops.power(a, gamma)
    return a_g, a_g / ops.maximum(a, C.TINY)


def _focal_and_derivative(y, x, alpha, gamma):
    """Element-wise sigmoid focal loss from logits and its derivative with respect to the logits.

    With s = sigmoid(x), a = 1 - p_t = y (1 - s) + (1 - y) s, bce = softplus(x) - y x and w = a_t:
        loss   = w a^gamma bce
        d/dx   = w [a^gamma (s - y) + gamma (1 - 2y) s (1 - s) a^(gamma - 1) bce]
    One exp(-|x|) and one log1p per element give everything (the sigmoid and its complement are taken from the
    same exp, each without cancellation).
    """
    u = ops.exp(-ops.abs(x))
    bce = ops.relu(x) - x * y + ops.log1p(u)  # softplus(x) - y x, exact for soft labels too
    if gamma == 0 and alpha is None:
        s = ops.where(x >= 0, 1.0, u) / (1.0 + u)
        return bce, s - y
    r = 1.0 / (1.0 + u)
    ur = u * r
    positive = x >= 0
    s = ops.where(positive, r, ur)  # sigmoid(x)
    s_neg = ops.where(positive, ur, r)  # sigmoid(-x) = 1 - sigmoid(x), without cancellation
    if gamma == 0:
        loss, dx = bce, s - y
    else:
        a = y * s_neg + (1.0 - y) * s  # 1 - p_t
        a_g, a_gm1 = _modulating_powers(a, gamma)
        loss = a_g * bce
        dx = a_g * (s - y) + (gamma * (1.0 - 2.0 * y) * s * s_neg) * a_gm1 * bce
    if alpha is not None:
        w = (1.0 - alpha) + (2.0 * alpha - 1.0) * y  # alpha y + (1 - alpha)(1 - y)
        loss, dx = w * loss, w * dx
    return loss, dx


def _focal_from_probabilities(y, p, alpha, gamma):
    p = C.clip_probabilities(p)
    bce = -(y * ops.log(p) + (1.0 - y) * ops.log1p(-p))
    loss = bce
    if gamma != 0:
        a = y * (1.0 - p) + (1.0 - y) * p  # 1 - p_t >= epsilon after clipping: finite derivative
        loss = C.pow_nonneg(a, gamma) * loss
    if alpha is not None:
        loss = (alpha * y + (1.0 - alpha) * (1.0 - y)) * loss
    return loss


def focal_loss(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0):
    """Element-wise sigmoid focal loss (binary / multi-label), unreduced.

    Formula, with `p = sigmoid(y_pred)` (or `y_pred` itself if `from_logits=False`):

    ```
    p_t  = y p + (1 - y)(1 - p)
    a_t  = alpha y + (1 - alpha)(1 - y)          (1 when alpha is None)
    loss = a_t (1 - p_t)^gamma BCE(y, p),   BCE(y, p) = -(y log p + (1 - y) log(1 - p))
    ```

    For hard labels this is the paper's `-a_t (1 - p_t)^gamma log(p_t)`. Label smoothing first moves y towards
    0.5: `y <- y (1 - label_smoothing) + 0.5 label_smoothing`. From logits, BCE is `softplus(x) - y x`; loss and
    gradient are finite for any finite logit and any `gamma >= 0`. Probabilities are clipped to
    `[epsilon, 1 - epsilon]` (`keras.config.epsilon()`).

    Args:
        y_true: labels in [0, 1], the same shape as `y_pred` (never broadcast).
        y_pred: logits or probabilities.
        alpha: weight of the positive class in [0, 1], or None for no weighting.
        gamma: focusing parameter >= 0.
        from_logits: whether `y_pred` holds logits.
        label_smoothing: in [0, 1].

    Returns:
        The element-wise loss, the shape of `y_pred`, in float32 (float64 for float64 inputs). Labels receive no
        gradient on the logits path.

    Example:

    >>> import numpy as np
    >>> logits = np.array([[2.0, -1.0, 0.5]], "float32")
    >>> labels = np.array([[1.0, 0.0, 0.0]], "float32")
    >>> focal_loss(labels, logits, from_logits=True).shape
    TensorShape([1, 3])
    """
    alpha, gamma, label_smoothing = C.check_arguments(
        alpha=alpha, gamma=gamma, label_smoothing=label_smoothing).values()
    y_true, y_pred = C.to_compute(y_true, y_pred)
    C.check_same_shape(y_true, y_pred, "focal_loss")
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        return C.with_closed_form_gradient(_focal_and_derivative, y_true, y_pred, alpha=alpha, gamma=gamma)
    return _focal_from_probabilities(y_true, y_pred, alpha, gamma)


def balanced_crossentropy(y_true, y_pred, alpha=0.25, from_logits=False, label_smoothing=0.0):
    """Element-wise alpha-balanced binary cross-entropy: `focal_loss` with `gamma=0`.

    ```
    loss = a_t BCE(y, p),   a_t = alpha y + (1 - alpha)(1 - y)
    ```

    Example:

    >>> balanced_crossentropy([[1.0, 0.0]], [[0.9, 0.2]]).shape
    TensorShape([1, 2])
    """
    return focal_loss(
        y_true, y_pred, alpha=alpha, gamma=0.0, from_logits=from_logits, label_smoothing=label_smoothing
    )


# ----------------------------------------------------------------------------------------------------------------
# Softmax focal loss


def _log_softmax_and_log_complement(x):
    """log p_i and log(1 - p_i) of p = softmax(x), each without cancellation.

    1 - p_i = sum_{j != i} exp(x_j - m) / S. For every class but the (first) arg-max, S - e_i >= 1, so the
    subtraction is harmless; for the arg-max the sum over the other classes is taken directly. The complement is
    floored at the smallest normal float so that its log, and the gradient, stay finite when it underflows.
    """
    m = ops.stop_gradient(ops.max(x, axis=-1, keepdims=True))
    e = ops.exp(x - m)
    s = ops.sum(e, axis=-1, keepdims=True)
    log_s = ops.log(s)
    log_p = x - m - log_s
    is_max = ops.one_hot(ops.argmax(x, axis=-1), x.shape[-1], dtype=x.dtype)
    others_of_max = ops.sum(e * (1.0 - is_max), axis=-1, keepdims=True)
    complement = ops.where(is_max > 0, others_of_max, s - e)
    log_1mp = ops.log(ops.maximum(complement, C.TINY)) - log_s
    return log_p, log_1mp


def _categorical_terms(y, y_pred, alpha, gamma, from_logits):
    """Per-class terms y_i alpha (1 - p_i)^gamma (-log p_i); their sum over the last axis is the loss."""
    if from_logits:
        log_p, log_1mp = _log_softmax_and_log_complement(y_pred)
        factor = None if gamma == 0 else ops.exp(gamma * log_1mp)
    else:
        p = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
        p = C.clip_probabilities(p)
        log_p = ops.log(p)
        factor = None if gamma == 0 else C.pow_nonneg(1.0 - p, gamma)
    terms = -y * log_p
    if factor is not None:
        terms = factor * terms
    if alpha is not None:
        terms = alpha * terms
    return terms


def categorical_focal_loss(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0):
    """Softmax focal loss for one-hot labels, one value per example (the class axis is reduced).

    ```
    p    = softmax(y_pred)   (or y_pred / sum(y_pred), clipped to [epsilon, 1 - epsilon], as Keras does)
    loss = sum_i y_i * alpha (1 - p_i)^gamma (-log p_i)   = -alpha (1 - p_c)^gamma log p_c  for one-hot y
    ```

    This is `keras.losses.categorical_focal_crossentropy` (same alpha, gamma and label smoothing
    `y <- y (1 - ls) + ls / num_classes`), computed from logits in log-softmax form with `1 - p_i` formed without
    cancellation, so that loss and gradient stay finite for any finite logits and `gamma >= 0`. The class axis
    is part of the definition (the softmax couples the classes), so the unreduced value is per example.

    Example:

    >>> categorical_focal_loss([[0.0, 1.0, 0.0]], [[0.1, 0.8, 0.1]]).shape
    TensorShape([1])
    """
    alpha, gamma, label_smoothing = C.check_arguments(
        alpha=alpha, gamma=gamma, label_smoothing=label_smoothing).values()
    y_true, y_pred = C.to_compute(y_true, y_pred)
    C.check_same_shape(y_true, y_pred, "categorical_focal_loss")
    if len(y_pred.shape) == 0:
        raise ValueError("categorical_focal_loss needs a class axis; got scalar inputs.")
    if label_smoothing:
        num_classes = ops.cast(ops.shape(y_true)[-1], y_true.dtype)
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / num_classes
    return ops.sum(_categorical_terms(y_true, y_pred, alpha, gamma, from_logits), axis=-1)


def sparse_categorical_focal_loss(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, ignore_class=None):
    """Softmax focal loss for integer labels, one value per example: `-alpha (1 - p_c)^gamma log p_c`.

    `y_true` has the shape of `y_pred` without its class axis (a trailing axis of size 1 is also accepted).
    Entries equal to `ignore_class` contribute 0 (they are not masked out of the Keras reduction's denominator).

    Labels outside `[0, num_classes)` (other than `ignore_class`): when the labels are concrete (eager) a
    ValueError is raised; inside a traced graph (`tf.function`, XLA, `jax.jit`) no assertion is possible with
    `keras.ops`, so such entries yield NaN, which makes the bad data visible instead of silently contributing 0.

    Example:

    >>> sparse_categorical_focal_loss([1, 2], [[0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]).shape
    TensorShape([2])
    """
    alpha, gamma, ignore_class = C.check_arguments(alpha=alpha, gamma=gamma, ignore_class=ignore_class).values()
    y_pred = ops.convert_to_tensor(y_pred)
    y_pred = ops.cast(y_pred, C.compute_dtype(y_pred))
    y_true = ops.convert_to_tensor(y_true)
    if len(y_pred.shape) == 0:
        raise ValueError("sparse_categorical_focal_loss needs a class axis in y_pred; got a scalar.")
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, -1)
    if not C.shapes_compatible(tuple(y_true.shape), tuple(y_pred.shape[:-1])):
        raise ValueError(
            "sparse_categorical_focal_loss: y_true must have the shape of y_pred without its class axis, "
            f"got y_true.shape={tuple(y_true.shape)} and y_pred.shape={tuple(y_pred.shape)}."
        )
    num_classes = y_pred.shape[-1]
    labels = ops.cast(y_true, "int32")
    valid = ops.logical_and(labels >= 0, labels < num_classes)
    ignored = None
    if ignore_class is not None:
        ignored = ops.equal(labels, ignore_class)
        valid = ops.logical_or(valid, ignored)
    values = C.concrete_numpy(labels)
    if values is not None:
        bad = values[~C.concrete_numpy(valid)] if values.size else values[:0]
        if bad.size:
            raise ValueError(
                f"sparse_categorical_focal_loss: labels must be in [0, {num_classes})"
                + (f" or equal ignore_class={ignore_class}" if ignore_class is not None else "")
                + f", got {sorted(set(bad.tolist()))[:10]}."
            )
    safe_labels = ops.where(valid, labels, 0)
    if ignored is not None:
        safe_labels = ops.where(ignored, 0, safe_labels)
    one_hot = ops.one_hot(safe_labels, num_classes, dtype=y_pred.dtype)
    loss = ops.sum(_categorical_terms(one_hot, y_pred, alpha, gamma, from_logits), axis=-1)
    if ignored is not None:
        loss = ops.where(ignored, ops.zeros_like(loss), loss)
    return ops.where(valid, loss, ops.full_like(loss, float("nan")))


# ----------------------------------------------------------------------------------------------------------------
# Loss classes


@keras.saving.register_keras_serializable(package="keras_focal")
class FocalLoss(C.LossFunctionWrapper):
    """Sigmoid focal loss (Lin et al. 2017) for binary and multi-label targets.

    ```
    loss = mean over the last axis of  a_t (1 - p_t)^gamma BCE(y, p)
    ```

    with `p = sigmoid(y_pred)` if `from_logits` else `y_pred`, `p_t = y p + (1 - y)(1 - p)`,
    `a_t = alpha y + (1 - alpha)(1 - y)` (1 if `alpha=None`); see `focal_loss`. Equals
    `keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=alpha, gamma=gamma)`, but from logits
    it never takes a log of a sigmoid, it is stable at any logit, and its closed-form gradient makes it faster and
    lighter in memory. y_true and y_pred must have the same shape (Keras' (batch,) vs (batch, 1) is accepted).

    Args:
        alpha: positive-class weight in [0, 1], or None. gamma: focusing parameter >= 0.
        from_logits: whether y_pred holds logits. label_smoothing: moves labels towards 0.5.
        reduction, name, dtype: as `keras.losses.Loss`.

    Example:

    >>> import keras, numpy as np
    >>> loss = FocalLoss(alpha=0.25, gamma=2.0, from_logits=True)
    >>> y_true = np.array([[0.0, 1.0], [0.0, 0.0]], "float32")
    >>> y_pred = np.array([[-3.0, 1.0], [0.5, -2.0]], "float32")
    >>> float(loss(y_true, y_pred)) > 0
    True
    """

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                 reduction="sum_over_batch_size", name="focal_loss", dtype=None):
        super().__init__(focal_loss, last_axis="mean", match_unit_axis=True, name=name, reduction=reduction,
                         dtype=dtype, alpha=alpha, gamma=gamma, from_logits=from_logits,
                         label_smoothing=label_smoothing)


@keras.saving.register_keras_serializable(package="keras_focal")
class BalancedCrossentropy(C.LossFunctionWrapper):
    """Alpha-balanced binary cross-entropy: `FocalLoss` with `gamma=0`.

    ```
    loss = mean over the last axis of  a_t BCE(y, p),   a_t = alpha y + (1 - alpha)(1 - y)
    ```

    `BalancedCrossentropy.from_counts(num_positive, num_negative)` sets
    `alpha / (1 - alpha) = num_negative / num_positive`, i.e. `alpha = num_negative / (num_positive + num_negative)`,
    so that both classes carry the same total weight.

    Example:

    >>> loss = BalancedCrossentropy.from_counts(10, 990, from_logits=True)
    >>> round(loss.alpha, 3)
    0.99
    """

    def __init__(self, alpha=0.25, from_logits=False, label_smoothing=0.0, reduction="sum_over_batch_size",
                 name="balanced_crossentropy", dtype=None):
        super().__init__(balanced_crossentropy, last_axis="mean", match_unit_axis=True, name=name,
                         reduction=reduction, dtype=dtype, alpha=alpha, from_logits=from_logits,
                         label_smoothing=label_smoothing)

    @classmethod
    def from_counts(cls, num_positive, num_negative, **kwargs):
        """A loss whose alpha balances the classes: `alpha / (1 - alpha) = num_negative / num_positive`."""
        num_positive, num_negative = float(num_positive), float(num_negative)
        if num_positive <= 0 or num_negative <= 0:
            raise ValueError(
                "from_counts needs positive counts, got "
                f"num_positive={num_positive}, num_negative={num_negative}."
            )
        if "alpha" in kwargs:
            raise ValueError("from_counts computes alpha; do not pass it.")
        return cls(alpha=num_negative / (num_positive + num_negative), **kwargs)


@keras.saving.register_keras_serializable(package="keras_focal")
class CategoricalFocalLoss(C.LossFunctionWrapper):
    """Softmax focal loss for one-hot labels: `-alpha (1 - p_c)^gamma log p_c` for the true class c.

    Reduces the class axis as `keras.losses.CategoricalFocalCrossentropy` (which it equals for the same alpha,
    gamma and label smoothing); see `categorical_focal_loss`.

    Example:

    >>> loss = CategoricalFocalLoss(from_logits=True)
    >>> float(loss([[0.0, 1.0, 0.0]], [[0.5, 2.0, -1.0]])) > 0
    True
    """

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                 reduction="sum_over_batch_size", name="categorical_focal_loss", dtype=None):
        super().__init__(categorical_focal_loss, name=name, reduction=reduction, dtype=dtype, alpha=alpha,
                         gamma=gamma, from_logits=from_logits, label_smoothing=label_smoothing)


@keras.saving.register_keras_serializable(package="keras_focal")
class SparseCategoricalFocalLoss(C.LossFunctionWrapper):
    """Softmax focal loss for integer labels: `-alpha (1 - p_c)^gamma log p_c`; `ignore_class` entries give 0.

    See `sparse_categorical_focal_loss` for the handling of out-of-range labels (ValueError in eager mode, NaN
    inside a traced graph).

    Example:

    >>> loss = SparseCategoricalFocalLoss(from_logits=True, ignore_class=-1)
    >>> float(loss([1, -1], [[0.5, 2.0, -1.0], [0.0, 0.0, 0.0]])) > 0
    True
    """

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, ignore_class=None,
                 reduction="sum_over_batch_size", name="sparse_categorical_focal_loss", dtype=None):
        super().__init__(sparse_categorical_focal_loss, name=name, reduction=reduction, dtype=dtype, alpha=alpha,
                         gamma=gamma, from_logits=from_logits, ignore_class=ignore_class)
