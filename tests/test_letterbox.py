"""Letterbox resize: geometry against drawn rectangles, box round trips, the pipeline and evaluation options."""

import numpy as np
import tensorflow as tf

from keras_focal.data.pipeline import make_dataset
from keras_focal.evaluation.model_eval import _batched_with_sizes
from keras_focal.letterbox import PAD_COLOUR, boxes_from_frame, boxes_to_frame, letterbox

BOX = np.array([0.25, 0.125, 0.75, 0.5], "float32")  # normalized yxyx in the original image


def _white_box_image(height, width):
    """Black image with BOX painted white: its pixels are where the box is, whatever the resize."""
    image = np.zeros((height, width, 3), "uint8")
    y0, x0, y1, x1 = (BOX * [height, width, height, width]).astype(int)
    image[y0:y1, x0:x1] = 255
    return image


def _white_extent(frame):
    """Normalized yxyx extent of the (mostly) white pixels of a frame."""
    ys, xs = np.nonzero(frame[..., 0] > 200)
    h, w = frame.shape[:2]
    return np.array([ys.min() / h, xs.min() / w, (ys.max() + 1) / h, (xs.max() + 1) / w])


def test_letterbox_geometry_and_padding():
    image = _white_box_image(60, 160)  # wide: scaled by 0.8 to 48 x 128 in a 128 x 128 frame
    frame, content = letterbox(image, (128, 128))
    frame = frame.numpy()
    np.testing.assert_allclose(content, [48 / 128, 1.0])
    np.testing.assert_allclose(frame[48:], np.broadcast_to(PAD_COLOUR, frame[48:].shape), atol=1e-4)
    assert frame[:48].max() > 250 and frame[:48].min() < 5
    np.testing.assert_allclose(_white_extent(frame), boxes_to_frame(BOX, content).numpy(), atol=1.5 / 128)

    tall, tall_content = letterbox(_white_box_image(200, 100), (64, 96))  # scale 0.32 -> 64 x 32
    np.testing.assert_allclose(tall_content, [1.0, 32 / 96])
    np.testing.assert_allclose(_white_extent(tall.numpy()), boxes_to_frame(BOX, tall_content).numpy(),
                               atol=1.5 / 32)


def test_batched_letterbox_and_round_trip():
    images = np.stack([_white_box_image(50, 100)] * 3)
    frames, content = letterbox(images, (80, 80))
    assert frames.shape == (3, 80, 80, 3) and content.shape == (3, 2)
    boxes = np.random.default_rng(0).uniform(0, 1, (3, 5, 4)).astype("float32")
    boxes = np.concatenate([np.minimum(boxes[..., :2], boxes[..., 2:]), np.maximum(boxes[..., :2], boxes[..., 2:])], -1)
    framed = boxes_to_frame(boxes, content).numpy()
    np.testing.assert_allclose(framed[..., [0, 2]], boxes[..., [0, 2]] * 0.5, rtol=1e-6)  # 50 x 100 -> 40 x 80
    np.testing.assert_allclose(boxes_from_frame(framed, content), boxes, rtol=1e-5)


def test_pipeline_and_evaluation_letterbox():
    image = _white_box_image(64, 128)
    ds = tf.data.Dataset.from_tensors((image, {"boxes": BOX[None], "classes": np.array([0], "int32")}))
    images, targets = next(iter(make_dataset(ds, image_size=(64, 64), batch_size=1, letterbox=True)))
    np.testing.assert_allclose(targets["boxes"][0, 0], BOX * [0.5, 1, 0.5, 1], rtol=1e-6)
    np.testing.assert_allclose(_white_extent(images[0].numpy()), targets["boxes"][0, 0], atol=1.5 / 64)
    stretched, _ = next(iter(make_dataset(ds, image_size=(64, 64), batch_size=1)))
    np.testing.assert_allclose(_white_extent(stretched[0].numpy()), BOX, atol=1.5 / 64)

    frames, _, sizes, content = next(iter(_batched_with_sizes(ds, (64, 64), 1, letterbox=True)))
    np.testing.assert_array_equal(sizes, [[64, 128]])
    np.testing.assert_allclose(content, [[0.5, 1.0]])
    np.testing.assert_allclose(frames, images)
