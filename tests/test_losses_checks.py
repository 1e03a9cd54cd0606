"""keras_focal.losses.checks: the public argument checks (any argument name, errors naming the argument)."""

import numpy as np
import pytest

from keras_focal.losses import checks


def test_rules_by_exact_name_by_last_word_and_unknown_names():
    out = checks.check_arguments(alpha=0.25, gamma=2, qfl_beta=2, giou_weight=np.float32(2.0), dfl_weight=0.25,
                                 focal_alpha=[1, 2, 3], from_logits=np.True_, ignore_class=255.0, reg_max=16)
    assert out == {"alpha": 0.25, "gamma": 2.0, "qfl_beta": 2.0, "giou_weight": 2.0, "dfl_weight": 0.25,
                   "focal_alpha": [1.0, 2.0, 3.0], "from_logits": True, "ignore_class": 255, "reg_max": 16}
    assert [type(v) for v in out.values()][:5] == [float] * 5
    assert checks.check_non_negative(3, "smooth_l1_beta") == 3.0
    assert checks.check_alpha(None) is None and checks.check_alpha(np.array([0.5, 2.0])) == [0.5, 2.0]


@pytest.mark.parametrize("arguments, message", [
    (dict(alpha=1.5), "`alpha` must be in [0, 1]"),
    (dict(alpha="x"), "`alpha` must be a number"),
    (dict(alpha=[0.5, -1.0]), "`alpha[1]`"),
    (dict(alpha=[[0.5]]), "flat sequence"),
    (dict(qfl_beta=-1), "`qfl_beta` must be a finite number >= 0"),
    (dict(giou_weight=float("nan")), "`giou_weight`"),
    (dict(gamma=True), "`gamma`"),
    (dict(from_logits="yes"), "`from_logits` must be True or False"),
    (dict(ignore_class=2.5), "`ignore_class` must be an integer"),
    (dict(label_smoothing=2.0), "`label_smoothing` must be in [0, 1]"),
])
def test_bad_values_name_the_argument(arguments, message):
    with pytest.raises(ValueError) as info:
        checks.check_arguments(**arguments)
    assert message in str(info.value)


def test_vector_length_names_both_lengths_and_register_check():
    with pytest.raises(ValueError, match="2 per-class weights but there are 3 classes"):
        checks.check_alpha([0.1, 0.2], num_classes=3)

    @checks.register_check("reg_max")
    def _positive_int(value, name):
        if int(value) != value or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        return int(value)

    try:
        assert checks.check_arguments(reg_max=16.0) == {"reg_max": 16}
        with pytest.raises(ValueError, match="`gfl_reg_max` must be a positive integer"):
            checks.check_argument("gfl_reg_max", 0)
    finally:
        del checks.ARGUMENT_CHECKS["reg_max"]
