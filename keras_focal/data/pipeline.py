"""The training / evaluation input pipeline: resize, augment, [mosaic / mixup,] encode, pad and batch."""

from __future__ import annotations

import tensorflow as tf

from keras_focal import letterbox as letterboxing
from keras_focal.data.augment import Augmenter, filter_boxes

PAD_VALUE = -1


def resize_image(image, image_size):
    """Plain stretch to `image_size` (H, W), bilinear, float32 in 0..255 (normalized boxes stay valid).

    The exported model resizes the same way, so training and serving see the same pixels.
    """
    image = tf.cast(image, tf.float32)
    image = tf.image.resize(image, image_size, method="bilinear")
    return tf.clip_by_value(image, 0.0, 255.0)


def fit_to_frame(image, boxes, image_size, letterbox=False):
    """`resize_image`, or with `letterbox=True` the aspect-preserving resize + pad of `keras_focal.letterbox`, with
    the normalized boxes moved into the frame."""
    if not letterbox:
        return resize_image(image, image_size), boxes
    frame, content = letterboxing.letterbox(image, image_size)
    return frame, letterboxing.boxes_to_frame(boxes, content)


def pad_targets(boxes, classes, max_boxes, extra=None):
    """Cuts to `max_boxes` and pads with -1: boxes [max_boxes, 4], classes [max_boxes]."""
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])[:max_boxes]
    classes = tf.cast(classes, tf.int32)[:max_boxes]
    n = tf.shape(classes)[0]
    pad = max_boxes - n
    out = {
        "boxes": tf.ensure_shape(tf.pad(boxes, [[0, pad], [0, 0]], constant_values=PAD_VALUE), [max_boxes, 4]),
        "classes": tf.ensure_shape(tf.pad(classes, [[0, pad]], constant_values=PAD_VALUE), [max_boxes]),
    }
    for k, v in (extra or {}).items():
        v = tf.cast(v[:max_boxes], tf.int32)
        out[k] = tf.ensure_shape(tf.pad(v, [[0, pad]], constant_values=0), [max_boxes])
    return out


def make_dataset(ds, image_size=(128, 128), batch_size=8, encoder=None, augment=False, shuffle=False,
                 max_boxes=100, drop_remainder=False, repeat=False, min_box_size=2.0, deterministic=False,
                 seed=None, augmenter=None, cache=False, prefetch=True, letterbox=False, mosaic=None):
    """Batches a `load()` dataset for `fit` / evaluation.

    ds: unbatched `(image uint8 [H, W, 3], {"boxes" [M, 4], "classes" [M]})` examples (from `load`).
    image_size: (H, W) every image is stretched to.
    letterbox: instead of stretching, scale each image keeping its aspect ratio and pad it to image_size
        (`keras_focal.letterbox`); the boxes are moved into the frame.
    batch_size: examples per batch (the global batch size under tf.distribute).
    encoder: None, or a callable `encoder(boxes [M, 4], classes [M], H, W) -> dict` (e.g. an
        `keras_focal.layers.AnchorEncoder`, returning "class_targets", "box_targets", "matched_boxes",
        "matched_indices"); called per example, unbatched, inside the map, on the padded ground truth (padding
        has class -1; the encoder skips it); its outputs are merged into the targets. Per example is faster than
        one batched call after `batch()` on a CPU (docs/input_pipeline.md).
    augment: True for the default `Augmenter()` (flip + scale jitter 0.8-1.25 with random crop/pad), or False.
        The stretch to image_size and the augmentation are then one resize of the decoded image.
    augmenter: a custom `Augmenter` (implies augment).
    shuffle: False, True (buffer of 512 examples) or an int buffer size. Shuffles the raw examples.
    max_boxes: ground truth is cut / padded with -1 to this many boxes.
    drop_remainder: drop the last partial batch (needed for a fixed batch shape, e.g. on TPU).
    repeat: repeat forever (before batching).
    min_box_size: boxes under this many pixels high or wide (at image_size, after augmentation) are dropped.
    deterministic: reproducible order and augmentation (ordered maps, seeded shuffle and per-example seeds).
    seed: seed of shuffling and augmentation.
    cache: cache the raw examples in memory (fine for the built-in dataset, not for COCO).
    mosaic: a `keras_focal.data.MosaicMixup`, or None. After the per-example resize and augmentation, groups of
        `mosaic.group_size` examples are combined (mosaic, then mixup, each example with its own stateless seed)
        and split again before encoding; its rates are read as the pipeline runs (`mosaic.set_rates`).

    Returns batches `(images float32 [B, H, W, 3] in 0..255, targets)` with targets `{"boxes" [B, max_boxes, 4],
    "classes" [B, max_boxes]}` padded with -1 (plus the encoder's outputs, plus "is_crowd" when the examples
    carry it; crowd boxes never reach the encoder).
    """
    image_size = (int(image_size[0]), int(image_size[1]))
    height, width = image_size
    if deterministic and seed is None:
        seed = 0
    if augmenter is None and augment:
        augmenter = Augmenter(seed=seed)
    autotune = tf.data.AUTOTUNE
    options = tf.data.Options()
    options.deterministic = True if deterministic else not bool(shuffle or augmenter)
    ds = ds.with_options(options)

    if cache:
        ds = ds.cache()
    if shuffle:
        buffer = 512 if shuffle is True else int(shuffle)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def prepare(image, targets):
        image, boxes = fit_to_frame(image, targets["boxes"], image_size, letterbox)
        extra = {k: tf.cast(v, tf.int32) for k, v in targets.items() if k not in ("boxes", "classes")}
        boxes, classes, extra = filter_boxes(boxes, targets["classes"], height, width, min_box_size, extra)
        return image, boxes, classes, extra

    def prepare_augmented(example, seed):
        # Without letterbox, the stretch to image_size and the augmentation are one resampling of the image.
        image, targets = example
        boxes = targets["boxes"]
        if letterbox:  # the aspect-preserving frame first; the augmentation then resamples it at image_size
            image, boxes = fit_to_frame(image, boxes, image_size, letterbox=True)
        extra = {k: tf.cast(v, tf.int32) for k, v in targets.items() if k not in ("boxes", "classes")}
        boxes, classes, extra = filter_boxes(boxes, targets["classes"], height, width, min_box_size, extra)
        return augmenter.resize_and_augment(image, boxes, classes, extra, output_size=image_size,
                                            seed=tf.stack([seed, 0]))

    def finish(image, boxes, classes, extra):
        image = tf.ensure_shape(image, [height, width, 3])
        out = pad_targets(boxes, classes, max_boxes, extra)
        if encoder is not None:
            enc_classes = out["classes"]
            if "is_crowd" in out:  # crowd regions are never training targets
                enc_classes = tf.where(out["is_crowd"] > 0, PAD_VALUE, enc_classes)
            encoded = encoder(out["boxes"], enc_classes, height, width)
            for k, v in encoded.items():
                out[k] = v
        return image, out

    if augmenter is None and mosaic is None:
        ds = ds.map(prepare, num_parallel_calls=autotune)
    else:
        # One stateless seed per example: the same draws whatever the parallelism.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        prepare_one = prepare_augmented if augmenter is not None else lambda example, _: prepare(*example)
        ds = tf.data.Dataset.zip((ds, seeds))
        if mosaic is None:
            ds = ds.map(prepare_one, num_parallel_calls=autotune)
        else:  # the seed goes on to the mosaic draws
            ds = ds.map(lambda example, s: (prepare_one(example, s), s), num_parallel_calls=autotune)
            ds = _mix_groups(ds, mosaic, image_size, max_boxes)
    ds = ds.map(finish, num_parallel_calls=autotune)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=autotune)
    if prefetch:
        ds = ds.prefetch(autotune)
    return ds


def _mix_groups(ds, mosaic, image_size, max_boxes):
    """((image, boxes, classes, extra), seed) examples -> the same after `mosaic.combine` over groups: padded to
    `max_boxes`, batched by `mosaic.group_size`, combined, split again; the real boxes come first, cut to
    `max_boxes` by `finish`."""
    autotune = tf.data.AUTOTUNE
    height, width = image_size

    def pad(example, seed):
        image, boxes, classes, extra = example
        out = pad_targets(boxes, classes, max_boxes, extra)
        draws = mosaic.draw(tf.stack([seed, 1]))  # the augmentation draws from [seed, 0]
        return tf.ensure_shape(image, [height, width, 3]), out, draws

    def combine(images, targets, draws):
        extra = {k: v for k, v in targets.items() if k not in ("boxes", "classes")}
        return mosaic.combine(images, targets["boxes"], targets["classes"], extra, draws)

    ds = ds.map(pad, num_parallel_calls=autotune)
    ds = ds.batch(mosaic.group_size, num_parallel_calls=autotune)
    return ds.map(combine, num_parallel_calls=autotune).unbatch()
