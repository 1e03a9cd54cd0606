"""Mosaic and MixUp for tf.data: four training images tiled into one, and two images blended, with their boxes.

Both work on a group of G examples already resized (and augmented) to the training size H x W, padded to M boxes,
and draw their partners from the same group, so each decoded image is used about once per tile and the pipeline
decodes no more images than without them (YOLOv4 and ultralytics read three more images per mosaic):

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

Each example is a mosaic with probability `mosaic` and then mixed with probability `mixup`. Both rates are
`tf.Variable`s read when a group is combined, so `set_rates` (or `keras_focal.training.CloseMosaic`, at an epoch)
switches them off for the last part of training; the batches already prefetched keep the old rates.

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
    tile_scale: each tile is the source image stretched to this fraction of the output size (0.5: four whole images
        fill the output when the centre is in the middle).
    min_size_px: boxes under this many pixels high or wide after clipping are dropped.
    min_visible: boxes that keep less than this fraction of their area after clipping are dropped.
    fill_value: pixel value outside every tile.

    The rates are `tf.Variable`s: create the object outside any `tf.distribute` strategy scope.
    """

    def __init__(self, mosaic=1.0, mixup=0.0, group_size=16, centre_range=(0.25, 0.75), tile_scale=0.5,
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

    def combine(self, images, boxes, classes, extra, draws):
        """One group: images float32 [G, H, W, 3] (H and W static), boxes [G, M, 4] and classes int32 [G, M]
        padded with -1, extra {name: int32 [G, M]} (padded with 0), draws [G, NUM_DRAWS] from `draw` -> (images
        [G, H, W, 3], boxes [G, 8M, 4], classes [G, 8M], extra) with the boxes that survive first, -1 padding after."""
        images = tf.cast(images, tf.float32)
        boxes = tf.cast(boxes, tf.float32)
        classes = tf.cast(classes, tf.int32)
        draws = tf.cast(draws, tf.float32)
        group = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        is_mosaic = draws[:, _MOSAIC_COIN] < self.mosaic_rate
        is_mixed = draws[:, _MIXUP_COIN] < self.mixup_rate

        m_images, m_boxes, m_classes, m_extra = self._mosaic(images, boxes, classes, extra, draws, group, height,
                                                             width)
        # A plain example keeps its image and boxes, padded to the mosaic's 4M boxes. Whole images are chosen by a
        # gather (a broadcast select over the pixels is slower).
        pad = [[0, 0], [0, 3 * boxes.shape[1]]]
        images = _choose(is_mosaic, m_images, images)
        boxes = tf.where(is_mosaic[:, None, None], m_boxes, tf.pad(boxes, pad + [[0, 0]], constant_values=-1.0))
        classes = tf.where(is_mosaic[:, None], m_classes, tf.pad(classes, pad, constant_values=-1))
        extra = {k: tf.where(is_mosaic[:, None], m_extra[k], tf.pad(tf.cast(v, tf.int32), pad))
                 for k, v in extra.items()}

        # MixUp with another output of the group: its image blended in, its boxes appended.
        partner = _partner(draws[:, _MIX_PARTNER], group)
        ratio = draws[:, _MIX_RATIO][:, None, None, None]
        images = tf.cond(tf.reduce_any(is_mixed),
                         lambda: _choose(is_mixed, ratio * images + (1.0 - ratio) * tf.gather(images, partner), images),
                         lambda: images)
        other_classes = tf.where(is_mixed[:, None], tf.gather(classes, partner), -1)
        other_boxes = tf.where(other_classes[..., None] >= 0, tf.gather(boxes, partner), -1.0)
        boxes = tf.concat([boxes, other_boxes], axis=1)
        classes = tf.concat([classes, other_classes], axis=1)
        extra = {k: tf.concat([v, tf.where(other_classes >= 0, tf.gather(v, partner), 0)], axis=1)
                 for k, v in extra.items()}
        return (tf.clip_by_value(images, 0.0, 255.0),) + _real_boxes_first(boxes, classes, extra)

    def _mosaic(self, images, boxes, classes, extra, draws, group, height, width):
        tile_h = max(1, round(self.tile_scale * height))
        tile_w = max(1, round(self.tile_scale * width))
        yc = tf.cast(tf.round(draws[:, _CENTRE_Y] * height), tf.int32)  # [G]
        xc = tf.cast(tf.round(draws[:, _CENTRE_X] * width), tf.int32)
        own = tf.range(group)
        tiles = tf.stack([own] + [_partner(draws[:, c], group) for c in (_PARTNER_1, _PARTNER_2, _PARTNER_3)],
                         axis=1)  # [G, 4] indices into the group
        small = tf.image.resize(images, (tile_h, tile_w), method="area")  # [G, th, tw, 3]
        # One extra row and column of fill_value (index th, tw): pixels a tile does not cover read them. The output
        # is two strips (top: tiles 0 | 1, bottom: 2 | 3), each one column gather of a pair of tiles side by side,
        # then one row gather of the two strips stacked: no per-pixel select (a broadcast tf.where over the group
        # cost 8x the gathers at 640 px).
        small = tf.pad(small, [[0, 0], [0, 1], [0, 1], [0, 0]], constant_values=self.fill_value)
        small_t = tf.transpose(small, [0, 2, 1, 3])  # [G, tw + 1, th + 1, 3]: whole columns move per index

        rows = tf.range(height)[None, :]  # [1, H]
        cols = tf.range(width)[None, :]
        origins, regions = [], []
        for k in range(4):
            bottom, right = k >= 2, k % 2 == 1
            oy = yc if bottom else yc - tile_h  # [G] tile origin on the output, pixels
            ox = xc if right else xc - tile_w
            # The part of the output the tile covers: its quadrant and its own extent, [y0, y1) x [x0, x1).
            y0 = yc if bottom else tf.maximum(oy, 0)
            y1 = tf.minimum(oy + tile_h, height) if bottom else yc
            x0 = xc if right else tf.maximum(ox, 0)
            x1 = tf.minimum(ox + tile_w, width) if right else xc
            origins.append((oy, ox))
            regions.append((y0, x0, y1, x1))

        def source_index(positions, lo, hi, origin, size):  # [G, N]: the tile pixel, or `size` (fill) outside
            inside = (positions >= lo[:, None]) & (positions < hi[:, None])
            return tf.where(inside, positions - origin[:, None], size)

        strips = []
        for left, right in ((0, 1), (2, 3)):
            pair = tf.concat([tf.gather(small_t, tiles[:, left]), tf.gather(small_t, tiles[:, right])], axis=1)
            index = tf.where(cols < xc[:, None],
                             source_index(cols, regions[left][1], regions[left][3], origins[left][1], tile_w),
                             tile_w + 1 + source_index(cols, regions[right][1], regions[right][3],
                                                       origins[right][1], tile_w))
            strips.append(tf.gather(pair, index, axis=1, batch_dims=1))  # [G, W, th + 1, 3]
        stacked = tf.transpose(tf.concat(strips, axis=2), [0, 2, 1, 3])  # [G, 2 (th + 1), W, 3]
        index = tf.where(rows < yc[:, None],
                         source_index(rows, regions[0][0], regions[0][2], origins[0][0], tile_h),
                         tile_h + 1 + source_index(rows, regions[2][0], regions[2][2], origins[2][0], tile_h))
        out = tf.gather(stacked, index, axis=1, batch_dims=1)  # [G, H, W, 3]

        all_boxes, all_classes, all_extra = [], [], {k: [] for k in extra}
        for k in range(4):
            (oy, ox), (y0, x0, y1, x1) = origins[k], regions[k]
            scale = tf.constant([tile_h / height, tile_w / width] * 2, tf.float32)
            offset = tf.cast(tf.stack([oy, ox, oy, ox], axis=1), tf.float32) / [height, width, height, width]
            region = tf.cast(tf.stack([y0, x0, y1, x1], axis=1), tf.float32) / [height, width, height, width]
            tile_classes = tf.gather(classes, tiles[:, k])  # [G, M]
            moved = tf.gather(boxes, tiles[:, k]) * scale + offset[:, None, :]
            kept, keep = self._clip(moved, region[:, None, :], height, width)
            keep &= tile_classes >= 0
            all_boxes.append(tf.where(keep[..., None], kept, -1.0))
            all_classes.append(tf.where(keep, tile_classes, -1))
            for name, values in extra.items():
                all_extra[name].append(tf.where(keep, tf.gather(tf.cast(values, tf.int32), tiles[:, k]), 0))
        return (out, tf.concat(all_boxes, axis=1), tf.concat(all_classes, axis=1),
                {k: tf.concat(v, axis=1) for k, v in all_extra.items()})

    def _clip(self, moved, region, height, width):
        """Boxes [G, M, 4] clipped to their tile's region [G, 1, 4] -> (clipped, keep [G, M])."""
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


def _choose(condition, when_true, when_false):
    """Per example of the group: when_true[i] where condition[i], else when_false[i]."""
    group = tf.shape(condition)[0]
    index = tf.range(group) + group * tf.cast(condition, tf.int32)
    return tf.gather(tf.concat([when_false, when_true], axis=0), index)


def _real_boxes_first(boxes, classes, extra):
    """Moves the real boxes (class >= 0) of each row to the front, keeping their order (padding after)."""
    order = tf.argsort(tf.cast(classes < 0, tf.int32), axis=1, stable=True)
    return (tf.gather(boxes, order, batch_dims=1), tf.gather(classes, order, batch_dims=1),
            {k: tf.gather(v, order, batch_dims=1) for k, v in extra.items()})
