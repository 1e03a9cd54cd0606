"""What the keras_focal losses share: the Loss base class, argument checks, dtypes, shape checks, powers, fusion."""

import functools

import numpy as np

import keras
from keras import ops

# The argument checks live in the public `keras_focal.losses.checks`; re-exported here for the losses' modules.
from keras_focal.losses.checks import (  # noqa: F401
    ARGUMENT_CHECKS,
    check_alpha,
    check_argument,
    check_arguments,
    check_bool,
    check_class_weights,
    check_ignore_class,
    check_label_smoothing,
    check_non_negative,
    check_probability,
)

# Smallest positive normal float32: a floor for quantities that are about to be logged or divided by.
TINY = float(np.finfo(np.float32).tiny)

_LOW_PRECISION = ("float16", "bfloat16")


def compute_dtype(x):
    """float32 for float16 / bfloat16 / integer inputs, float64 kept, float32 otherwise."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    return "float64" if dtype == "float64" else "float32"


def to_compute(y_true, y_pred):
    """Converts both to tensors in the compute dtype (float32 for half precision: mixed precision)."""
    y_pred = ops.convert_to_tensor(y_pred)
    dtype = compute_dtype(y_pred)
    y_pred = ops.cast(y_pred, dtype)
    y_true = ops.cast(ops.convert_to_tensor(y_true), dtype)
    return y_true, y_pred


def static_shape(x):
    return tuple(x.shape)


def shapes_compatible(a, b):
    if len(a) != len(b):
        return False
    return all(da is None or db is None or da == db for da, db in zip(a, b))


def check_same_shape(y_true, y_pred, loss_name):
    """Raises ValueError naming both static shapes when they cannot be the same shape."""
    a, b = static_shape(y_true), static_shape(y_pred)
    if not shapes_compatible(a, b):
        raise ValueError(
            f"{loss_name}: y_true and y_pred must have the same shape (no broadcasting), "
            f"got y_true.shape={a} and y_pred.shape={b}."
        )


def match_trailing_unit_axis(y_true, y_pred):
    """Keras' convention for (batch,) labels with (batch, 1) predictions (and the reverse).

    Only a trailing axis of size 1 is added or removed; nothing is ever broadcast.
    """
    y_true, y_pred = ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred)
    rt, rp = len(y_true.shape), len(y_pred.shape)
    if rp == rt + 1 and y_pred.shape[-1] == 1:
        y_true = ops.expand_dims(y_true, -1)
    elif rt == rp + 1 and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, -1)
    return y_true, y_pred


def is_small_int(value, limit=8):
    return float(value).is_integer() and 0 <= value <= limit


def int_pow(x, n):
    """x**n for a small non-negative Python integer n by repeated multiplication (no transcendentals)."""
    n = int(n)
    if n == 0:
        return ops.ones_like(x)
    result = None
    base = x
    while n:
        if n & 1:
            result = base if result is None else result * base
        n >>= 1
        if n:
            base = base * base
    return result


def pow_nonneg(x, exponent):
    """x**exponent for x >= 0: multiplication for small integer exponents, ops.power otherwise."""
    if is_small_int(exponent):
        return int_pow(x, exponent)
    return ops.power(x, ops.cast(exponent, x.dtype))


def safe_abs_pow(d, exponent):
    """|d|**exponent whose autodiff gradient is finite everywhere (0 at d == 0 when the true one is infinite)."""
    return abs_pow_and_derivative(d, exponent)[0]


def clip_probabilities(p):
    eps = keras.config.epsilon()
    return ops.clip(p, eps, 1.0 - eps)


class LossFunctionWrapper(keras.losses.Loss):
    """A keras_focal loss class: a plain function of unreduced values plus its hyper-parameters (the shape of keras
    core's `LossFunctionWrapper`).

    `call(y_true, y_pred)` is `fn(y_true, y_pred, **arguments)`, its last axis reduced by `last_axis` ("mean",
    "sum", or None when `fn` already returns one value per example or target); Keras' reduction and
    `sample_weight` come after. `match_unit_axis` accepts Keras' (batch,) labels with (batch, 1) predictions.
    The arguments are checked once, here, become attributes (`loss.alpha`), and make up `get_config` with
    `name`, `reduction` and `dtype`.

    A `sample_weight` of the leading shape of the per-example values (`[B]` for `[B, H, W]` values) is given
    trailing unit axes, so that it weights whole examples instead of broadcasting against the last axis.

    Ignored entries (`ignore_class`, with `kept_fn(y_true, y_pred, ignore_class)` giving the boolean mask of the
    entries that count, the shape of `fn`'s output): `fn` gives them 0. With `last_axis="mean"` the value of an
    example is the mean over its kept entries and its weight k = (kept entries) / (entries on the last axis), so
    that the unreduced value (value times k) is the mean over the last axis with ignored entries as 0. The weight
    multiplies `sample_weight` and, for "sum_over_batch_size" / "mean", is scaled by (number of values) /
    sum(k), Keras' own rule for masked entries (`keras.losses.SparseCategoricalCrossentropy(ignore_class=...)`):

        sum_over_batch_size = sum(sample_weight * loss over kept entries) / (number of kept entries)
        mean_with_sample_weight = sum(sample_weight * loss over kept entries) / sum(sample_weight over kept entries)
        sum = sum(sample_weight * value),  None: the values, 0 where everything is ignored
    """

    def __init__(self, fn, last_axis=None, match_unit_axis=False, name=None, reduction="sum_over_batch_size",
                 dtype=None, kept_fn=None, **arguments):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if last_axis not in (None, "mean", "sum"):
            raise ValueError(f"last_axis must be None, 'mean' or 'sum', got {last_axis!r}")
        self.fn = fn
        self.kept_fn = kept_fn
        self.last_axis = last_axis
        self.match_unit_axis = bool(match_unit_axis)
        # The user's dtype as given (Keras keeps only the policy), so that get_config is complete.
        self._user_dtype = dtype if (dtype is None or isinstance(dtype, str)) else getattr(dtype, "name", None)
        self._argument_names = tuple(arguments)
        for argument, value in check_arguments(**arguments).items():
            setattr(self, argument, value)

    def _ignoring(self):
        return self.kept_fn is not None and getattr(self, "ignore_class", None) is not None

    def _inputs(self, y_true, y_pred):
        if self.match_unit_axis:
            return match_trailing_unit_axis(y_true, y_pred)
        return ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred)

    def _kept(self, y_true, y_pred, dtype):
        return ops.cast(self.kept_fn(y_true, y_pred, self.ignore_class), dtype)

    def call(self, y_true, y_pred):
        y_true, y_pred = self._inputs(y_true, y_pred)
        values = self.fn(y_true, y_pred, **{n: getattr(self, n) for n in self._argument_names})
        if self.last_axis == "mean":
            if self._ignoring():
                count = ops.sum(self._kept(y_true, y_pred, values.dtype), axis=-1)
                return ops.sum(values, axis=-1) / ops.maximum(count, 1.0)
            return ops.mean(values, axis=-1)
        if self.last_axis == "sum":
            return ops.sum(values, axis=-1)
        return values

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is None and not self._ignoring():
            return super().__call__(y_true, y_pred)
        dtype = compute_dtype(ops.convert_to_tensor(y_pred))
        t, p = self._inputs(y_true, y_pred)
        values_rank = len(p.shape) - 1  # every keras_focal loss reduces the last axis of y_pred
        if sample_weight is not None:
            sample_weight = ops.cast(ops.convert_to_tensor(sample_weight), dtype)
            rank = len(sample_weight.shape)
            if 0 < rank < values_rank:  # the leading shape: one weight per example / pixel
                trailing = (1,) * (values_rank - rank)
                sample_weight = ops.reshape(sample_weight, tuple(ops.shape(sample_weight)) + trailing)
        if self._ignoring():
            kept = self._kept(t, p, dtype)
            if self.last_axis == "mean":
                kept = ops.mean(kept, axis=-1)
            if self.reduction in ("sum_over_batch_size", "mean"):
                total = ops.cast(ops.size(kept), dtype)
                kept = kept * ops.divide_no_nan(total, ops.sum(kept))
            kept = ops.stop_gradient(kept)
            sample_weight = kept if sample_weight is None else sample_weight * kept
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config["dtype"] = self._user_dtype
        config.update({n: getattr(self, n) for n in self._argument_names})
        return config


def concrete_numpy(x):
    """The value of `x` as a NumPy array when it is concrete (eager), None when it is symbolic (graph/trace)."""
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            if not tf.executing_eagerly() or not hasattr(x, "numpy"):
                return None
            return x.numpy()
        if backend == "jax":
            import jax

            if isinstance(x, jax.core.Tracer):
                return None
        return np.asarray(ops.convert_to_numpy(x))
    except Exception:  # symbolic tensors of any backend
        return None


@functools.lru_cache(maxsize=None)
def _compiled(kernel, static_items):
    import tensorflow as tf

    static = dict(static_items)
    return tf.function(lambda *tensors: kernel(*tensors, **static), jit_compile=True)


def fused_elementwise(kernel, **static):
    """`kernel(*tensors, **static)` as one fused, XLA-compiled loop on the TensorFlow backend; as it is elsewhere.

    Measured on the focal loss (`python benchmarks/losses.py`): TensorFlow runs each element-wise op as its own
    kernel with its own full-size output, so a dozen ops mean a dozen passes over memory and several full-size
    intermediates alive at once. XLA fuses them into one loop that reads the inputs once and writes only the
    results. On the TensorFlow backend the kernel is therefore wrapped in `tf.function(jit_compile=True)` (inside
    an XLA-compiled step it is simply inlined); on JAX the caller's `jit` already fuses it, on other backends it is
    returned unchanged. `static` must be hashable Python values (they are compiled in as constants).
    """
    if keras.backend.backend() != "tensorflow":
        return functools.partial(kernel, **static)
    return _compiled(kernel, tuple(sorted(static.items())))


def with_closed_form_gradient(kernel, y_true, y_pred, **static):
    """`loss` of `loss, d_loss = kernel(y_true, y_pred, **static)`, differentiated as `d_loss` times the upstream.

    `d_loss` is the derivative of each loss value with respect to `y_pred` (the shape of `y_pred`; when the loss
    reduces a trailing axis of `y_pred`, the upstream gradient is broadcast over it). It is formed in the forward
    pass inside one fused kernel (`fused_elementwise`), so the backward pass is one multiplication and only that
    tensor is kept for it. The labels are data: they get no gradient.
    """
    kernel = fused_elementwise(kernel, **static)

    @ops.custom_gradient
    def _loss(y, x):
        loss, d_loss = kernel(ops.stop_gradient(y), ops.stop_gradient(x))

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            if len(upstream.shape) < len(d_loss.shape):
                upstream = ops.expand_dims(upstream, -1)
            return None, upstream * d_loss

        return loss, grad

    return _loss(y_true, y_pred)


def abs_pow_and_derivative(d, exponent):
    """(|d|**exponent, its derivative exponent |d|**(exponent - 1) sign(d)), the derivative taken as 0 at d == 0
    (where it is infinite for exponent < 1)."""
    if is_small_int(exponent):
        n = int(exponent)
        if n == 0:
            return ops.ones_like(d), ops.zeros_like(d)
        magnitude = ops.abs(d)
        lower = int_pow(magnitude, n - 1)
        return lower * magnitude, n * lower * ops.sign(d)
    nonzero = ops.not_equal(d, 0.0)
    log_magnitude = ops.log(ops.where(nonzero, ops.abs(d), ops.ones_like(d)))
    power = ops.where(nonzero, ops.exp(exponent * log_magnitude), ops.zeros_like(d))
    derivative = ops.where(nonzero, exponent * ops.exp((exponent - 1.0) * log_magnitude) * ops.sign(d), 0.0)
    return power, derivative
