"""Mosaic and MixUp for tf.data: four training images tiled into one, and two images blended, with their boxes.

Both work on a group of G examples padded to M boxes and draw their partners from the same group, so each decoded
image is used about once per tile and the pipeline decodes no more images than without them (YOLOv4 and ultralytics
read three more images per mosaic). In `make_dataset` each example is resized (and augmented) at the size it is used
at: the tile size (th, tw) when the rate of mosaic is not 0, the training size H x W when it stays plain
(`combine_tiles`); `combine` takes the group at H x W and area-resizes it to the tile size.

- **Mosaic** (YOLOv4, Bochkovskiy et al. 2020, section 3.3; ultralytics `data/augment.py` `Mosaic`). A centre (yc, xc)
  is drawn uniformly in `centre_range` of the output's height and width and rounded to whole pixels; it splits the
  output into four quadrants. Tile k (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) is an image of the group
  stretched to (th, tw) = round(tile_scale * (H, W)) pixels, placed with its inner corner on the centre: its top-left
  pixel lands at (oy, ox) with oy = yc - th for the top tiles, yc for the bottom ones (ox the same with xc and tw),
  and it shows only inside its quadrant (the rest is `fill_value`). Tile 0 is the example's own image, tiles 1-3 other
  examples of the group, each drawn independently (repeats possible, as ultralytics' draws). A normalized box
  coordinate s of tile k goes to u = (s * th + oy) / H (x: (s * tw + ox) / W), then the box is clipped to the part of
  its quadrant the tile covers and dropped if under `min_size_px` on a side or if under `min_visible` of its area is
  left (ultralytics `box_candidates`: area_thr 0.1).
- **MixUp** (Zhang et al. 2018; YOLOX / ultralytics `MixUp`: two mosaics blended). The output of example i becomes
  `r * x_i + (1 - r) * x_j`, with j another example of the group and r ~ Beta(32, 32) (ultralytics'), and the boxes
  of both, unweighted.

The pixels of a mosaic are four rectangular crops of its tiles (`_mosaic_pixels`), the boxes of all mosaics one op
over the four tiles; only the examples that are mosaics (or mixed) are computed.

Each example is a mosaic with probability `mosaic` and then mixed with probability `mixup`. Both rates are
`tf.Variable`s (the mosaic rate read when an example is prepared, `decide`, the mixup rate when its group is
combined), so `set_rates` (or `keras_focal.training.CloseMosaic`, at an epoch) switches them off for the last part of
training; the examples already prepared and the batches already prefetched keep the old rates.

Randomness is stateless per example: `draw(seed)` turns an example's seed into its draws (centre, partners, both
coin flips, r) in the per-example map, and `combine` only reads them, so the same seeds give the same batch with any
parallelism.
"""

from __future__ import annotations

import tensorflow as tf

MIXUP_BETA = 32.0  # ultralytics data/augment.py MixUp: r = np.random.beta(32.0, 32.0)

# Columns of the per-example draws.
_MOSAIC_COIN, _MIXUP_COIN, _CENTRE_Y, _CENTRE_X, _PARTNER_1, _PARTNER_2, _PARTNER_3, _MIX_PARTNER, _MIX_RATIO = range(9)
NUM_DRAWS = 9


class MosaicMixup:
    """Mosaic and MixUp over groups of examples (see the module docstring).

    mosaic: probability that an example becomes a mosaic (ultralytics default 1.0).
    mixup: probability that an output is blended with another output of its group (ultralytics default 0.0,
        YOLOX 1.0 on its large models).
    group_size: examples combined together; partners are drawn from the group.
    centre_range: (lo, hi) fractions of the output's height / width where the mosaic centre is drawn.
    tile_scale: each tile is the source image stretched to this fraction of the output size. 1.0 (ultralytics',
        YOLOX's: four images on a canvas twice the output side, cropped back around the centre): objects keep their
        scale and each image shows the part next to the centre; 0.5: four whole images fill the output when the
        centre is in the middle, every object at half its size (10.6 AP lower on the built-in dataset).
    min_size_px: boxes under this many pixels high or wide after clipping are dropped.
    min_visible: boxes that keep less than this fraction of their area after clipping are dropped.
    fill_value: pixel value outside every tile.

    The rates are `tf.Variable`s: create the object outside any `tf.distribute` strategy scope.
    """

    def __init__(self, mosaic=1.0, mixup=0.0, group_size=16, centre_range=(0.25, 0.75), tile_scale=1.0,
                 min_size_px=2.0, min_visible=0.1, fill_value=114.0):
        for name, value in (("mosaic", mosaic), ("mixup", mixup)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {value}.")
        if int(group_size) < 2:
            raise ValueError(f"group_size must be at least 2 (partners come from the group), got {group_size}.")
        lo, hi = float(centre_range[0]), float(centre_range[1])
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"centre_range must satisfy 0 <= lo <= hi <= 1, got {centre_range}.")
        if not 0.0 < float(tile_scale) <= 1.0:
            raise ValueError(f"tile_scale must be in (0, 1], got {tile_scale}.")
        with tf.init_scope():
            self.mosaic_rate = tf.Variable(float(mosaic), trainable=False, dtype=tf.float32, name="mosaic_rate")
            self.mixup_rate = tf.Variable(float(mixup), trainable=False, dtype=tf.float32, name="mixup_rate")
        self.initial_rates = (float(mosaic), float(mixup))
        self.group_size = int(group_size)
        self.centre_range = (lo, hi)
        self.tile_scale = float(tile_scale)
        self.min_size_px = float(min_size_px)
        self.min_visible = float(min_visible)
        self.fill_value = float(fill_value)

    def set_rates(self, mosaic=None, mixup=None):
        """Sets the probabilities read by the pipeline from now on (None: keep); `set_rates(0, 0)` closes both."""
        if mosaic is not None:
            self.mosaic_rate.assign(float(mosaic))
        if mixup is not None:
            self.mixup_rate.assign(float(mixup))

    def close(self):
        self.set_rates(0.0, 0.0)

    def reopen(self):
        self.set_rates(*self.initial_rates)

    def draw(self, seed):
        """An example's draws, float32 [NUM_DRAWS], from its stateless seed [2]: two coins, the centre, three mosaic
        partners and one mixup partner (uniform in [0, 1), turned into offsets in the group by `combine`), r."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
        uniform = tf.random.stateless_uniform([_MIX_RATIO], seeds[0])
        lo, hi = self.centre_range
        uniform = tf.tensor_scatter_nd_update(
            uniform, [[_CENTRE_Y], [_CENTRE_X]], lo + (hi - lo) * uniform[_CENTRE_Y:_CENTRE_X + 1])
        # Beta(a, a) = X / (X + Y) with X, Y ~ Gamma(a).
        gammas = tf.random.stateless_gamma([2], seeds[1], alpha=MIXUP_BETA)
        ratio = gammas[0] / (gammas[0] + gammas[1])
        return tf.concat([uniform, ratio[None]], axis=0)

    def tile_size(self, image_size):
        """(th, tw): the size a source image is stretched to in a mosaic of `image_size` (H, W)."""
        return max(1, round(self.tile_scale * image_size[0])), max(1, round(self.tile_scale * image_size[1]))

    def decide(self, draws):
        """From an example's draws: (is_mosaic, with_tile) bool scalars, the rates read once. `with_tile`: the rate
        of mosaic is not 0, so the example's image may be a tile of its group's mosaics."""
        draws = tf.cast(draws, tf.float32)
        rate = tf.identity(self.mosaic_rate)
        return draws[_MOSAIC_COIN] < rate, rate > 0.0

    def combine(self, images, boxes, classes, extra, draws):
        """One group: images float32 [G, H, W, 3] (H and W static), boxes [G, M, 4] and classes int32 [G, M]
        padded with -1, extra {name: int32 [G, M]} (padded with 0), draws [G, NUM_DRAWS] from `draw` -> (images
        [G, H, W, 3], boxes [G, 8M, 4], classes [G, 8M], extra) with the boxes that survive first, -1 padding after.

        The tiles are the images stretched to `tile_size` by one area resize of the group."""
        images = tf.cast(images, tf.float32)
        draws = tf.cast(draws, tf.float32)
        height, width = images.shape[1], images.shape[2]
        targets = (boxes, classes, extra)
        small = tf.image.resize(images, self.tile_size((height, width)), method="area")
        return self.combine_tiles(images, targets, small, targets, draws, draws[:, _MOSAIC_COIN] < self.mosaic_rate,
                                  tf.ones_like(draws[:, 0], tf.bool), (height, width))

    def combine_tiles(self, images, targets, tiles, tile_targets, draws, is_mosaic, with_tile, image_size):
        """`combine` with the tiles given (what `make_dataset` runs): each example brings its image at the output
        size if it is plain, its tile (the image stretched to `tile_size`) if it may be a tile, with the targets of
        each, so the group is decoded and resampled once at the size it is used at.

        images [G, H or 0, W, 3]: the plain examples' images (other rows unused; no row at all when every example
        is a mosaic). targets (boxes [G, M, 4], classes [G, M], extra): their boxes. tiles [G, th or 0, tw, 3] and
        tile_targets: the same at the tile size, for the examples where with_tile [G]; an example without a tile
        is plain, and if a mosaic of the group uses it its tile is its image area-resized. is_mosaic [G]: the
        mosaic examples (chosen when the example was prepared, so a rate set in between never leaves a mosaic
        without its tiles or a plain example without its image). image_size: (H, W). The images come out uint8 if
        `images` is uint8 (the pipeline's: a quarter of the memory to copy), float32 otherwise."""
        boxes, classes, extra = _cast_targets(*targets)
        tile_boxes, tile_classes, tile_extra = _cast_targets(*tile_targets)
        images = tf.convert_to_tensor(images)
        dtype = tf.uint8 if images.dtype == tf.uint8 else tf.float32  # uint8 pixels stay uint8 (a quarter the copy)
        images, tiles = tf.cast(images, dtype), tf.cast(tiles, dtype)
        draws = tf.cast(draws, tf.float32)
        group = tf.shape(draws)[0]
        height, width = int(image_size[0]), int(image_size[1])
        tile_h, tile_w = self.tile_size((height, width))
        is_mixed = draws[:, _MIXUP_COIN] < self.mixup_rate
        yc = tf.cast(tf.round(draws[:, _CENTRE_Y] * height), tf.int32)  # [G] the centre, whole pixels
        xc = tf.cast(tf.round(draws[:, _CENTRE_X] * width), tf.int32)
        partners = tf.stack([tf.range(group)] + [_partner(draws[:, c], group) for c in (_PARTNER_1, _PARTNER_2,
                                                                                         _PARTNER_3)],
                            axis=1)  # [G, 4] indices into the group

        # Examples without a tile (prepared while the rate of mosaic was 0) lend their image, area-resized.
        def complete():
            resized = as_pixels(tf.image.resize(images, (tile_h, tile_w), method="area"), dtype)
            return tf.where(with_tile[:, None, None, None], tiles, resized)

        tiles = tf.cond(tf.reduce_all(with_tile) | tf.logical_not(tf.reduce_any(is_mosaic)), lambda: tiles, complete)
        tile_boxes = tf.where(with_tile[:, None, None], tile_boxes, boxes)
        tile_classes = tf.where(with_tile[:, None], tile_classes, classes)
        tile_extra = {k: tf.where(with_tile[:, None], v, extra[k]) for k, v in tile_extra.items()}

        # Pixels: only the mosaic examples are built, and written over the plain ones (a group that is all mosaic,
        # or none, skips the write).
        def mosaic_of(chosen):
            return self._mosaic_pixels(tiles, tf.gather(partners, chosen), tf.gather(yc, chosen),
                                       tf.gather(xc, chosen), height, width, tile_h, tile_w)

        images = tf.ensure_shape(_replace_where(is_mosaic, images, mosaic_of), [None, height, width, 3])

        # Boxes: the four tiles of every example in one op, then plain examples keep their own boxes, padded to the
        # mosaic's 4M boxes.
        m_boxes, m_classes, m_extra = self._mosaic_boxes(tile_boxes, tile_classes, tile_extra, partners, yc, xc,
                                                         height, width, tile_h, tile_w)
        pad = [[0, 0], [0, 3 * boxes.shape[1]]]
        boxes = tf.where(is_mosaic[:, None, None], m_boxes, tf.pad(boxes, pad + [[0, 0]], constant_values=-1.0))
        classes = tf.where(is_mosaic[:, None], m_classes, tf.pad(classes, pad, constant_values=-1))
        extra = {k: tf.where(is_mosaic[:, None], m_extra[k], tf.pad(v, pad)) for k, v in extra.items()}

        # MixUp with another output of the group: its image blended in (only the mixed examples are computed), its
        # boxes appended.
        partner = _partner(draws[:, _MIX_PARTNER], group)
        ratio = draws[:, _MIX_RATIO]

        def blend(chosen):
            r = tf.gather(ratio, chosen)[:, None, None, None]
            mixed = (r * tf.cast(tf.gather(images, chosen), tf.float32)
                     + (1.0 - r) * tf.cast(tf.gather(images, tf.gather(partner, chosen)), tf.float32))
            return as_pixels(mixed, dtype)

        images = _replace_where(is_mixed, images, blend)
        other_classes = tf.where(is_mixed[:, None], tf.gather(classes, partner), -1)
        other_boxes = tf.where(other_classes[..., None] >= 0, tf.gather(boxes, partner), -1.0)
        boxes = tf.concat([boxes, other_boxes], axis=1)
        classes = tf.concat([classes, other_classes], axis=1)
        extra = {k: tf.concat([v, tf.where(other_classes >= 0, tf.gather(v, partner), 0)], axis=1)
                 for k, v in extra.items()}
        return (images,) + _real_boxes_first(boxes, classes, extra)

    def _mosaic_pixels(self, tiles, partners, yc, xc, height, width, tile_h, tile_w):
        """The mosaics of N examples: tiles [G, th, tw, 3] (the group's images at the tile size), partners [N, 4]
        indices into the group, centres yc, xc [N] -> [N, H, W, 3].

        Output pixel (y, x) of quadrant k reads pixel (y - oy, x - ox) of tile k when that lies inside the tile,
        else the fill. Each quadrant is one rectangular crop of its tile, padded with the fill where the tile does
        not reach (never, for full-size tiles); a mosaic is four crops and three concatenations, memory copies."""
        tiles = tf.ensure_shape(tiles, [None, tile_h, tile_w, 3])
        full_size = tile_h == height and tile_w == width

        def quadrant(tile, row, rows, col, cols):
            """Rows [row, row + rows) x columns [col, col + cols) of tile `tile`, in tile pixels, fill outside."""
            if full_size:  # a full-size tile placed at the centre always covers its quadrant
                return tiles[tile, row:row + rows, col:col + cols]
            r0, r1 = tf.clip_by_value(row, 0, tile_h), tf.clip_by_value(row + rows, 0, tile_h)
            c0, c1 = tf.clip_by_value(col, 0, tile_w), tf.clip_by_value(col + cols, 0, tile_w)
            pad = [[r0 - row, row + rows - r1], [c0 - col, col + cols - c1], [0, 0]]
            return tf.pad(tiles[tile, r0:r1, c0:c1], pad, constant_values=tf.cast(self.fill_value, tiles.dtype))

        def one(args):
            (top_left, top_right, bottom_left, bottom_right), y, x = args
            # The top tiles end at the centre row (their rows th - y ...), the bottom ones start there (rows 0 ...);
            # the same for the left and right columns.
            upper = tf.concat([quadrant(top_left, tile_h - y, y, tile_w - x, x),
                               quadrant(top_right, tile_h - y, y, 0, width - x)], axis=1)
            lower = tf.concat([quadrant(bottom_left, 0, height - y, tile_w - x, x),
                               quadrant(bottom_right, 0, height - y, 0, width - x)], axis=1)
            return tf.ensure_shape(tf.concat([upper, lower], axis=0), [height, width, 3])

        return tf.map_fn(one, (tf.unstack(partners, 4, axis=1), yc, xc),
                         fn_output_signature=tf.TensorSpec([height, width, 3], tiles.dtype))

    def _mosaic_boxes(self, boxes, classes, extra, partners, yc, xc, height, width, tile_h, tile_w):
        """Every example's mosaic boxes, the four tiles in one op: boxes [G, M, 4] of the group (at the tile size),
        partners [G, 4] (indices into the group) -> (boxes [G, 4M, 4], classes [G, 4M], extra) in tile order, -1
        (extra 0) where dropped."""
        bottom = tf.constant([0, 0, 1, 1], tf.int32)  # tile k: k >= 2 below the centre, k odd right of it
        right = tf.constant([0, 1, 0, 1], tf.int32)
        yc_k, xc_k = yc[:, None], xc[:, None]  # [G, 1] against [4]
        oy = yc_k - tile_h * (1 - bottom)  # [G, 4] tile origins on the output, pixels
        ox = xc_k - tile_w * (1 - right)
        # The part of the output each tile covers: its quadrant and its own extent, [y0, y1) x [x0, x1).
        y0 = tf.where(bottom > 0, yc_k, tf.maximum(oy, 0))
        y1 = tf.where(bottom > 0, tf.minimum(oy + tile_h, height), yc_k)
        x0 = tf.where(right > 0, xc_k, tf.maximum(ox, 0))
        x1 = tf.where(right > 0, tf.minimum(ox + tile_w, width), xc_k)
        size = tf.constant([height, width, height, width], tf.float32)
        scale = tf.constant([tile_h / height, tile_w / width] * 2, tf.float32)
        offset = tf.cast(tf.stack([oy, ox, oy, ox], axis=-1), tf.float32) / size  # [G, 4, 4]
        region = tf.cast(tf.stack([y0, x0, y1, x1], axis=-1), tf.float32) / size
        tile_classes = tf.gather(classes, partners)  # [G, 4, M]
        moved = tf.gather(boxes, partners) * scale + offset[:, :, None, :]  # [G, 4, M, 4]
        kept, keep = self._clip(moved, region[:, :, None, :], height, width)
        keep &= tile_classes >= 0
        group, count = tf.shape(boxes)[0], 4 * boxes.shape[1]
        out_boxes = tf.reshape(tf.where(keep[..., None], kept, -1.0), [group, count, 4])
        out_classes = tf.reshape(tf.where(keep, tile_classes, -1), [group, count])
        out_extra = {name: tf.reshape(tf.where(keep, tf.gather(values, partners), 0), [group, count])
                     for name, values in extra.items()}
        return out_boxes, out_classes, out_extra

    def _clip(self, moved, region, height, width):
        """Boxes [..., M, 4] clipped to their tile's region [..., 1, 4] -> (clipped, keep [..., M])."""
        clipped = tf.concat([tf.maximum(moved[..., :2], region[..., :2]),
                             tf.minimum(moved[..., 2:], region[..., 2:])], axis=-1)
        h = (clipped[..., 2] - clipped[..., 0]) * height
        w = (clipped[..., 3] - clipped[..., 1]) * width
        area = tf.maximum(moved[..., 2] - moved[..., 0], 0.0) * tf.maximum(moved[..., 3] - moved[..., 1], 0.0)
        visible = tf.maximum(h, 0.0) * tf.maximum(w, 0.0) / (height * width)
        keep = (h >= self.min_size_px) & (w >= self.min_size_px) & (visible >= self.min_visible * area)
        return clipped, keep


def _partner(uniform, group):
    """Another example of the group for each one: i + 1 + floor(u * (G - 1)) mod G (never i itself)."""
    offset = 1 + tf.cast(tf.floor(uniform * tf.cast(group - 1, tf.float32)), tf.int32)
    offset = tf.minimum(offset, tf.maximum(group - 1, 1))
    return (tf.range(group) + offset) % group


def as_pixels(pixels, dtype):
    """float32 pixels clipped to [0, 255], rounded to the nearest integer when dtype is uint8."""
    pixels = tf.clip_by_value(pixels, 0.0, 255.0)
    return tf.cast(tf.round(pixels), tf.uint8) if dtype == tf.uint8 else pixels


def _cast_targets(boxes, classes, extra):
    return (tf.cast(boxes, tf.float32), tf.cast(classes, tf.int32),
            {k: tf.cast(v, tf.int32) for k, v in (extra or {}).items()})


def _replace_where(condition, images, build):
    """images [G, ...] with example i replaced by build(chosen)[j] where condition[i], chosen = the indices where
    condition holds (i its j-th): build runs on those examples only, and not at all when none is chosen; when all
    are, its output is returned as is."""
    chosen = tf.cast(tf.where(condition)[:, 0], tf.int32)
    count, group = tf.size(chosen), tf.shape(images)[0]
    return tf.cond(tf.equal(count, 0), lambda: images,
                   lambda: tf.cond(tf.equal(count, group), lambda: build(chosen),
                                   lambda: tf.tensor_scatter_nd_update(images, chosen[:, None], build(chosen))))


def _real_boxes_first(boxes, classes, extra):
    """Moves the real boxes (class >= 0) of each row to the front, keeping their order (padding after)."""
    order = tf.argsort(tf.cast(classes < 0, tf.int32), axis=1, stable=True)
    return (tf.gather(boxes, order, batch_dims=1), tf.gather(classes, order, batch_dims=1),
            {k: tf.gather(v, order, batch_dims=1) for k, v in extra.items()})
