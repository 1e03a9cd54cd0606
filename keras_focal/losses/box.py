"""Box-regression losses: GIoU on normalized [ymin, xmin, ymax, xmax] boxes, and the RetinaNet smooth-L1.

Smooth-L1 or keras.losses.Huber? `Huber(delta=b)` equals `b * smooth_l1(beta=b)` element-wise, so Huber with
delta 0.11 gives the paper's loss scaled by 0.11 (the box-loss weight would have to be divided by 0.11 to
compensate), and it averages over the 4 coordinates where Detectron sums them. `SmoothL1Loss` is therefore
shipped as its own thin class on `smooth_l1_loss` with the paper's parameterisation (beta = 0.11, no rescaling),
summed over the last (coordinate) axis; beta = 0 gives the L1 loss.
"""

import keras
from keras import ops

from keras_focal.boxes import intersection_union_enclosure, safe_divide
from keras_focal.losses import _common as C


def giou_loss(y_true, y_pred):
    """Generalized-IoU loss (Rezatofighi et al. 2019), one value per box.

    Boxes are `[ymin, xmin, ymax, xmax]` (normalized) on the last axis of size 4:

    ```
    I = area(A ∩ B), U = area(A) + area(B) - I, C = area of the smallest box enclosing A and B
    loss = 1 - GIoU = 1 - (I / U - (C - U) / C)
    ```

    Degenerate boxes (zero area) are allowed: a ratio whose denominator is 0 is taken as 0, with finite
    gradients. Inverted boxes (ymax < ymin) count as empty for the areas.

    Example:

    >>> giou_loss([[0.1, 0.1, 0.5, 0.5]], [[0.2, 0.2, 0.6, 0.6]]).shape
    TensorShape([1])
    """
    y_true, y_pred = C.to_compute(y_true, y_pred)
    C.check_same_shape(y_true, y_pred, "giou_loss")
    if len(y_pred.shape) == 0 or y_pred.shape[-1] != 4:
        raise ValueError(
            f"giou_loss: boxes need a last axis of size 4 ([ymin, xmin, ymax, xmax]), got y_pred.shape="
            f"{tuple(y_pred.shape)}."
        )
    inter, union, enclose = intersection_union_enclosure(y_true, y_pred)
    giou = safe_divide(inter, union) - safe_divide(enclose - union, enclose)
    return 1.0 - giou


def smooth_l1_loss(y_true, y_pred, beta=0.11):
    """Element-wise smooth-L1 loss as in Detectron / the RetinaNet paper (beta = 0.11), unreduced.

    ```
    d = |y_pred - y_true|
    loss = 0.5 d^2 / beta   if d < beta
           d - 0.5 beta     otherwise          (beta = 0: the L1 loss)
    ```

    `keras.losses.Huber(delta=beta)` is `beta` times this; see the module docstring for why this is its own loss.

    Example:

    >>> smooth_l1_loss([[0.0, 0.0]], [[0.05, 1.0]]).shape
    TensorShape([1, 2])
    """
    beta = C.check_arguments(beta=beta)["beta"]
    y_true, y_pred = C.to_compute(y_true, y_pred)
    C.check_same_shape(y_true, y_pred, "smooth_l1_loss")
    d = ops.abs(y_pred - y_true)
    if beta == 0:
        return d
    quadratic = ops.minimum(d, beta)  # 0.5 q^2 / beta + (d - q) equals both branches, with one select
    return (0.5 / beta) * quadratic * quadratic + (d - quadratic)


@keras.saving.register_keras_serializable(package="keras_focal")
class GIoULoss(C.LossFunctionWrapper):
    """Generalized-IoU loss on normalized `[ymin, xmin, ymax, xmax]` boxes, one value per box.

    y_true and y_pred have shape `[..., 4]`; see `giou_loss`. The GFL head uses it with weight 2.0.

    Example:

    >>> loss = GIoULoss()
    >>> round(float(loss([[0.0, 0.0, 0.5, 0.5]], [[0.0, 0.0, 0.5, 0.5]])), 6)
    0.0
    """

    def __init__(self, reduction="sum_over_batch_size", name="giou_loss", dtype=None):
        super().__init__(giou_loss, name=name, reduction=reduction, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_focal")
class SmoothL1Loss(C.LossFunctionWrapper):
    """The RetinaNet / Detectron smooth-L1 loss, summed over the last (coordinate) axis: one value per box.

    A thin class on `smooth_l1_loss`, not a `keras.losses.Huber` wrapper: `Huber(delta=b) = b * smoothL1(beta=b)`
    would rescale the paper's loss by 0.11 and average, not sum, the four coordinates.

    Example:

    >>> loss = SmoothL1Loss(beta=0.11)
    >>> round(float(loss([[0.0, 0.0, 0.0, 0.0]], [[0.05, 1.0, 0.0, 0.0]])), 4)
    0.9564
    """

    def __init__(self, beta=0.11, reduction="sum_over_batch_size", name="smooth_l1_loss", dtype=None):
        super().__init__(smooth_l1_loss, last_axis="sum", match_unit_axis=True, name=name, reduction=reduction,
                         dtype=dtype, beta=beta)
