"""Multi-level anchor boxes for RetinaNet (and the single anchor per location of GFL/ATSS)."""

import math

import keras
import numpy as np
from keras import ops


ANCHOR_ORDERS = ("scale_major", "ratio_major")


def _is_static(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _ceil_div(x, stride):
    """``ceil(x / stride)``: a python int for a python int, an int32 tensor otherwise."""
    if _is_static(x):
        return -(-int(x) // stride)
    x = ops.cast(x, "int32")
    return (x + (stride - 1)) // stride


@keras.saving.register_keras_serializable(package="keras_focal")
class AnchorGenerator(keras.layers.Layer):
    """Anchor boxes for FPN levels ``min_level..max_level``, normalized ``[ymin, xmin, ymax, xmax]``.

    Defaults are the Focal Loss paper's (Lin et al. 2017, §4 "Anchors"): levels P3-P7 with
    strides ``2**l`` = 8..128, base size ``anchor_size * stride`` = 32..512 pixels, scales
    ``2**(i / num_scales)`` for ``i = 0..num_scales-1`` (1, 2^(1/3), 2^(2/3)) and aspect ratios 0.5, 1, 2:
    9 anchors per location. GFL / ATSS uses ``AnchorGenerator(anchor_size=8, num_scales=1,
    aspect_ratios=(1.0,))``: one square anchor of ``8 * stride`` per location.

    **Aspect ratio** is ``height / width`` (as torchvision's ``AnchorGenerator``): an anchor of base size
    ``s`` and ratio ``r`` is ``s * sqrt(r)`` high and ``s / sqrt(r)`` wide, so its area is ``s**2`` whatever
    ``r``. With the symmetric default set (0.5, 1, 2) this only changes the order within a location.

    **Centre offset.** Level ``l`` has a feature map of ``ceil(H / 2**l) x ceil(W / 2**l)`` cells (ResNet
    with 'same' padding). The anchor of cell ``(i, j)`` is centred at
    ``((i + center_offset) * stride, (j + center_offset) * stride)`` pixels. The default
    ``center_offset=0.5`` puts it at the centre of the cell, as TF Model Garden and keras-cv do; torchvision
    (and keras-hub's ports of its weights) use ``center_offset=0.0``, i.e. ``i * stride``. Set it to 0.0
    when you load weights trained that way. Anchors are not clipped to the image.

    **Order** (fixed by docs/ARCHITECTURE.md): level (P3 first), then row y, then column x, then anchor
    type, by default scale-major then aspect ratio (``index = scale_index * len(aspect_ratios) + ratio_index``);
    ``order="ratio_major"`` gives ``index = ratio_index * num_scales + scale_index``, torchvision's order.

    **torchvision's anchors** (``torchvision.models.detection.retinanet._default_anchorgen``) are
    ``AnchorGenerator(center_offset=0.0, integer_sizes=True, round_corners=True, order="ratio_major")``:
    its sizes are ``int(base * 2**(i / 3))`` (32, 40, 50 on P3), and its anchors, relative to their centre,
    have corners rounded to whole pixels (``base_anchors.round()``, half to even), computed in float32 as
    ``round(size / sqrt(r) / 2)`` for the half width and ``round(size * sqrt(r) / 2)`` for the half height.

    Call with the image size in pixels, python ints or scalar tensors (dynamic sizes work inside
    ``tf.function`` and ``tf.data``)::

        gen = AnchorGenerator()
        anchors = gen(512, 640)                    # float32 [A, 4]
        gen.level_sizes(512, 640)                  # [A_3, ..., A_7]
        gen.anchor_strides(512, 640)               # float32 [A], stride in pixels of each anchor
    """

    def __init__(
        self,
        min_level=3,
        max_level=7,
        anchor_size=4.0,
        num_scales=3,
        aspect_ratios=(0.5, 1.0, 2.0),
        center_offset=0.5,
        integer_sizes=False,
        round_corners=False,
        order="scale_major",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if max_level < min_level:
            raise ValueError(f"max_level ({max_level}) must be >= min_level ({min_level})")
        if num_scales < 1 or len(aspect_ratios) < 1:
            raise ValueError("num_scales and aspect_ratios must be non-empty")
        self.min_level = int(min_level)
        self.max_level = int(max_level)
        self.anchor_size = float(anchor_size)
        self.num_scales = int(num_scales)
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.center_offset = float(center_offset)
        if order not in ANCHOR_ORDERS:
            raise ValueError(f"order must be one of {ANCHOR_ORDERS}, got {order!r}")
        self.integer_sizes = bool(integer_sizes)
        self.round_corners = bool(round_corners)
        self.order = order
        self.built = True  # no weights

    @classmethod
    def resolve(cls, value):
        """An AnchorGenerator from None (the defaults), a serialized config (from get_config) or an instance."""
        if value is None:
            return cls()
        if isinstance(value, dict):
            return keras.saving.deserialize_keras_object(value)
        return value

    # ------------------------------------------------------------------ static facts
    @property
    def levels(self):
        return list(range(self.min_level, self.max_level + 1))

    @property
    def strides(self):
        return [2**level for level in self.levels]

    @property
    def num_levels(self):
        return self.max_level - self.min_level + 1

    @property
    def anchors_per_location(self):
        return self.num_scales * len(self.aspect_ratios)

    def anchor_shapes(self, level):
        """numpy float32 ``[anchors_per_location, 2]``: (height, width) in pixels of the anchors of ``level``."""
        base = self.anchor_size * 2**level
        sizes = [base * 2.0 ** (i / self.num_scales) for i in range(self.num_scales)]
        if self.integer_sizes:
            sizes = [float(int(size)) for size in sizes]
        pairs = [(size, ratio) for size in sizes for ratio in self.aspect_ratios]
        if self.order == "ratio_major":
            pairs = [(size, ratio) for ratio in self.aspect_ratios for size in sizes]
        if not self.round_corners:
            return np.asarray([(s * math.sqrt(r), s / math.sqrt(r)) for s, r in pairs], dtype="float32")
        # torchvision: h_ratio = sqrt(r), w_ratio = 1 / h_ratio, corners (+-w/2, +-h/2) rounded, all in float32.
        size = np.asarray([s for s, _ in pairs], dtype="float32")
        h_ratio = np.sqrt(np.asarray([r for _, r in pairs], dtype="float32"))
        w_ratio = np.float32(1.0) / h_ratio
        half_h = np.round(h_ratio * size / np.float32(2.0))
        half_w = np.round(w_ratio * size / np.float32(2.0))
        return np.stack([2.0 * half_h, 2.0 * half_w], axis=-1).astype("float32")

    # ------------------------------------------------------------------ sizes
    def feature_sizes(self, image_height, image_width):
        """``[(ceil(H / s), ceil(W / s)) for each level]`` (python ints or int32 tensors)."""
        return [(_ceil_div(image_height, s), _ceil_div(image_width, s)) for s in self.strides]

    def level_sizes(self, image_height, image_width):
        """Number of anchors of each level, ``ceil(H / 2**l) * ceil(W / 2**l) * anchors_per_location``.

        Python ints when both sizes are python ints, int32 scalar tensors otherwise.
        """
        k = self.anchors_per_location
        return [fh * fw * k for fh, fw in self.feature_sizes(image_height, image_width)]

    def num_anchors(self, image_height, image_width):
        sizes = self.level_sizes(image_height, image_width)
        total = sizes[0]
        for s in sizes[1:]:
            total = total + s
        return total

    def anchor_strides(self, image_height, image_width):
        """float32 ``[A]``: the stride (pixels) of the level each anchor belongs to."""
        parts = []
        for stride, n in zip(self.strides, self.level_sizes(image_height, image_width)):
            parts.append(ops.ones((n,), dtype="float32") * float(stride))
        return ops.concatenate(parts, axis=0)

    def anchor_levels(self, image_height, image_width):
        """int32 ``[A]``: the FPN level (``min_level..max_level``) of each anchor."""
        parts = []
        for level, n in zip(self.levels, self.level_sizes(image_height, image_width)):
            parts.append(ops.ones((n,), dtype="int32") * level)
        return ops.concatenate(parts, axis=0)

    # ------------------------------------------------------------------ anchors
    def level_anchors(self, level, image_height, image_width):
        """float32 ``[ceil(H/s) * ceil(W/s) * k, 4]`` normalized yxyx anchors of one level."""
        stride = 2**level
        fh = _ceil_div(image_height, stride)
        fw = _ceil_div(image_width, stride)
        h_img = ops.cast(image_height, "float32")
        w_img = ops.cast(image_width, "float32")
        shapes = self.anchor_shapes(level)
        half_h = ops.convert_to_tensor(shapes[:, 0] / 2.0)[None, None, :] / h_img  # [1, 1, k]
        half_w = ops.convert_to_tensor(shapes[:, 1] / 2.0)[None, None, :] / w_img
        ys = (ops.cast(ops.arange(fh), "float32") + self.center_offset) * float(stride) / h_img
        xs = (ops.cast(ops.arange(fw), "float32") + self.center_offset) * float(stride) / w_img
        cy = ys[:, None, None] + ops.zeros_like(xs)[None, :, None]  # [fh, fw, 1]
        cx = xs[None, :, None] + ops.zeros_like(ys)[:, None, None]  # [fh, fw, 1]
        boxes = ops.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=-1)
        return ops.reshape(boxes, (-1, 4))

    def call(self, image_height, image_width):
        return ops.concatenate(
            [self.level_anchors(level, image_height, image_width) for level in self.levels], axis=0
        )

    def __call__(self, image_height, image_width):
        # The inputs are sizes, not data: skip Keras' input conversion / autocasting / masking and
        # keep python ints static (so that level sizes stay python ints).
        return self.call(image_height, image_width)

    def split_levels(self, x, image_height, image_width, axis=0):
        """Splits ``x`` along its anchor ``axis`` into one tensor per level."""
        sizes = self.level_sizes(image_height, image_width)
        if len(sizes) == 1:
            return [x]
        if all(_is_static(s) for s in sizes):
            return ops.split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis)
        out, start = [], 0
        for n in sizes:
            out.append(_slice_axis(x, start, n, axis))
            start = start + n
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "min_level": self.min_level,
                "max_level": self.max_level,
                "anchor_size": self.anchor_size,
                "num_scales": self.num_scales,
                "aspect_ratios": list(self.aspect_ratios),
                "center_offset": self.center_offset,
                "integer_sizes": self.integer_sizes,
                "round_corners": self.round_corners,
                "order": self.order,
            }
        )
        return config


def _slice_axis(x, start, size, axis):
    rank = len(x.shape)
    axis = axis % rank
    begin = [0] * rank
    sizes = [-1] * rank
    begin[axis] = start
    sizes[axis] = size
    begin = ops.stack([ops.cast(b, "int32") for b in begin])
    sizes = ops.stack([ops.cast(s, "int32") for s in sizes])
    return ops.slice(x, begin, sizes)
