"""Box-aware augmentation for tf.data: horizontal flip and scale jitter with a random crop / pad, as one resampling.

Every transform drawn here is an affine map of normalized image coordinates, and so is the stretch of the decoded
image to the training size: their composition is one sampling box of the source image, read by a single
`tf.image.crop_and_resize` (bilinear, constant fill outside the image). The boxes go through the same map. The
distribution of transforms is that of Keras' `RandomFlip("horizontal")`, `RandomZoom` (one zoom factor for both
axes) and `RandomTranslation` applied in turn:
- flip with probability 1/2;
- zoom factor z uniform in [1 / max_scale, 1 / min_scale]: the output shows a region z times the image's size
  around its centre (z > 1 zooms out and pads, z < 1 zooms in and crops); content scale 1 / z;
- shift uniform in [-translate, translate] of the output's height and width, independently.

An output point u (normalized, per axis) shows the source point s = 1/2 + (u - 1/2 - shift) * z, mirrored in x
(s -> 1 - s) when flipped; a box coordinate s goes to u = (s - 1/2) / z + 1/2 + shift. `filter_boxes` then clips
the boxes and drops those under `min_size_px` pixels on a side (boxes that left the image).

Randomness is stateless: each call takes a seed `[2]` (int32 / int64), so a pipeline that gives each example its
seed (`make_dataset` zips them from `tf.data.Dataset.random`) is reproducible with any number of parallel calls.
"""

from __future__ import annotations

import keras
import tensorflow as tf

FORMAT = "rel_yxyx"


def filter_boxes(boxes, classes, image_height, image_width, min_size_px=2.0, extra=None):
    """Clips boxes to [0, 1] and drops those under `min_size_px` pixels high or wide (boxes that left the image).

    Returns (boxes float32 [M', 4], classes int32 [M']) or, with `extra` (a dict of [M] tensors), also the
    filtered extra dict.
    """
    boxes = tf.clip_by_value(tf.cast(boxes, tf.float32), 0.0, 1.0)
    classes = tf.convert_to_tensor(classes)
    h = (boxes[:, 2] - boxes[:, 0]) * tf.cast(image_height, tf.float32)
    w = (boxes[:, 3] - boxes[:, 1]) * tf.cast(image_width, tf.float32)
    keep = (h >= min_size_px) & (w >= min_size_px)
    classes = tf.cast(tf.round(tf.cast(classes, tf.float32)), tf.int32) if classes.dtype.is_floating \
        else tf.cast(classes, tf.int32)
    keep &= classes >= 0
    out = (tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep))
    if extra is not None:
        out = out + ({k: tf.boolean_mask(v, keep) for k, v in extra.items()},)
    return out


def sampling_box(region, source_size, output_size):
    """`tf.image.crop_and_resize` box that samples the normalized `region` [y0, x0, y1, x1] of a source image of
    `source_size` (H, W) at the centres of an `output_size` (h, w) grid: output pixel i reads the region's point
    y0 + (i + 1/2) / h * (y1 - y0), i.e. source pixel coordinate that * H - 1/2 (pixel centres at k + 1/2, as
    `tf.image.resize`). crop_and_resize reads b0 * (H - 1) + i * (b1 - b0) * (H - 1) / (h - 1); solving at
    i = 0 and i = h - 1 gives b0, b1. A region with y1 < y0 (or x1 < x0) samples a mirrored image."""
    out = []
    for lo, hi, n_src, n_out in ((region[0], region[2], source_size[0], output_size[0]),
                                 (region[1], region[3], source_size[1], output_size[1])):
        n_src = tf.cast(n_src, tf.float32)
        n_out = tf.cast(n_out, tf.float32)
        first = (lo + 0.5 / n_out * (hi - lo)) * n_src - 0.5
        last = (lo + (n_out - 0.5) / n_out * (hi - lo)) * n_src - 0.5
        out.append((first / tf.maximum(n_src - 1.0, 1.0), last / tf.maximum(n_src - 1.0, 1.0)))
    (y0, y1), (x0, x1) = out
    return tf.stack([y0, x0, y1, x1])


class Augmenter:
    """Horizontal flip, then scale jitter (zoom in = crop, zoom out = pad) at a random position.

    scale_range: (min, max) scale of the image content, e.g. (0.8, 1.25), or None for no scale jitter.
    translate: maximum shift as a fraction of the image size (the random crop/pad position).
    fill_value: pixel value of the padded area.
    min_size_px: boxes under this many pixels high or wide after the transform are dropped.
    seed: seed of the draws of calls that are not given one.

    `aug(images, boxes, classes, extra=None, seed=None)` transforms one example in place of its size: `images`
    [H, W, 3], `boxes` [M, 4] rel_yxyx, `classes` [M]; returns (image float32 [H, W, 3], boxes, classes, extra).
    `aug.resize_and_augment(..., output_size)` also stretches the image to `output_size`, in the same resampling.
    """

    def __init__(self, flip=True, scale_range=(0.8, 1.25), translate=0.1, fill_value=0.0, min_size_px=2.0,
                 seed=None):
        self.flip = bool(flip)
        self.scale_range = None if scale_range is None else (float(scale_range[0]), float(scale_range[1]))
        self.translate = float(translate or 0.0)
        self.fill_value = float(fill_value)
        self.min_size_px = min_size_px
        self.seed = seed
        self._generator = None

    def _draw_seed(self):
        if self._generator is None:
            with tf.init_scope():  # the generator's state variable must be created eagerly
                self._generator = (tf.random.Generator.from_non_deterministic_state() if self.seed is None
                                   else tf.random.Generator.from_seed(self.seed))
        return self._generator.make_seeds(1)[:, 0]

    def draw(self, seed):
        """The transform of one example: (flip bool, zoom factor z, shift (dy, dx)) from a stateless seed [2]."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
        flip = tf.random.stateless_uniform([], seeds[0]) < 0.5 if self.flip else tf.constant(False)
        if self.scale_range is None:
            zoom = tf.constant(1.0)
        else:
            lo, hi = 1.0 / self.scale_range[1], 1.0 / self.scale_range[0]
            zoom = tf.random.stateless_uniform([], seeds[1], minval=lo, maxval=hi) if lo != hi else tf.constant(lo)
        shift = tf.random.stateless_uniform([2], seeds[2], -self.translate, self.translate) if self.translate \
            else tf.zeros([2])
        return flip, zoom, shift

    def __call__(self, images, boxes, classes, extra=None, seed=None):
        images = tf.convert_to_tensor(images)
        static = images.shape[:2]
        size = tuple(static.as_list()) if static.is_fully_defined() else tf.unstack(tf.shape(images)[:2])
        return self.resize_and_augment(images, boxes, classes, extra, output_size=size, seed=seed)

    def resize_and_augment(self, image, boxes, classes, extra=None, output_size=None, seed=None):
        """One example `image` [H, W, 3] (any dtype) with normalized `boxes` [M, 4] -> (image float32
        [*output_size, 3], boxes, classes, extra), through one drawn transform."""
        if seed is None:
            seed = self._draw_seed()
        flip, zoom, shift = self.draw(seed)
        boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
        out_h, out_w = output_size[0], output_size[1]

        # The region of the source shown by the output: s = 1/2 + (u - 1/2 - shift) * zoom at u = 0 and u = 1.
        lo = 0.5 + (-0.5 - shift) * zoom
        hi = 0.5 + (0.5 - shift) * zoom
        x0 = tf.where(flip, 1.0 - lo[1], lo[1])
        x1 = tf.where(flip, 1.0 - hi[1], hi[1])
        source_size = tf.shape(image)[:2]
        # One edge pixel of padding: output pixels less than half a pixel outside the image read its edge (as
        # tf.image.resize does) instead of the fill value. The box above is in the padded image's coordinates.
        scale = tf.cast(source_size, tf.float32) / tf.cast(source_size + 2, tf.float32)
        offset = 1.0 / tf.cast(source_size + 2, tf.float32)
        region = tf.stack([lo[0] * scale[0] + offset[0], x0 * scale[1] + offset[1],
                           hi[0] * scale[0] + offset[0], x1 * scale[1] + offset[1]])
        box = sampling_box(tf.unstack(region), source_size + 2, (out_h, out_w))
        padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
        out = tf.image.crop_and_resize(padded[None], box[None], [0], [out_h, out_w], method="bilinear",
                                       extrapolation_value=self.fill_value)[0]
        out = tf.clip_by_value(out, 0.0, 255.0)
        if isinstance(out_h, int) and isinstance(out_w, int):
            out = tf.ensure_shape(out, [out_h, out_w, 3])

        # The boxes: mirror x, then u = (s - 1/2) / zoom + 1/2 + shift.
        ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
        xmin, xmax = tf.where(flip, 1.0 - xmax, xmin), tf.where(flip, 1.0 - xmin, xmax)
        moved = (tf.stack([ymin, xmin, ymax, xmax], axis=1) - 0.5) / zoom + 0.5 + tf.tile(shift, [2])[None]
        return (out,) + filter_boxes(moved, classes, out_h, out_w, self.min_size_px, extra)


_FLIP = None


def flip_left_right(images, boxes):
    """Deterministic horizontal flip of one image [H, W, 3] and its rel_yxyx boxes [M, 4] (always flips).

    Uses the same Keras RandomFlip transformation code as the augmentation, with the flip forced.
    """
    global _FLIP
    if _FLIP is None:
        _FLIP = keras.layers.RandomFlip("horizontal", bounding_box_format=FORMAT, dtype="float32")
    images = tf.cast(images, tf.float32)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    transformation = {"flips": tf.ones([1, 1, 1], tf.bool), "input_shape": tf.shape(images)}
    out_images = _FLIP.transform_single_image(images, transformation)
    out_boxes = _FLIP.transform_single_bounding_box(
        {"boxes": boxes, "labels": tf.zeros([tf.shape(boxes)[0]])}, transformation)
    return out_images, out_boxes["boxes"]
