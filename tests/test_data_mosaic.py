"""Mosaic and MixUp (`keras_focal.data.MosaicMixup`): boxes and pixels against a float64 NumPy reference, stateless
draws, closing the rates, and the pipeline hook."""

import numpy as np
import pytest
import tensorflow as tf

import keras_focal.data as kd
from keras_focal.data import mosaic as mm

H, W, M = 64, 96, 6


def _group(rng, g=5):
    """g constant-colour images (image j has value 20 * (j + 1)) with random boxes, some padding."""
    images = np.stack([np.full((H, W, 3), 20.0 * (j + 1), np.float32) for j in range(g)])
    y0, x0 = rng.uniform(0, 0.9, (2, g, M))
    y1 = np.minimum(y0 + rng.uniform(0.02, 0.6, (g, M)), 1.0)
    x1 = np.minimum(x0 + rng.uniform(0.02, 0.6, (g, M)), 1.0)
    boxes = np.stack([y0, x0, y1, x1], -1)
    classes = rng.integers(0, 4, (g, M)).astype(np.int32)
    classes[:, M - 2:] = -1  # padding rows
    boxes[classes < 0] = -1.0
    crowd = rng.integers(0, 2, (g, M)).astype(np.int32) * (classes >= 0)
    return images, boxes.astype(np.float32), classes, crowd


def _draws(rng, g, mosaic_coin, mixup_coin, lo=0.25, hi=0.75):
    d = rng.uniform(0, 1, (g, mm.NUM_DRAWS))
    d[:, mm._MOSAIC_COIN] = mosaic_coin
    d[:, mm._MIXUP_COIN] = mixup_coin
    d[:, mm._CENTRE_Y] = lo + (hi - lo) * d[:, mm._CENTRE_Y]
    d[:, mm._CENTRE_X] = lo + (hi - lo) * d[:, mm._CENTRE_X]
    d[:, mm._MIX_RATIO] = rng.uniform(0.3, 0.7, g)
    return d.astype(np.float32)


def _reference(images, boxes, classes, crowd, draws, mixer):
    """float64 NumPy: per output, the list of (box, class, crowd) in order and the image."""
    g = len(images)
    th, tw = round(mixer.tile_scale * H), round(mixer.tile_scale * W)
    partner = lambda i, u: (i + 1 + min(int(np.floor(np.float32(u) * np.float32(g - 1))), g - 1)) % g  # noqa: E731
    outs = []
    for i in range(g):
        d = draws[i].astype(np.float64)
        if d[mm._MOSAIC_COIN] < mixer.mosaic_rate.numpy():
            yc, xc = int(np.round(draws[i, mm._CENTRE_Y] * H)), int(np.round(draws[i, mm._CENTRE_X] * W))
            tiles = [i] + [partner(i, draws[i, c]) for c in (mm._PARTNER_1, mm._PARTNER_2, mm._PARTNER_3)]
            image = np.full((H, W, 3), mixer.fill_value)
            rows = []
            for k, t in enumerate(tiles):
                bottom, right = k >= 2, k % 2 == 1
                oy, ox = (yc if bottom else yc - th), (xc if right else xc - tw)
                y0, y1 = (yc, min(oy + th, H)) if bottom else (max(oy, 0), yc)
                x0, x1 = (xc, min(ox + tw, W)) if right else (max(ox, 0), xc)
                image[y0:y1, x0:x1] = images[t, 0, 0]  # constant images: the area resize keeps the colour
                for b, c, cr in zip(boxes[t].astype(np.float64), classes[t], crowd[t]):
                    if c < 0:
                        continue
                    moved = np.array([(b[0] * th + oy) / H, (b[1] * tw + ox) / W, (b[2] * th + oy) / H,
                                      (b[3] * tw + ox) / W])
                    clip = np.array([max(moved[0], y0 / H), max(moved[1], x0 / W), min(moved[2], y1 / H),
                                     min(moved[3], x1 / W)])
                    hh, ww = (clip[2] - clip[0]) * H, (clip[3] - clip[1]) * W
                    area = (moved[2] - moved[0]) * (moved[3] - moved[1])
                    if hh >= mixer.min_size_px and ww >= mixer.min_size_px and \
                            max(hh, 0) * max(ww, 0) / (H * W) >= mixer.min_visible * area:
                        rows.append((clip, c, cr))
        else:
            image = images[i].astype(np.float64)
            rows = [(b, c, cr) for b, c, cr in zip(boxes[i].astype(np.float64), classes[i], crowd[i]) if c >= 0]
        outs.append((image, rows))
    final = []
    for i in range(g):
        image, rows = outs[i]
        if draws[i, mm._MIXUP_COIN] < mixer.mixup_rate.numpy():
            j = partner(i, draws[i, mm._MIX_PARTNER])
            r = float(draws[i, mm._MIX_RATIO])
            image = r * image + (1 - r) * outs[j][0]
            rows = rows + outs[j][1]
        final.append((image, rows))
    return final


def _check(result, reference):
    images, boxes, classes, crowd = result[0].numpy(), result[1].numpy(), result[2].numpy(), result[3]["is_crowd"]
    for i, (image, rows) in enumerate(reference):
        n = len(rows)
        assert (classes[i, :n] >= 0).all() and (classes[i, n:] == -1).all(), i
        np.testing.assert_allclose(boxes[i, :n], np.array([r[0] for r in rows]).reshape(-1, 4), atol=2e-6)
        np.testing.assert_array_equal(classes[i, :n], [r[1] for r in rows])
        np.testing.assert_array_equal(crowd.numpy()[i, :n], [r[2] for r in rows])
        np.testing.assert_allclose(images[i], image, atol=1e-3)
        kept = boxes[i, :n].astype(np.float64)
        # No zero-area or out-of-image box survives.
        assert ((kept[:, 2] - kept[:, 0]) * H >= 2 - 1e-4).all() and ((kept[:, 3] - kept[:, 1]) * W >= 2 - 1e-4).all()
        assert (kept >= 0).all() and (kept <= 1 + 1e-6).all()


SOME = np.array([0.0, 0.99, 0.0, 0.0, 0.99])  # examples 0, 2, 3 pass rate 0.5, examples 1 and 4 do not


@pytest.mark.parametrize("mosaic_coin,mixup_coin,tile_scale", [(0.0, 0.99, 0.5), (0.0, 0.0, 0.5), (0.99, 0.0, 0.5),
                                                               (SOME, SOME[::-1], 0.5), (SOME, 0.99, 0.5),
                                                               (SOME, SOME[::-1], 1.0)])
def test_combine_matches_numpy_reference(mosaic_coin, mixup_coin, tile_scale):
    """mosaic only (every draw passes rate 1, no mixup), mosaic + mixup, neither (rates below the coins), and
    groups where only some examples are mosaics or mixed (those are built, then written over the others); tiles at
    half and at full output size."""
    rng = np.random.default_rng(7)
    mixer = kd.MosaicMixup(mosaic=1.0, mixup=0.5, tile_scale=tile_scale)
    images, boxes, classes, crowd = _group(rng)
    draws = _draws(rng, len(images), mosaic_coin, mixup_coin)
    result = mixer.combine(images, boxes, classes, {"is_crowd": crowd}, draws)
    assert result[1].shape[1] == 8 * M
    reference = _reference(images, boxes, classes, crowd, draws, mixer)
    assert sum(len(rows) for _, rows in reference) > 10  # the check has boxes to compare
    _check(result, reference)


@pytest.mark.parametrize("tile_scale", [0.5, 1.0])
def test_mosaic_pixels_match_numpy_reference(tile_scale):
    """Every output pixel of random tiles (not constant: a crop off by one pixel shows) against a per-pixel float64
    placement, with the fill where a half-size tile does not reach."""
    rng = np.random.default_rng(11)
    mixer = kd.MosaicMixup(tile_scale=tile_scale)
    th, tw = mixer.tile_size((H, W))
    tiles = rng.uniform(0, 255, (5, th, tw, 3)).astype(np.float32)
    partners = rng.integers(0, 5, (7, 4)).astype(np.int32)
    yc = rng.integers(H // 4, 3 * H // 4 + 1, 7).astype(np.int32)
    xc = rng.integers(W // 4, 3 * W // 4 + 1, 7).astype(np.int32)
    yc[0], xc[0] = H // 4, 3 * W // 4  # the ends of the centre range
    got = mixer._mosaic_pixels(tf.constant(tiles), tf.constant(partners), tf.constant(yc), tf.constant(xc), H, W,
                               th, tw).numpy()
    for i in range(7):
        expected = np.full((H, W, 3), mixer.fill_value)
        for y in range(H):
            for x in range(W):
                k = 2 * (y >= yc[i]) + (x >= xc[i])
                ty = y - yc[i] if y >= yc[i] else y - (yc[i] - th)
                tx = x - xc[i] if x >= xc[i] else x - (xc[i] - tw)
                if 0 <= ty < th and 0 <= tx < tw:
                    expected[y, x] = tiles[partners[i, k], ty, tx]
        np.testing.assert_array_equal(got[i], expected, err_msg=f"mosaic {i}")
        if tile_scale < 1:
            assert (expected == mixer.fill_value).all(axis=-1).any()  # the fill is exercised


def test_tiles_lent_by_examples_without_one():
    """`combine_tiles` with some tiles missing (examples prepared while the rate was 0, all plain) gives what
    `combine` gives: their images are area-resized into tiles, their own boxes used."""
    rng = np.random.default_rng(3)
    mixer = kd.MosaicMixup(mosaic=0.5, mixup=0.5)
    images, boxes, classes, crowd = _group(rng)
    draws = _draws(rng, len(images), SOME, SOME[::-1])
    targets = (boxes, classes, {"is_crowd": crowd})
    expected = mixer.combine(images, *targets, draws)
    tiles = tf.image.resize(images, mixer.tile_size((H, W)), method="area").numpy()
    with_tile = SOME == 0  # the plain examples 1 and 4 bring no tile: garbage in their rows
    tiles[~with_tile] = 255.0
    tile_targets = (np.where(with_tile[:, None, None], boxes, 0.5), np.where(with_tile[:, None], classes, 2),
                    {"is_crowd": np.where(with_tile[:, None], crowd, 1)})
    got = mixer.combine_tiles(images, targets, tiles, tile_targets, draws, tf.constant(SOME == 0),
                              tf.constant(with_tile), (H, W))
    for a, b in zip(got[:3], expected[:3]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(got[3]["is_crowd"].numpy(), expected[3]["is_crowd"].numpy())


def test_uint8_groups_give_the_float_result_rounded():
    """The pipeline's groups carry uint8 pixels: mosaics and blends come out uint8, the float result rounded."""
    rng = np.random.default_rng(5)
    mixer = kd.MosaicMixup(mosaic=1.0, mixup=0.5)
    images, boxes, classes, crowd = _group(rng)
    images = images + rng.integers(0, 30, images.shape)  # integer pixels, not constant
    draws = _draws(rng, len(images), SOME, SOME[::-1])
    targets = (boxes, classes, {"is_crowd": crowd})
    every = tf.ones([len(images)], tf.bool)
    as_float = mixer.combine_tiles(images, targets, images, targets, draws, tf.constant(SOME == 0), every, (H, W))
    as_uint8 = mixer.combine_tiles(images.astype(np.uint8), targets, images.astype(np.uint8), targets, draws,
                                   tf.constant(SOME == 0), every, (H, W))
    assert as_uint8[0].dtype == tf.uint8
    np.testing.assert_array_equal(as_uint8[0].numpy(), np.round(as_float[0].numpy()))
    np.testing.assert_array_equal(as_uint8[1].numpy(), as_float[1].numpy())


def test_reference_can_fail():
    """The same check with a tile origin off by one pixel in the reference fails."""
    rng = np.random.default_rng(7)
    mixer = kd.MosaicMixup(mosaic=1.0, mixup=0.0)
    images, boxes, classes, crowd = _group(rng)
    draws = _draws(rng, len(images), 0.0, 0.99)
    result = mixer.combine(images, boxes, classes, {"is_crowd": crowd}, draws)
    shifted = draws.copy()
    shifted[:, mm._CENTRE_Y] += 1.0 / H
    with pytest.raises(AssertionError):
        _check(result, _reference(images, boxes, classes, crowd, shifted, mixer))


def _examples(n=16, m=5):
    rng = np.random.default_rng(0)
    y0, x0 = rng.uniform(0, 0.7, (2, n, m))
    boxes = np.stack([y0, x0, y0 + rng.uniform(0.1, 0.3, (n, m)), x0 + rng.uniform(0.1, 0.3, (n, m))], -1)
    images = rng.integers(0, 255, (n, 80, 80, 3)).astype(np.uint8)
    return tf.data.Dataset.from_tensor_slices(
        (images, {"boxes": boxes.astype(np.float32), "classes": rng.integers(0, 3, (n, m)).astype(np.int32)}))


def _pipeline(mixer, seed, augment=True):
    ds = _examples()
    return kd.make_dataset(ds, image_size=(64, 64), batch_size=8, augment=augment, deterministic=True, seed=seed,
                           mosaic=mixer, max_boxes=20)


def _rounded(images):
    return np.round(np.clip(images.numpy(), 0, 255))


def test_pipeline_is_stateless_and_rates_close():
    mixer = kd.MosaicMixup(mosaic=1.0, mixup=0.5, group_size=8)
    images, targets = next(iter(_pipeline(mixer, seed=3)))
    again = next(iter(_pipeline(mixer, seed=3)))
    np.testing.assert_array_equal(images.numpy(), again[0].numpy())
    np.testing.assert_array_equal(targets["boxes"].numpy(), again[1]["boxes"].numpy())
    boxes, classes = targets["boxes"].numpy(), targets["classes"].numpy()
    real = boxes[classes >= 0]
    assert real.shape[0] > 8 and ((real[:, 2:] - real[:, :2]) * 64 >= 2 - 1e-4).all()
    assert (real >= 0).all() and (real <= 1).all()
    assert ((boxes[classes < 0]) == -1).all() and targets["boxes"].shape[1] == 20

    # Closed: the batches are those of the pipeline without mosaic (the augmentation keeps its seeds).
    mixer.close()
    closed = next(iter(_pipeline(mixer, seed=3)))
    plain = next(iter(_pipeline(None, seed=3)))
    np.testing.assert_array_equal(closed[0].numpy(), _rounded(plain[0]))  # the groups carry uint8 pixels
    np.testing.assert_array_equal(closed[1]["boxes"].numpy(), plain[1]["boxes"].numpy())
    mixer.reopen()
    assert float(mixer.mosaic_rate.numpy()) == 1.0 and float(mixer.mixup_rate.numpy()) == 0.5


def test_full_size_tiles_keep_plain_examples_as_without_mosaic():
    """With tiles at the output size one prepared image serves as tile and as plain image: at rate 0.5 the plain
    outputs are exactly the pipeline's without mosaic (rounded: the groups carry uint8), the others are mosaics."""
    mixer = kd.MosaicMixup(mosaic=0.5, mixup=0.0, group_size=8, tile_scale=1.0)
    images, targets = next(iter(_pipeline(mixer, seed=5)))
    plain_images, plain_targets = next(iter(_pipeline(None, seed=5)))
    same = [np.array_equal(a, b) for a, b in zip(images.numpy(), _rounded(plain_images))]
    assert 0 < sum(same) < len(same), same
    for i in np.flatnonzero(same):
        np.testing.assert_array_equal(targets["boxes"].numpy()[i], plain_targets["boxes"].numpy()[i])


def test_close_mosaic_callback_follows_the_epoch():
    from keras_focal.training import CloseMosaic

    mixer = kd.MosaicMixup(mosaic=0.8, mixup=0.2)
    callback = CloseMosaic(mixer, close_at=3)
    callback.on_epoch_begin(3)
    assert float(mixer.mosaic_rate.numpy()) == 0.0 and float(mixer.mixup_rate.numpy()) == 0.0
    callback.on_epoch_begin(1)  # a resumed run back before the closing epoch
    assert float(mixer.mosaic_rate.numpy()) == pytest.approx(0.8)


@pytest.mark.parametrize("kwargs,match", [({"mosaic": 1.5}, "mosaic"), ({"mixup": -0.1}, "mixup"),
                                          ({"group_size": 1}, "group_size"), ({"centre_range": (0.8, 0.2)}, "centre"),
                                          ({"tile_scale": 0}, "tile_scale")])
def test_bad_arguments_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kd.MosaicMixup(**kwargs)


def test_draws_are_stateless_and_in_range():
    mixer = kd.MosaicMixup()
    a = mixer.draw(tf.constant([5, 1], tf.int64)).numpy()
    np.testing.assert_array_equal(a, mixer.draw(tf.constant([5, 1], tf.int64)).numpy())
    assert not np.array_equal(a, mixer.draw(tf.constant([6, 1], tf.int64)).numpy())
    seeds = tf.stack([tf.range(400, dtype=tf.int64), tf.ones([400], tf.int64)], axis=1)
    ratios = tf.function(lambda s: tf.map_fn(mixer.draw, s, fn_output_signature=tf.float32))(seeds).numpy()
    ratios = ratios[:, mm._MIX_RATIO]
    # Beta(32, 32): mean 1/2, standard deviation sqrt(1 / (4 * 65)) = 0.062.
    assert abs(ratios.mean() - 0.5) < 0.015 and 0.045 < ratios.std() < 0.08
