"""Box-aware augmentation: flip involution, valid boxes after scale jitter, dropped boxes, empty images kept."""

import numpy as np
import tensorflow as tf

import keras_focal.data as kd


def _random_boxes(rng, n):
    yx0 = rng.uniform(0, 0.8, size=(n, 2))
    hw = rng.uniform(0.02, 0.5, size=(n, 2))
    return np.clip(np.concatenate([yx0, yx0 + hw], 1), 0, 1).astype(np.float32)


def test_flip_twice_is_identity():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(20, 30, 3)).astype(np.float32)
    boxes = _random_boxes(rng, 6)
    once_img, once_boxes = kd.flip_left_right(image, boxes)
    assert not np.allclose(once_img.numpy(), image)
    np.testing.assert_allclose(once_img.numpy(), image[:, ::-1])
    np.testing.assert_allclose(once_boxes.numpy()[:, [0, 2]], boxes[:, [0, 2]], atol=1e-6)
    np.testing.assert_allclose(once_boxes.numpy()[:, 1], 1 - boxes[:, 3], atol=1e-6)
    twice_img, twice_boxes = kd.flip_left_right(once_img, once_boxes)
    np.testing.assert_array_equal(twice_img.numpy(), image)
    np.testing.assert_allclose(twice_boxes.numpy(), boxes, atol=1e-6)


def test_flip_moves_pixels_with_boxes():
    image = np.zeros((10, 20, 3), np.float32)
    image[2:5, 1:4] = 255.0  # object at x in [1, 4) of 20
    box = np.array([[0.2, 0.05, 0.5, 0.2]], np.float32)
    img, b = kd.flip_left_right(image, box)
    ys, xs = np.nonzero(img.numpy()[..., 0])
    np.testing.assert_allclose(b.numpy()[0], [ys.min() / 10, xs.min() / 20, (ys.max() + 1) / 10,
                                              (xs.max() + 1) / 20], atol=1e-6)


def test_jitter_keeps_boxes_valid_and_in_range():
    aug = kd.Augmenter(scale_range=(0.5, 2.0), translate=0.3, seed=1)
    rng = np.random.default_rng(1)
    seen_dropped = False
    for i in range(25):
        boxes = _random_boxes(rng, 8)
        classes = np.arange(8, dtype=np.int32)
        img, b, c, _ = aug(tf.zeros([32, 32, 3]), boxes, classes, {})
        b, c = b.numpy(), c.numpy()
        assert img.shape == (32, 32, 3)
        assert c.dtype == np.int32 and len(b) == len(c)
        assert (b >= 0).all() and (b <= 1).all()
        assert (b[:, 0] <= b[:, 2]).all() and (b[:, 1] <= b[:, 3]).all()
        assert ((b[:, 2] - b[:, 0]) * 32 >= 2).all() and ((b[:, 3] - b[:, 1]) * 32 >= 2).all()
        assert set(c) <= set(classes)
        seen_dropped |= len(c) < 8
    assert seen_dropped  # a zoom-in of up to 2x with shifts pushes some boxes out


def test_boxes_that_leave_the_image_are_dropped():
    b, c = kd.filter_boxes(tf.constant([[0.1, 0.1, 0.3, 0.3], [0.5, 1.0, 0.7, 1.0], [1.0, 0.2, 1.0, 0.4],
                                        [0.2, 0.9, 0.4, 1.2], [0.2, 0.2, 0.21, 0.6]]),
                           tf.constant([0., 1., 2., 3., 4.]), 100, 100, min_size_px=2.0)
    np.testing.assert_array_equal(c.numpy(), [0, 3])
    np.testing.assert_allclose(b.numpy()[1], [0.2, 0.9, 0.4, 1.0])


def test_zoom_in_drops_border_boxes_and_keeps_centre():
    # scale exactly 2 (zoom in, no shift): the centre box doubles, a corner box leaves the image.
    aug = kd.Augmenter(flip=False, scale_range=(2.0, 2.0), translate=0.0, seed=0)
    img = np.zeros((40, 40, 3), np.float32)
    img[16:24, 16:24] = 200.0
    boxes = np.array([[0.4, 0.4, 0.6, 0.6], [0.0, 0.0, 0.1, 0.1]], np.float32)
    out, b, c, _ = aug(img, boxes, np.array([1, 2], np.int32), {})
    np.testing.assert_array_equal(c.numpy(), [1])
    np.testing.assert_allclose(b.numpy()[0], [0.3, 0.3, 0.7, 0.7], atol=0.03)
    ys, xs = np.nonzero(out.numpy()[..., 0] > 100)
    assert abs(ys.min() / 40 - 0.3) < 0.05 and abs((xs.max() + 1) / 40 - 0.7) < 0.05


def test_empty_images_are_kept():
    aug = kd.Augmenter(seed=2)
    img, b, c, _ = aug(tf.ones([16, 16, 3]), tf.zeros([0, 4]), tf.zeros([0], tf.int32), {})
    assert img.shape == (16, 16, 3) and b.shape == (0, 4) and c.shape == (0,)
    ds = tf.data.Dataset.from_tensors(
        (tf.zeros([16, 16, 3], tf.uint8), {"boxes": tf.zeros([0, 4]), "classes": tf.zeros([0], tf.int32)})
    ).repeat(3)
    batches = list(kd.make_dataset(ds, image_size=(16, 16), batch_size=2, augment=True, max_boxes=5))
    assert [x.shape[0] for x, _ in batches] == [2, 1]
    assert (batches[0][1]["classes"].numpy() == -1).all()


def test_augmented_pipeline_boxes_valid():
    rng = np.random.default_rng(5)
    data = [(rng.integers(0, 255, size=(48, 64, 3)).astype(np.uint8), _random_boxes(rng, 6)) for _ in range(8)]
    ds = tf.data.Dataset.from_generator(
        lambda: ((im, {"boxes": bx, "classes": np.arange(6, dtype=np.int32)}) for im, bx in data),
        output_signature=(tf.TensorSpec([None, None, 3], tf.uint8),
                          {"boxes": tf.TensorSpec([None, 4], tf.float32),
                           "classes": tf.TensorSpec([None], tf.int32)}))
    for images, t in kd.make_dataset(ds, image_size=(40, 40), batch_size=4, augment=True, shuffle=4):
        assert images.shape == (4, 40, 40, 3)
        b, c = t["boxes"].numpy(), t["classes"].numpy()
        vb = b[c >= 0]
        assert (vb >= 0).all() and (vb <= 1).all()
        assert (vb[:, 0] <= vb[:, 2]).all() and (vb[:, 1] <= vb[:, 3]).all()
        assert (b[c < 0] == -1).all()


def test_boxes_follow_the_pixels_through_random_transforms():
    # a 640x480-like source stretched to 64 x 64 with flips, zooms in / out and shifts: the box of a bright
    # rectangle lands on the rectangle's pixels (within a pixel of bilinear blur)
    aug = kd.Augmenter(scale_range=(0.5, 2.0), translate=0.2)
    src = np.zeros((48, 64, 3), np.float32)
    src[12:30, 8:40] = 255.0
    box = np.array([[12 / 48, 8 / 64, 30 / 48, 40 / 64]], np.float32)
    checked = 0
    for i in range(12):
        img, b, c, _ = aug.resize_and_augment(src, box, np.array([1], np.int32), {}, output_size=(64, 64),
                                              seed=tf.constant([i, 7]))
        flip, zoom, shift = aug.draw(tf.constant([i, 7]))
        assert img.shape == (64, 64, 3)
        if len(c) == 0 or (b.numpy()[0] * 64 > 63).any() or (b.numpy()[0] * 64 < 1).any():
            continue  # left the image, or touches its border
        ys, xs = np.nonzero(img.numpy()[..., 0] > 127)
        np.testing.assert_allclose(b.numpy()[0] * 64, [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], atol=1.01)
        checked += 1
    assert checked >= 4


def test_draws_follow_the_configured_distribution():
    aug = kd.Augmenter(scale_range=(0.8, 1.25), translate=0.1)
    draws = tf.data.Dataset.range(400).map(lambda i: aug.draw(tf.stack([i, 0]))).batch(400).get_single_element()
    flips, zooms, shifts = (d.numpy() for d in draws)
    assert 0.4 < flips.mean() < 0.6
    assert zooms.min() >= 0.8 and zooms.max() <= 1.25 and abs(zooms.mean() - (0.8 + 1.25) / 2) < 0.03
    assert np.abs(shifts).max() <= 0.1 and np.abs(shifts.mean(axis=0)).max() < 0.015
    # the same seed, the same transform
    a, b = aug.draw(tf.constant([3, 0])), aug.draw(tf.constant([3, 0]))
    assert all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a, b))


def test_identity_transform_is_the_plain_resize():
    aug = kd.Augmenter(flip=False, scale_range=None, translate=0.0)
    src = np.random.default_rng(3).integers(0, 256, size=(48, 64, 3)).astype(np.uint8)
    img, b, _, _ = aug.resize_and_augment(src, np.array([[0.1, 0.2, 0.5, 0.9]], np.float32), np.array([0]), {},
                                          output_size=(32, 40), seed=tf.constant([0, 0]))
    np.testing.assert_allclose(img.numpy(), kd.resize_image(src, (32, 40)).numpy(), atol=1e-3)
    np.testing.assert_allclose(b.numpy(), [[0.1, 0.2, 0.5, 0.9]], atol=1e-6)


def test_deterministic_pipeline_repeats_its_augmentation():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 255, size=(6, 24, 32, 3)).astype(np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((images, {"boxes": np.tile(_random_boxes(rng, 3)[None], (6, 1, 1)),
                                                      "classes": np.zeros((6, 3), np.int32)}))
    runs = [[x.numpy() for x, _ in kd.make_dataset(ds, image_size=(24, 24), batch_size=3, augment=True,
                                                   deterministic=True, seed=5)] for _ in range(2)]
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
