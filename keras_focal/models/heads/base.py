"""What every dense detection head shares: the towers it is built of, the interface the detector calls, the one
all-reduce of the loss normalizers, and the rule by which a user-supplied loss is evaluated.

A head is a plain serializable object (not a layer): called on the FPN levels it creates its Keras layers in the
detector's functional graph, so the layer names (`class_subnet_conv{i}`, `box_subnet_deltas`, ...) stay top-level
names of the detector, which saved weights and checkpoint converters rely on. It owns everything that differs
between RetinaNet and GFL: anchors, assigner, the box coding it predicts, the transform of its box outputs
before decoding, its loss with its normalizers, and its NMS IoU.
"""

import math

import keras
from keras import ops

from keras_focal.layers import AnchorEncoder, AnchorGenerator

# "all new conv layers except the final one in the RetinaNet subnets are initialized with bias b = 0 and a Gaussian
# weight fill with sigma = 0.01" (RetinaNet Sec. 4.1, Initialization).
HEAD_KERNEL_INIT = {"class_name": "RandomNormal", "config": {"mean": 0.0, "stddev": 0.01}}
# Prior probability of foreground at the start of training, pi = 0.01 (RetinaNet Sec. 3.3 and 4.1).
PRIOR_PROBABILITY = 0.01


def prior_bias(prior=PRIOR_PROBABILITY):
    """b = -log((1 - pi) / pi): every anchor starts with foreground confidence about pi (-log(99) for 0.01)."""
    return -math.log((1.0 - prior) / prior)


# ------------------------------------------------------------------------------------------------- towers
def conv3x3(filters, name, bias=0.0, use_bias=True):
    return keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=keras.initializers.get(HEAD_KERNEL_INIT),
        bias_initializer=keras.initializers.Constant(bias),
        name=name,
    )


def tower(width, num_convs, name, group_norm, conv_bias=True, epsilon=1e-3):
    """num_convs x (3x3 conv, [GroupNorm(32)], ReLU); the layers are created once and shared across levels.
    `conv_bias=False` drops the conv biases (a GroupNorm follows); `epsilon` is the GroupNorm's."""
    layers = []
    for i in range(num_convs):
        layers.append(conv3x3(width, f"{name}_conv{i}", use_bias=conv_bias))
        if group_norm:
            layers.append(keras.layers.GroupNormalization(groups=min(32, width), epsilon=epsilon,
                                                          name=f"{name}_gn{i}"))
        layers.append(keras.layers.ReLU(name=f"{name}_relu{i}"))
    return layers


def apply(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def flatten_levels(maps, channels, name):
    """[B, H_l, W_l, A*K] per level -> [B, sum_l H_l*W_l*A, K] in (level, y, x, anchor) order, float32."""
    flat = [keras.layers.Reshape((-1, channels), name=f"{name}_flat{i}")(m) for i, m in enumerate(maps)]
    joined = keras.layers.Concatenate(axis=1, name=f"{name}_concat")(flat)
    # Losses and NMS run in float32 under mixed precision (Micikevicius et al. 2018).
    return keras.layers.Activation("linear", dtype="float32", name=name)(joined)


# ------------------------------------------------------------------------------------- replica normalizers
def num_replicas():
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def global_sums(local):
    """{name: scalar} summed over all replicas and workers with ONE all-reduce (identity outside tf.distribute).

    The scalars are stacked in sorted-name order and reduced together. One collective per step, whose result every
    loss term (and so every gradient) depends on, cannot be issued in different orders by different replicas;
    two independent all-reduces can, and under `MirroredStrategy` with `model.fit` they were (the replicas then
    pair a scalar with a gradient in the collective and fail on the shape mismatch).
    """
    import tensorflow as tf

    names = sorted(local)
    packed = ops.stack([ops.cast(local[n], "float32") for n in names])
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        packed = context.all_reduce(tf.distribute.ReduceOp.SUM, packed)
    return {n: packed[i] for i, n in enumerate(names)}


def matched_ground_truth(targets):
    """float32 ``[B, A, 4]``: the ground-truth box assigned to each anchor, 0 where it is not positive. Read from
    the targets' "matched_boxes", or gathered from "boxes" ``[B, M, 4]`` at "matched_indices" ``[B, A]`` (what a
    head's own encoder returns: the boxes are already in the batch, so the pipeline does not carry an [A, 4] copy)."""
    if "matched_boxes" in targets:
        return ops.cast(targets["matched_boxes"], "float32")
    if "matched_indices" not in targets or "boxes" not in targets:
        raise ValueError("the anchor targets need 'matched_boxes', or 'matched_indices' with 'boxes' "
                         f"(the AnchorEncoder outputs); got keys {sorted(targets)}")
    index = ops.cast(targets["matched_indices"], "int32")
    boxes = ops.cast(targets["boxes"], "float32")
    b, m = ops.shape(boxes)[0], ops.shape(boxes)[1]
    # one gather from the flattened boxes plus a zero row, which the non-positive anchors (index -1) read
    flat = ops.concatenate([ops.reshape(boxes, (-1, 4)), ops.zeros((1, 4), "float32")], axis=0)
    rows = ops.where(index >= 0, index + (ops.arange(b, dtype="int32") * m)[:, None], b * m)
    return ops.take(flat, rows, axis=0)


# ------------------------------------------------------------------------------------------- user losses
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


# -------------------------------------------------------------------------------------------- interface
class DenseHead:
    """Base of the detection heads. A subclass sets the class attributes and implements `__call__` and `loss`.

    - `name`: what `RetinaNet(head=...)` and `model.head` call it;
    - `box_format`: what the box outputs encode for `DetectionDecoder` ("deltas" or "distances");
    - `fpn_extra_levels_from`: whether the FPN computes P6 from "c5" or "p5";
    - `nms_iou_threshold`: the decoding default;
    - `assigner`: the AnchorEncoder's assigner ("iou" or "atss").
    """

    name = None
    box_format = "deltas"
    fpn_extra_levels_from = "c5"
    nms_iou_threshold = 0.5
    assigner = "iou"

    def __init__(self, num_convs=4, anchor_generator=None):
        if int(num_convs) < 0:
            raise ValueError(f"num_convs must be >= 0, got {num_convs}")
        self.num_convs = int(num_convs)
        self.anchor_generator = (self.default_anchor_generator() if anchor_generator is None
                                 else AnchorGenerator.resolve(anchor_generator))

    def default_anchor_generator(self):
        raise NotImplementedError

    def anchor_encoder(self):
        """The AnchorEncoder giving this head's training targets (used in the tf.data pipeline or in-graph): the
        class targets and the matched indices; the loss gathers the matched boxes from the ground truth."""
        return AnchorEncoder(anchor_generator=self.anchor_generator, assigner=self.assigner,
                             outputs=("class_targets", "matched_indices"))

    def box_predictions(self, box_outputs):
        """The head's box outputs as `DetectionDecoder` reads them (`box_format`); the identity by default."""
        return box_outputs

    def __call__(self, features, num_classes):
        """features: the FPN levels [B, H_l, W_l, width]. Returns {"class_logits": [B, A, C], "box_outputs": ...}."""
        raise NotImplementedError

    def loss(self, targets, outputs, image_height, image_width, classification_loss=None, box_loss=None):
        """(class_loss, box_loss): this replica's share of the global-batch loss (local sums over global
        normalizers), so that the replicas' gradients sum to the one-device gradient."""
        raise NotImplementedError

    def get_config(self):
        return {"num_convs": self.num_convs,
                "anchor_generator": keras.saving.serialize_keras_object(self.anchor_generator)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
