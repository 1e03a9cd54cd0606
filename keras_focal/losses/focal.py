"""The focal-loss family (Lin et al. 2017): sigmoid focal loss, balanced cross-entropy and the softmax variants.

Every loss is a plain function returning unreduced values (what a detector calls directly) plus a thin
`keras.losses.Loss` subclass. From logits, everything is computed in log-sigmoid / softplus / log-softmax form,
never as a sigmoid followed by a log; half-precision inputs are computed and returned in float32.
"""

import warnings

import numpy as np

import keras
from keras import ops

from keras_focal.losses import _common as C


# ----------------------------------------------------------------------------------------------------------------
# Per-class weights


def _per_class_alpha(alpha, num_classes, loss_name, unit_interval=False):
    """`alpha` as the losses use it: None, a float, or a tuple of C floats checked against the class axis.

    A tuple (hashable) is what the fused kernel is compiled with; it becomes a constant vector broadcast along the
    last axis. `unit_interval` warns about entries above 1 (the sigmoid losses' `a_t`, whose negative-class weight
    is `1 - alpha_c`).
    """
    if not isinstance(alpha, (list, tuple)):
        return alpha
    if num_classes is not None and len(alpha) != num_classes:
        raise ValueError(
            f"{loss_name}: alpha has {len(alpha)} per-class weights but y_pred has {num_classes} classes "
            "(its last axis); give one weight per class."
        )
    if unit_interval and any(a > 1.0 for a in alpha):
        warnings.warn(
            f"{loss_name}: per-class alpha {list(alpha)} has entries above 1, so the negatives of those columns get "
            "the negative weight 1 - alpha_c in a_t = alpha_c y + (1 - alpha_c)(1 - y). Entries in [0, 1] keep "
            "both weights non-negative (alpha_c = w_c / (1 + w_c) gives positives-to-negatives odds w_c).",
            stacklevel=3)
    return tuple(float(a) for a in alpha)


def _alpha_tensor(alpha, dtype):
    return ops.cast(ops.convert_to_tensor(alpha), dtype) if isinstance(alpha, tuple) else alpha


def _effective_number_weights(counts, beta):
    # Cui et al. 2019, eq. (3)-(5): the effective number of n samples is E_n = (1 - beta^n) / (1 - beta); the
    # class-balanced weight is its inverse, (1 - beta) / (1 - beta^n). beta = 0 gives 1 for every class, beta -> 1
    # tends to 1/n (the inverse frequency, up to a factor).
    return (1.0 - beta) / (1.0 - np.power(beta, counts))


def _inverse_frequency_weights(counts, beta):
    return 1.0 / counts


# How `from_counts` turns per-class counts into weights, by `method`.
COUNT_WEIGHTINGS = {"effective": _effective_number_weights, "inverse": _inverse_frequency_weights}


def class_weights_from_counts(counts, method="effective", beta=0.999):
    """Per-class weights from the per-class counts of positives, scaled so that they sum to C (a list of floats).

    ```
    method="effective"  (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of Samples", CVPR):
        w_c = (1 - beta) / (1 - beta^n_c)
    method="inverse":
        w_c = 1 / n_c
    then  w_c <- C w_c / sum_k w_k
    ```

    Args:
        counts: the C per-class counts of positives, each > 0.
        method: "effective" or "inverse" (keys of `COUNT_WEIGHTINGS`).
        beta: in [0, 1) for "effective" (the paper uses 0.9, 0.99, 0.999, 0.9999); not used by "inverse".

    Example:

    >>> [round(w, 4) for w in class_weights_from_counts([900, 90, 10], method="inverse")]
    [0.0297, 0.297, 2.6733]
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(
            f"from_counts: counts must be a flat sequence of C per-class counts, got shape {counts.shape}.")
    bad = np.flatnonzero(~(counts > 0))
    if bad.size:
        raise ValueError(
            f"from_counts: every class needs a count > 0; class {int(bad[0])} has count {counts[bad[0]]:g}."
        )
    if method not in COUNT_WEIGHTINGS:
        raise ValueError(f"from_counts: method must be one of {sorted(COUNT_WEIGHTINGS)}, got method={method!r}.")
    beta = C.check_non_negative(beta, "beta")
    if method == "effective" and not beta < 1.0:
        raise ValueError(f"from_counts: `beta` must be in [0, 1) for method='effective', got beta={beta}.")
    weights = COUNT_WEIGHTINGS[method](counts, beta)
    return (weights * (counts.size / weights.sum())).tolist()


class _FromCounts:
    """`from_counts(counts, method="effective", beta=0.999, **kwargs)` for the losses whose alpha is per class."""

    @classmethod
    def _alpha_from_weights(cls, weights):
        return weights

    @classmethod
    def from_counts(cls, counts, method="effective", beta=0.999, **kwargs):
        """The loss with per-class `alpha` from the per-class counts of positives (`class_weights_from_counts`).

        ```
        method="effective" (Cui et al. 2019):  w_c = (1 - beta) / (1 - beta^n_c)
        method="inverse":                       w_c = 1 / n_c
        w_c <- C w_c / sum_k w_k                 (the weights sum to C)
        ```

        A count <= 0 is a ValueError naming the class. `kwargs` go to the constructor (not `alpha`).
        """
        if "alpha" in kwargs:
            raise ValueError("from_counts computes alpha; do not pass it.")
        weights = class_weights_from_counts(counts, method=method, beta=beta)
        return cls(alpha=cls._alpha_from_weights(weights), **kwargs)


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
        alpha = _alpha_tensor(alpha, x.dtype)  # a float, or a per-class vector along the last axis
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
        alpha = _alpha_tensor(alpha, p.dtype)
        loss = (alpha * y + (1.0 - alpha) * (1.0 - y)) * loss
    return loss


def focal_loss(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0, ignore_class=None):
    """Element-wise sigmoid focal loss (binary / multi-label), unreduced.

    Formula, with `p = sigmoid(y_pred)` (or `y_pred` itself if `from_logits=False`):

    ```
    p_t  = y p + (1 - y)(1 - p)
    a_t  = alpha y + (1 - alpha)(1 - y)          (1 when alpha is None; alpha_c of the column for a per-class alpha)
    loss = a_t (1 - p_t)^gamma BCE(y, p),   BCE(y, p) = -(y log p + (1 - y) log(1 - p))
    ```

    For hard labels this is the paper's `-a_t (1 - p_t)^gamma log(p_t)`. Label smoothing first moves y towards
    0.5: `y <- y (1 - label_smoothing) + 0.5 label_smoothing`. From logits, BCE is `softplus(x) - y x`; loss and
    gradient are finite for any finite logit and any `gamma >= 0`. Probabilities are clipped to
    `[epsilon, 1 - epsilon]` (`keras.config.epsilon()`).

    Args:
        y_true: labels in [0, 1], the same shape as `y_pred` (never broadcast).
        y_pred: logits or probabilities.
        alpha: weight of the positive class in [0, 1], a sequence of C such weights (one per label column, the
            last axis of `y_pred`; multi-label), or None for no weighting.
        gamma: focusing parameter >= 0.
        from_logits: whether `y_pred` holds logits.
        label_smoothing: in [0, 1].
        ignore_class: a label value (e.g. -1 or 255) whose entries give 0, with a gradient of exactly 0.

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
    alpha, gamma, label_smoothing, ignore_class = C.check_arguments(
        alpha=alpha, gamma=gamma, label_smoothing=label_smoothing, ignore_class=ignore_class).values()
    y_true, y_pred = C.to_compute(y_true, y_pred)
    C.check_same_shape(y_true, y_pred, "focal_loss")
    alpha = _per_class_alpha(alpha, y_pred.shape[-1] if len(y_pred.shape) else 1, "focal_loss",
                             unit_interval=True)
    kept = None
    if ignore_class is not None:
        kept = ops.not_equal(y_true, float(ignore_class))
        y_true = ops.where(kept, y_true, ops.zeros_like(y_true))  # any valid label: its term is multiplied by 0
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        loss = C.with_closed_form_gradient(_focal_and_derivative, y_true, y_pred, alpha=alpha, gamma=gamma)
    else:
        loss = _focal_from_probabilities(y_true, y_pred, alpha, gamma)
    if kept is not None:
        loss = loss * ops.cast(kept, loss.dtype)  # an exact 0, and a gradient of exactly 0 (the factor is 0)
    return loss


def balanced_crossentropy(y_true, y_pred, alpha=0.25, from_logits=False, label_smoothing=0.0, ignore_class=None):
    """Element-wise alpha-balanced binary cross-entropy: `focal_loss` with `gamma=0`.

    ```
    loss = a_t BCE(y, p),   a_t = alpha y + (1 - alpha)(1 - y)
    ```

    Example:

    >>> balanced_crossentropy([[1.0, 0.0]], [[0.9, 0.2]]).shape
    TensorShape([1, 2])
    """
    return focal_loss(
        y_true, y_pred, alpha=alpha, gamma=0.0, from_logits=from_logits, label_smoothing=label_smoothing,
        ignore_class=ignore_class,
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
        terms = _alpha_tensor(alpha, terms.dtype) * terms  # a per-class vector weights class i's term by alpha_i
    return terms


def categorical_focal_loss(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                           ignore_class=None):
    """Softmax focal loss for one-hot labels, one value per example (the class axis is reduced).

    ```
    p    = softmax(y_pred)   (or y_pred / sum(y_pred), clipped to [epsilon, 1 - epsilon], as Keras does)
    loss = sum_i y_i * alpha (1 - p_i)^gamma (-log p_i)   = -alpha (1 - p_c)^gamma log p_c  for one-hot y
    ```

    A per-class `alpha` (a sequence of C weights >= 0) is `alpha_i` in the sum, i.e. the true class's `alpha_c`.
    With `ignore_class` set, an example whose y_true row is all zeros (what `keras.ops.one_hot` gives for a label
    outside [0, C), such as 255 or -1) is ignored, and so is one whose `ignore_class` column is hot when
    `ignore_class` is a class index: its value is 0, with a gradient of exactly 0.

    This is `keras.losses.categorical_focal_crossentropy` (same alpha, gamma and label smoothing
    `y <- y (1 - ls) + ls / num_classes`), computed from logits in log-softmax form with `1 - p_i` formed without
    cancellation, so that loss and gradient stay finite for any finite logits and `gamma >= 0`. The class axis
    is part of the definition (the softmax couples the classes), so the unreduced value is per example.

    Example:

    >>> categorical_focal_loss([[0.0, 1.0, 0.0]], [[0.1, 0.8, 0.1]]).shape
    TensorShape([1])
    """
    alpha, gamma, label_smoothing, ignore_class = C.check_arguments(
        alpha=alpha, gamma=gamma, label_smoothing=label_smoothing, ignore_class=ignore_class).values()
    y_true, y_pred = C.to_compute(y_true, y_pred)
    C.check_same_shape(y_true, y_pred, "categorical_focal_loss")
    if len(y_pred.shape) == 0:
        raise ValueError("categorical_focal_loss needs a class axis; got scalar inputs.")
    alpha = _per_class_alpha(alpha, y_pred.shape[-1], "categorical_focal_loss")
    kept = None
    if ignore_class is not None:
        kept = _kept_one_hot_rows(y_true, y_pred, ignore_class)
    if label_smoothing:
        num_classes = ops.cast(ops.shape(y_true)[-1], y_true.dtype)
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / num_classes
    loss = ops.sum(_categorical_terms(y_true, y_pred, alpha, gamma, from_logits), axis=-1)
    if kept is not None:
        loss = loss * ops.cast(kept, loss.dtype)
    return loss


def _kept_one_hot_rows(y_true, y_pred, ignore_class):
    """The examples of a one-hot y_true that count: not an all-zero row, nor (for an `ignore_class` that is a
    class index) a row whose `ignore_class` column is hot."""
    y_true = ops.convert_to_tensor(y_true)
    kept = ops.any(ops.not_equal(y_true, 0), axis=-1)
    num_classes = y_true.shape[-1]
    if num_classes is not None and 0 <= ignore_class < num_classes:
        kept = ops.logical_and(kept, ops.take(y_true, ignore_class, axis=-1) < 0.5)
    return kept


def _kept_labels(y_true, y_pred, ignore_class):
    """The entries of integer labels (the shape of y_pred without its class axis) that are not `ignore_class`."""
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, -1)
    return ops.not_equal(ops.cast(y_true, "int32"), ignore_class)


def _kept_entries(y_true, y_pred, ignore_class):
    """The element-wise entries of binary / multi-label y_true that are not `ignore_class`."""
    return ops.not_equal(ops.convert_to_tensor(y_true), ops.cast(ignore_class, ops.convert_to_tensor(y_true).dtype))


def sparse_categorical_focal_loss(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, ignore_class=None):
    """Softmax focal loss for integer labels, one value per example: `-alpha (1 - p_c)^gamma log p_c`.

    `y_true` has the shape of `y_pred` without its class axis (a trailing axis of size 1 is also accepted); a
    per-class `alpha` (a sequence of C weights >= 0) gives the true class's `alpha_c`. Entries equal to
    `ignore_class` give 0, with a gradient of exactly 0 (`SparseCategoricalFocalLoss` also leaves them out of the
    "sum_over_batch_size" denominator).

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
    alpha = _per_class_alpha(alpha, num_classes, "sparse_categorical_focal_loss")
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
class FocalLoss(_FromCounts, C.LossFunctionWrapper):
    """Sigmoid focal loss (Lin et al. 2017) for binary and multi-label targets.

    ```
    loss = mean over the last axis of  a_t (1 - p_t)^gamma BCE(y, p)
    ```

    with `p = sigmoid(y_pred)` if `from_logits` else `y_pred`, `p_t = y p + (1 - y)(1 - p)`,
    `a_t = alpha y + (1 - alpha)(1 - y)` (1 if `alpha=None`); see `focal_loss`. Equals
    `keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=alpha, gamma=gamma)`, but from logits
    it never takes a log of a sigmoid, it is stable at any logit, and its closed-form gradient makes it faster and
    lighter in memory. y_true and y_pred must have the same shape (Keras' (batch,) vs (batch, 1) is accepted);
    any leading shape works (`[B, C]`, `[B, H, W, C]`).

    Args:
        alpha: positive-class weight in [0, 1], a sequence of C of them (one per label column, the last axis), or
            None. gamma: focusing parameter >= 0.
        from_logits: whether y_pred holds logits. label_smoothing: moves labels towards 0.5.
        ignore_class: a y_true value (e.g. -1) whose entries give 0 with a gradient of 0; "sum_over_batch_size"
            divides by the number of entries that are not ignored.
        reduction, name, dtype: as `keras.losses.Loss`.

    `FocalLoss.from_counts(counts, method="effective", beta=0.999, **kwargs)` takes the per-class counts of
    positives and gives each column the class-balanced weight `w_c` of Cui et al. 2019 ("Class-Balanced Loss
    Based on Effective Number of Samples"), `w_c = (1 - beta) / (1 - beta^n_c)` (or `1 / n_c` with
    `method="inverse"`), scaled so that the `w_c` sum to C; the `w_c` become `alpha`. Since they average 1, a
    class rarer than average gets `alpha_c > 1`, and `a_t` then weights that column's negatives by
    `1 - alpha_c < 0` (a warning says so). For the sigmoid loss, `alpha=[w / (1 + w) for w in
    class_weights_from_counts(counts)]` keeps `alpha_c` in [0, 1] with positives-to-negatives odds `w_c`.

    Example:

    >>> import keras, numpy as np
    >>> loss = FocalLoss(alpha=0.25, gamma=2.0, from_logits=True)
    >>> y_true = np.array([[0.0, 1.0], [0.0, 0.0]], "float32")
    >>> y_pred = np.array([[-3.0, 1.0], [0.5, -2.0]], "float32")
    >>> float(loss(y_true, y_pred)) > 0
    True
    >>> FocalLoss.from_counts([100, 100]).alpha
    [1.0, 1.0]
    """

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0, ignore_class=None,
                 reduction="sum_over_batch_size", name="focal_loss", dtype=None):
        super().__init__(focal_loss, last_axis="mean", match_unit_axis=True, name=name, reduction=reduction,
                         dtype=dtype, kept_fn=_kept_entries, alpha=alpha, gamma=gamma, from_logits=from_logits,
                         label_smoothing=label_smoothing, ignore_class=ignore_class)
        _per_class_alpha(self.alpha, None, self.name, unit_interval=True)


@keras.saving.register_keras_serializable(package="keras_focal")
class BalancedCrossentropy(C.LossFunctionWrapper):
    """Alpha-balanced binary cross-entropy: `FocalLoss` with `gamma=0`.

    ```
    loss = mean over the last axis of  a_t BCE(y, p),   a_t = alpha y + (1 - alpha)(1 - y)
    ```

    `alpha` may be a sequence of C weights in [0, 1] (one per label column), and `ignore_class` works as in
    `FocalLoss`. `BalancedCrossentropy.from_counts(num_positive, num_negative)` sets
    `alpha / (1 - alpha) = num_negative / num_positive`, i.e. `alpha = num_negative / (num_positive + num_negative)`,
    so that both classes carry the same total weight.

    Example:

    >>> loss = BalancedCrossentropy.from_counts(10, 990, from_logits=True)
    >>> round(loss.alpha, 3)
    0.99
    """

    def __init__(self, alpha=0.25, from_logits=False, label_smoothing=0.0, ignore_class=None,
                 reduction="sum_over_batch_size", name="balanced_crossentropy", dtype=None):
        super().__init__(balanced_crossentropy, last_axis="mean", match_unit_axis=True, name=name,
                         reduction=reduction, dtype=dtype, kept_fn=_kept_entries, alpha=alpha,
                         from_logits=from_logits, label_smoothing=label_smoothing, ignore_class=ignore_class)
        _per_class_alpha(self.alpha, None, self.name, unit_interval=True)

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
class CategoricalFocalLoss(_FromCounts, C.LossFunctionWrapper):
    """Softmax focal loss for one-hot labels: `-alpha (1 - p_c)^gamma log p_c` for the true class c.

    Reduces the class axis as `keras.losses.CategoricalFocalCrossentropy` (which it equals for the same alpha,
    gamma and label smoothing); see `categorical_focal_loss`. `alpha` may be a sequence of C weights >= 0 (the
    true class's `alpha_c`). With `ignore_class` set, all-zero y_true rows (and rows of class `ignore_class`) give
    0 and are left out of the "sum_over_batch_size" denominator.

    `CategoricalFocalLoss.from_counts(counts, method="effective", beta=0.999, **kwargs)`: `alpha_c = w_c` with
    `w_c = (1 - beta) / (1 - beta^n_c)` (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of
    Samples"; `1 / n_c` with `method="inverse"`), scaled so that the weights sum to C.

    Example:

    >>> loss = CategoricalFocalLoss(from_logits=True)
    >>> float(loss([[0.0, 1.0, 0.0]], [[0.5, 2.0, -1.0]])) > 0
    True
    """

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0, ignore_class=None,
                 reduction="sum_over_batch_size", name="categorical_focal_loss", dtype=None):
        super().__init__(categorical_focal_loss, name=name, reduction=reduction, dtype=dtype,
                         kept_fn=_kept_one_hot_rows, alpha=alpha, gamma=gamma, from_logits=from_logits,
                         label_smoothing=label_smoothing, ignore_class=ignore_class)


@keras.saving.register_keras_serializable(package="keras_focal")
class SparseCategoricalFocalLoss(_FromCounts, C.LossFunctionWrapper):
    """Softmax focal loss for integer labels: `-alpha (1 - p_c)^gamma log p_c`; `ignore_class` entries give 0.

    `alpha` may be a sequence of C weights >= 0 (the true class's `alpha_c`). Entries equal to `ignore_class`
    (e.g. 255, the void label of segmentation) give 0 with a gradient of 0, and "sum_over_batch_size" divides by
    the number of entries that are not ignored, as `keras.losses.SparseCategoricalCrossentropy(ignore_class=...)`.
    Dense prediction: y_pred `[B, H, W, C]`, y_true `[B, H, W]` (or `[B, H, W, 1]`), sample_weight `[B]` or
    `[B, H, W]`. See `sparse_categorical_focal_loss` for out-of-range labels (ValueError in eager mode, NaN inside
    a traced graph).

    `SparseCategoricalFocalLoss.from_counts(counts, method="effective", beta=0.999, **kwargs)`: `alpha_c = w_c`
    with `w_c = (1 - beta) / (1 - beta^n_c)` (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of
    Samples"; `1 / n_c` with `method="inverse"`), scaled so that the weights sum to C.

    Example:

    >>> loss = SparseCategoricalFocalLoss(from_logits=True, ignore_class=-1)
    >>> float(loss([1, -1], [[0.5, 2.0, -1.0], [0.0, 0.0, 0.0]])) > 0
    True
    >>> SparseCategoricalFocalLoss.from_counts([10, 10], method="inverse").alpha
    [1.0, 1.0]
    """

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, ignore_class=None,
                 reduction="sum_over_batch_size", name="sparse_categorical_focal_loss", dtype=None):
        super().__init__(sparse_categorical_focal_loss, name=name, reduction=reduction, dtype=dtype,
                         kept_fn=_kept_labels, alpha=alpha, gamma=gamma, from_logits=from_logits,
                         ignore_class=ignore_class)
