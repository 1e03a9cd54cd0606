"""Box-aware augmentation for tf.data: horizontal flip and scale jitter with a random crop / pad, as one resampling.

Every transform drawn here is an affine map of normalized image coordinates, and so is the stretch of the decoded
image to the training size: their composition is one stretch of the decoded image to the content size, a flip, and
a crop / pad to the training size (one `tf.image.resize`, one reverse, one slice and one constant pad: cheaper than
two resamplings, or one `tf.image.crop_and_resize`, measured). The boxes go through the same map. The
distribution of transforms is that of Keras' `RandomFlip("horizontal")`, `RandomZoom` (one zoom factor for both
axes) and `RandomTranslation` applied in turn:
- flip with probability 1/2;
- zoom factor z uniform in [1 / max_scale, 1 / min_scale]: the output shows a region z times the image's size
  around its centre (z > 1 zooms out and pads, z < 1 zooms in and crops); content scale 1 / z;
- shift uniform in [-translate, translate] of the output's height and width, independently.

A source point s (normalized, per axis; mirrored in x, s -> 1 - s, when flipped) goes to the output point
u = (s - 1/2) / z + 1/2 + shift. The content size (output size / z) and its corner are rounded to whole output
pixels, so the boxes follow the pixels exactly. `filter_boxes` then clips the boxes and drops those under
`min_size_px` pixels on a side (boxes that left the image).

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
        out_size = tf.cast(tf.stack([out_h, out_w]), tf.float32)

        # The content (the whole source image) is stretched to (ch, cw) = output size / zoom and placed with
        # its top-left corner at (top, left) of the output, both in whole pixels; that is the scale and shift
        # of the draw rounded to the output's pixel grid.
        content = tf.maximum(tf.round(out_size / zoom), 1.0)  # (ch, cw)
        corner = tf.round((0.5 + shift) * out_size - content / 2.0)  # (top, left), may be negative
        content_i, corner_i = tf.cast(content, tf.int32), tf.cast(corner, tf.int32)
        image = tf.image.resize(tf.cast(image, tf.float32), content_i, method="bilinear")
        image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
        # Crop what falls outside the output, pad what the content does not cover.
        start = tf.maximum(-corner_i, 0)
        end = tf.minimum(content_i, tf.stack([out_h, out_w]) - corner_i)
        image = image[start[0]:tf.maximum(end[0], start[0]), start[1]:tf.maximum(end[1], start[1])]
        before = tf.maximum(corner_i, 0)
        after = tf.stack([out_h, out_w]) - before - tf.shape(image)[:2]
        image = tf.pad(image, [[before[0], after[0]], [before[1], after[1]], [0, 0]],
                       constant_values=self.fill_value)
        image = tf.clip_by_value(image, 0.0, 255.0)
        if isinstance(out_h, int) and isinstance(out_w, int):
            image = tf.ensure_shape(image, [out_h, out_w, 3])

        # The boxes: mirror x, then u = (s * content + corner) / output size on each axis.
        ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
        xmin, xmax = tf.where(flip, 1.0 - xmax, xmin), tf.where(flip, 1.0 - xmin, xmax)
        scale = tf.tile(content / out_size, [2])[None]
        offset = tf.tile(corner / out_size, [2])[None]
        moved = tf.stack([ymin, xmin, ymax, xmax], axis=1) * scale + offset
        return (image,) + filter_boxes(moved, classes, out_h, out_w, self.min_size_px, extra)


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
