"""The rule by which a user-supplied loss (`RetinaNet.compile(classification_loss=..., box_loss=...)`) is evaluated
inside a head's loss: element by element, its reduction set aside."""

import keras
from keras import ops


def resolve_loss(loss):
    """None (the head's default), a function, or anything `keras.losses.get` accepts (object, name, config)."""
    if loss is None or (callable(loss) and not isinstance(loss, (str, dict))):
        return loss
    return keras.losses.get(loss)


def expects_logits(loss):
    """Whether `loss` takes logits: a Loss object says so with `from_logits` (its own attribute or its wrapped
    function's argument); a plain function gets logits."""
    if not isinstance(loss, keras.losses.Loss):
        return True
    from_logits = getattr(loss, "from_logits", None)
    if from_logits is None:
        from_logits = getattr(loss, "_fn_kwargs", {}).get("from_logits", True)
    return bool(from_logits)


def per_element(loss, y_true, y_pred, element_axes=0, name="loss"):
    """The unreduced value of `loss` for every element of `y_pred`: the one interface for user-supplied losses.

    An element is a scalar (`element_axes=0`: one class of one anchor, one box coordinate) or a box
    (`element_axes=1`: the last axis of 4). The loss sees every element on its own, as a vector of length one
    (`[..., 1]`) or a single box (`[..., 1, 4]`), so whatever it does with its last axis (mean, sum) gives the
    element's value, and its Keras reduction and `sample_weight` are set aside (a Loss object is evaluated with
    `loss.call`). A plain function may keep the unit axis or reduce it. Returns `y_pred.shape[:-element_axes]`
    (all of `y_pred.shape` for scalars), float32.
    """
    fn = loss.call if isinstance(loss, keras.losses.Loss) else loss
    axis = -1 if element_axes == 0 else -2
    values = fn(ops.expand_dims(y_true, axis), ops.expand_dims(y_pred, axis))
    values = ops.convert_to_tensor(values)
    expected = tuple(y_pred.shape[: len(y_pred.shape) - element_axes])
    if len(values.shape) == len(expected) + 1 and values.shape[-1] == 1:
        values = ops.squeeze(values, -1)
    if len(values.shape) != len(expected):
        raise ValueError(
            f"{name}={getattr(loss, 'name', loss)!r} must give one value per element: called on "
            f"{tuple(ops.expand_dims(y_pred, axis).shape)} it returned shape {tuple(values.shape)}, expected "
            f"{expected} (or with a trailing 1)")
    return ops.cast(values, "float32")
