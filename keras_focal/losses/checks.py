"""Argument checks for loss hyper-parameters: each converts a user's value or raises a ValueError naming it.

Used by the losses and by anything that takes a loss's hyper-parameters under its own name (a detection head's
`qfl_beta`, `giou_weight`, `alpha`). Every check is `check(value, name)`, so the message names the argument as
the caller spelled it. `check_arguments(**arguments)` picks the rule for each argument by name:

1. an exact name registered in `ARGUMENT_CHECKS` (`alpha`, `gamma`, `beta`, `label_smoothing`, `from_logits`,
   `ignore_class`);
2. otherwise the longest registered ending of whole underscore-separated words (`qfl_beta` -> `beta`,
   `focal_alpha` -> `alpha`, `giou_weight` -> `weight`, `cls_label_smoothing` -> `label_smoothing`);
3. otherwise the value is returned as given (no rule is known for it).

`register_check(name)` adds a rule. This module imports only NumPy: it works under every Keras backend.
"""

import numbers

import numpy as np

__all__ = [
    "ARGUMENT_CHECKS",
    "check_alpha",
    "check_argument",
    "check_arguments",
    "check_bool",
    "check_class_weights",
    "check_ignore_class",
    "check_label_smoothing",
    "check_non_negative",
    "check_probability",
    "register_check",
]


def check_non_negative(value, name):
    """A finite float >= 0 (gamma, beta, a loss weight), or ValueError naming the argument."""
    if isinstance(value, bool):
        raise ValueError(f"`{name}` must be a non-negative number, got {name}={value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a non-negative number, got {name}={value!r}.") from None
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {name}={number}.")
    return number


def check_probability(value, name):
    """A float in [0, 1], or ValueError naming the argument."""
    if isinstance(value, bool):
        raise ValueError(f"`{name}` must be a number in [0, 1], got {name}={value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number in [0, 1], got {name}={value!r}.") from None
    if not 0.0 <= number <= 1.0:  # NaN fails too
        raise ValueError(f"`{name}` must be in [0, 1], got {name}={number}.")
    return number


def _is_sequence(value):
    if isinstance(value, (str, bytes)):
        return False
    if isinstance(value, np.ndarray):
        return value.ndim >= 1
    return hasattr(value, "__len__") and hasattr(value, "__iter__")


def check_class_weights(weights, name="alpha", num_classes=None):
    """A sequence of finite floats >= 0, one per class, as a list; ValueError naming the argument.

    With `num_classes`, a sequence of another length is a ValueError naming both lengths.
    """
    array = np.asarray(weights, dtype=object)
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be a flat sequence of per-class weights, got shape {array.shape}.")
    if len(array) == 0:
        raise ValueError(f"`{name}` must hold one weight per class, got an empty sequence.")
    values = [check_non_negative(w, f"{name}[{i}]") for i, w in enumerate(array.tolist())]
    if num_classes is not None and len(values) != int(num_classes):
        raise ValueError(
            f"`{name}` has {len(values)} per-class weights but there are {int(num_classes)} classes "
            f"(the last axis of y_pred)."
        )
    return values


def check_alpha(alpha, name="alpha", num_classes=None):
    """`alpha` as None, a float in [0, 1], or (a sequence) a list of per-class floats >= 0.

    A scalar is the positive-class weight of the focal loss and must lie in [0, 1]. A per-class vector's entries
    are each in [0, 1] for the sigmoid losses' `a_t = alpha_c y + (1 - alpha_c)(1 - y)`; entries above 1 are
    accepted too, since the softmax losses (and `from_counts`, whose weights sum to C) use them as plain factors.
    """
    if alpha is None:
        return None
    if _is_sequence(alpha):
        return check_class_weights(alpha, name, num_classes)
    if isinstance(alpha, bool):
        raise ValueError(f"`{name}` must be a number in [0, 1], a sequence of per-class weights or None, "
                         f"got {name}={alpha!r}.")
    try:
        float(alpha)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a number in [0, 1], a sequence of per-class weights or None, got {name}={alpha!r}."
        ) from None
    return check_probability(alpha, name)


def check_label_smoothing(value, name="label_smoothing"):
    return check_probability(value, name)


def check_ignore_class(value, name="ignore_class"):
    """None or an integer label value (e.g. 255 or -1)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (numbers.Number, np.number)):
        raise ValueError(f"`{name}` must be an integer or None, got {name}={value!r}.")
    if not float(value).is_integer():
        raise ValueError(f"`{name}` must be an integer or None, got {name}={value!r}.")
    return int(value)


def check_bool(value, name):
    """A Python bool (from_logits); numbers 0 / 1 and NumPy bools are accepted."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"`{name}` must be True or False, got {name}={value!r}.")


# The rule for a hyper-parameter, by argument name (or by the last word of a longer name; see the module doc).
ARGUMENT_CHECKS = {
    "alpha": check_alpha,
    "gamma": check_non_negative,
    "beta": check_non_negative,
    "weight": check_non_negative,
    "label_smoothing": check_label_smoothing,
    "smoothing": check_label_smoothing,
    "from_logits": check_bool,
    "ignore_class": check_ignore_class,
}


def register_check(name):
    """Decorator: `check(value, name)` becomes the rule for arguments called `name` (or ending in `_<name>`)."""

    def decorator(check):
        ARGUMENT_CHECKS[name] = check
        return check

    return decorator


def _rule_for(name):
    """The rule of the longest registered suffix of `name` (whole underscore-separated words), or None."""
    words = name.split("_")
    for start in range(len(words)):
        rule = ARGUMENT_CHECKS.get("_".join(words[start:]))
        if rule is not None:
            return rule
    return None


def check_argument(name, value):
    """`value` checked and converted by the rule for `name`; returned as given when no rule matches."""
    rule = _rule_for(name)
    return value if rule is None else rule(value, name)


def check_arguments(**arguments):
    """The arguments, each checked and converted by its rule (a dict in the same order)."""
    return {name: check_argument(name, value) for name, value in arguments.items()}
