"""The training / evaluation input pipeline: resize, augment, [mosaic / mixup,] encode, pad and batch."""

from __future__ import annotations

import copy
import math

import tensorflow as tf

from keras_focal import letterbox as letterboxing
from keras_focal.data.augment import Augmenter, filter_boxes
from keras_focal.data.mosaic import as_pixels

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


MULTI_SCALE_STRIDE = 32  # multi-scale sizes are multiples of the coarsest stride of P3-P5 (ultralytics: max stride 32)


def multi_scale_sizes(multi_scale):
    """(min, max) pixels -> the square sizes a multi-scale batch is drawn from: the multiples of
    MULTI_SCALE_STRIDE in [min, max], e.g. (96, 160) -> [96, 128, 160]."""
    try:
        low, high = (float(v) for v in multi_scale)
    except (TypeError, ValueError):
        raise ValueError(f"multi_scale must be (min, max) pixels, got {multi_scale!r}.") from None
    stride = MULTI_SCALE_STRIDE
    sizes = list(range(stride * math.ceil(low / stride), int(high) + 1, stride))
    sizes = [s for s in sizes if s > 0]
    if not 0 < low <= high or not sizes:
        raise ValueError(f"multi_scale must be (min, max) pixels with 0 < min <= max and a multiple of {stride} "
                         f"between them, got {multi_scale!r}.")
    return sizes


def make_dataset(ds, image_size=(128, 128), batch_size=8, encoder=None, augment=False, shuffle=False,
                 max_boxes=100, drop_remainder=False, repeat=False, min_box_size=2.0, deterministic=False,
                 seed=None, augmenter=None, cache=False, prefetch=True, letterbox=False, mosaic=None,
                 multi_scale=None):
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
        and split again before encoding; its rates are read as the pipeline runs (`mosaic.set_rates`). The groups
        carry the pixels as uint8, so the images come out rounded to whole values.
    multi_scale: None, or (min, max) pixels: each batch is then resized to a random square size, a multiple of
        `MULTI_SCALE_STRIDE` in that range (`multi_scale_sizes`), drawn from a stream seeded by `seed`, as
        ultralytics resizes its batches (`--multi-scale`); the boxes are normalized and stay valid, and the
        encoder runs on the batch at its size. The batches' images are [B, None, None, 3].

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

    def prepare(image, targets, size=image_size):
        image, boxes = fit_to_frame(image, targets["boxes"], size, letterbox)
        extra = {k: tf.cast(v, tf.int32) for k, v in targets.items() if k not in ("boxes", "classes")}
        boxes, classes, extra = filter_boxes(boxes, targets["classes"], height, width, min_box_size, extra)
        return image, boxes, classes, extra

    def prepare_augmented(example, seed, size=image_size, augmenter=augmenter):
        # Without letterbox, the stretch to image_size and the augmentation are one resampling of the image.
        image, targets = example
        boxes = targets["boxes"]
        if letterbox:  # the aspect-preserving frame first; the augmentation then resamples it at the output size
            image, boxes = fit_to_frame(image, boxes, size, letterbox=True)
        extra = {k: tf.cast(v, tf.int32) for k, v in targets.items() if k not in ("boxes", "classes")}
        boxes, classes, extra = filter_boxes(boxes, targets["classes"], height, width, min_box_size, extra)
        return augmenter.resize_and_augment(image, boxes, classes, extra, output_size=size,
                                            seed=tf.stack([seed, 0]))

    sizes = None if multi_scale is None else multi_scale_sizes(multi_scale)

    def encode(out, out_height, out_width):
        """The encoder's outputs at an image size merged into the padded targets `out` (one example, or a batch)."""
        if encoder is None:
            return out
        out = dict(out)
        enc_classes = out["classes"]
        if "is_crowd" in out:  # crowd regions are never training targets
            enc_classes = tf.where(out["is_crowd"] > 0, PAD_VALUE, enc_classes)
        out.update(encoder(out["boxes"], enc_classes, out_height, out_width))
        return out

    def finish(image, boxes, classes, extra):
        image = tf.ensure_shape(tf.cast(image, tf.float32), [height, width, 3])
        out = pad_targets(boxes, classes, max_boxes, extra)
        return image, (out if sizes else encode(out, height, width))  # multi-scale: encoded per batch, at its size

    def rescale(batch, draw):
        """One batch at its drawn size: a bilinear resize of the images, the encoder at that size."""
        images, targets = batch

        def at(size):
            return lambda: (tf.image.resize(images, (size, size), method="bilinear"), encode(targets, size, size))

        return tf.switch_case(tf.cast(draw % len(sizes), tf.int32), [at(size) for size in sizes])

    if augmenter is None and mosaic is None:
        ds = ds.map(prepare, num_parallel_calls=autotune)
    else:
        # One stateless seed per example: the same draws whatever the parallelism.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        if mosaic is None:
            prepare_one = prepare_augmented if augmenter is not None else lambda example, _: prepare(*example)
            ds = tf.data.Dataset.zip((ds, seeds)).map(prepare_one, num_parallel_calls=autotune)
        else:  # the seed goes on to the mosaic draws
            def prepare_sized(example, seed, size):
                if augmenter is None:
                    return prepare(*example, size=size)
                if size == image_size:
                    return prepare_augmented(example, seed)
                # At the tile size the augmentation's box filter keeps boxes that are min_size_px at image_size.
                tile_augmenter = copy.copy(augmenter)
                tile_augmenter.min_size_px = augmenter.min_size_px * min(size[0] / height, size[1] / width)
                return prepare_augmented(example, seed, size, tile_augmenter)

            ds = _mix_groups(tf.data.Dataset.zip((ds, seeds)), mosaic, prepare_sized, image_size, max_boxes)
    ds = ds.map(finish, num_parallel_calls=autotune)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=autotune)
    if sizes:  # one draw per batch, from its own stream (the examples' seeds come from `seed` itself)
        draws = tf.data.Dataset.random(seed=None if seed is None else seed + 1, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, draws)).map(tf.autograph.experimental.do_not_convert(rescale),
                                                  num_parallel_calls=autotune)
    if prefetch:
        ds = ds.prefetch(autotune)
    return ds


def _mix_groups(ds, mosaic, prepare, image_size, max_boxes):
    """(example, seed) pairs -> (image, boxes, classes, extra) examples after `mosaic.combine_tiles` over groups.

    Each example draws its mosaic / mixup randomness from its seed and is prepared (resized and augmented by
    `prepare(example, seed, size)`) at the size it is used at: at image_size if it stays plain, at the tile size
    if the rate of mosaic is not 0 (it may be a tile of its group's mosaics); the other comes as an empty image.
    When the two sizes are equal, each example is prepared and carried once, as its image and its tile. The group is `padded_batch`ed (a group of mosaics carries its tiles only), combined and split again; the real
    boxes come first, cut to `max_boxes` by `finish`."""
    autotune = tf.data.AUTOTUNE
    tile_size = mosaic.tile_size(image_size)
    full_size = tuple(tile_size) == tuple(image_size)

    def prepare_both(example, seed):
        draws = mosaic.draw(tf.stack([seed, 1]))  # the augmentation draws from [seed, 0]
        is_mosaic, with_tile = mosaic.decide(draws)
        keys = [k for k in example[1] if k not in ("boxes", "classes")]

        def at(size):
            def run():
                image, boxes, classes, extra = prepare(example, seed, size)
                # Rounded to uint8 for the group's copies (padded_batch, combine, unbatch); `finish` casts back.
                image = as_pixels(tf.cast(image, tf.float32), tf.uint8)
                return tf.ensure_shape(image, [size[0], size[1], 3]), pad_targets(boxes, classes, max_boxes, extra)
            return run

        def empty(size):
            def run():
                none = {k: tf.zeros([0], tf.int32) for k in keys}
                return (tf.zeros([0, size[1], 3], tf.uint8),
                        pad_targets(tf.zeros([0, 4]), tf.zeros([0], tf.int32), max_boxes, none))
            return run

        if full_size:  # the prepared image is also the example's tile (`combine` passes it as both)
            image, targets = at(image_size)()
            tile, tile_targets = empty(tile_size)()
            with_tile = tf.constant(True)
        else:
            image, targets = tf.cond(is_mosaic, empty(image_size), at(image_size))
            tile, tile_targets = tf.cond(with_tile, at(tile_size), empty(tile_size))
        return image, targets, tile, tile_targets, draws, is_mosaic, with_tile

    def combine(images, targets, tiles, tile_targets, draws, is_mosaic, with_tile):
        def split(t):
            return t["boxes"], t["classes"], {k: v for k, v in t.items() if k not in ("boxes", "classes")}

        if full_size:
            tiles, tile_targets = images, targets
        return mosaic.combine_tiles(images, split(targets), tiles, split(tile_targets), draws, is_mosaic, with_tile,
                                    image_size)

    # Plain tensor code with explicit tf.cond: not converted by autograph (its conversion took most of the trace).
    plain = tf.autograph.experimental.do_not_convert
    ds = ds.map(plain(prepare_both), num_parallel_calls=autotune)
    ds = ds.padded_batch(mosaic.group_size)  # images of 0 rows stay 0 rows when the whole group has 0
    return ds.map(plain(combine), num_parallel_calls=autotune).unbatch()
