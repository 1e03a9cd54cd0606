"""Box-aware augmentation for tf.data, built on Keras core's bounding-box-aware preprocessing layers.

`keras.layers.RandomFlip`, `RandomZoom` and `RandomTranslation` take `{"images", "bounding_boxes": {"boxes",
"labels"}}` dicts with `bounding_box_format="rel_yxyx"` (our normalized yxyx) and run inside a tf.data map on the
TensorFlow backend (checked with Keras 3.15). What they do not do, and this module adds:
- they keep boxes that were clipped to zero (or near-zero) size, and turn labels into floats: `filter_boxes` drops
  boxes smaller than `min_size_px` pixels on a side after clipping and gives int32 classes back;
- `RandomZoom` zooms about the image centre, so a `RandomTranslation` follows it: together they are a scale jitter
  with a random crop (zoom in) or pad (zoom out, constant fill).

The layers draw their randomness from Keras `SeedGenerator` state, which is advanced by the map function: with
several parallel calls the draw order is not fixed. `make_dataset(..., deterministic=True)` therefore runs the
augmentation map sequentially (and seeds the layers), which makes a pipeline reproducible run to run.
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

    scale_range: (min, max) scale of the image content, e.g. (0.8, 1.25); 1 / zoom in Keras' terms.
    translate: maximum shift as a fraction of the image size (the random crop/pad position).
    Call on one example: `images` float32 [H, W, 3], `boxes` [M, 4] rel_yxyx, `classes` [M].
    """

    def __init__(self, flip=True, scale_range=(0.8, 1.25), translate=0.1, fill_value=0.0, min_size_px=2.0,
                 seed=None):
        self.flip = flip
        self.scale_range = scale_range
        self.translate = translate
        self.min_size_px = min_size_px
        seeds = [None, None, None] if seed is None else [seed, seed + 1, seed + 2]
        self.layers = []
        if flip:
            self.layers.append(keras.layers.RandomFlip("horizontal", bounding_box_format=FORMAT, seed=seeds[0],
                                                       dtype="float32"))
        if scale_range is not None and tuple(scale_range) != (1.0, 1.0):
            lo, hi = scale_range
            # Keras zoom factor z: output shows the input zoomed out by (1 + z); content scale = 1 / (1 + z).
            self.layers.append(keras.layers.RandomZoom(
                height_factor=(1.0 / hi - 1.0, 1.0 / lo - 1.0), width_factor=None, fill_mode="constant",
                fill_value=fill_value, bounding_box_format=FORMAT, seed=seeds[1], dtype="float32"))
        if translate:
            self.layers.append(keras.layers.RandomTranslation(
                height_factor=translate, width_factor=translate, fill_mode="constant", fill_value=fill_value,
                bounding_box_format=FORMAT, seed=seeds[2], dtype="float32"))

    def __call__(self, images, boxes, classes, extra=None):
        images = tf.cast(images, tf.float32)
        boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
        labels = tf.cast(classes, tf.float32)
        data = {"images": images, "bounding_boxes": {"boxes": boxes, "labels": labels}}
        for layer in self.layers:
            data = layer(data)
        out_images = tf.clip_by_value(data["images"], 0.0, 255.0)
        out_images = tf.ensure_shape(out_images, images.shape)
        shape = tf.shape(out_images)
        return (out_images,) + filter_boxes(data["bounding_boxes"]["boxes"], data["bounding_boxes"]["labels"],
                                            shape[0], shape[1], self.min_size_px, extra)


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
