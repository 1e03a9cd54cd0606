"""keras_focal.visualization: detections drawn on an image, a gallery of a dataset and a histogram of box sizes."""

import os

import numpy as np

import keras_focal.data as kd
from keras_focal import visualization


def test_draw_detections_synthetic(tmp_path):
    image, boxes, labels = kd.generate_example("test", 3)
    assert len(boxes) > 0
    scores = np.linspace(0.95, 0.5, len(boxes))
    path = str(tmp_path / "drawn.png")
    pic = visualization.draw_detections(image, boxes, scores, labels, kd.SHAPES_CLASS_NAMES, score_threshold=0.3,
                                  path=path, ground_truth=(boxes, labels))
    assert os.path.getsize(path) > 1000
    assert pic.dtype == np.uint8 and pic.shape == (512, 512, 3)
    # the box edge of the first detection is painted in its class colour
    colour = np.array([int(visualization.PALETTE[labels[0] % 18][i:i + 2], 16) for i in (1, 3, 5)])
    y0, x0, y1, x1 = (boxes[0] * 512).astype(int)
    edge = pic[max(y0, 0):y1, max(x0 - 2, 0):x0 + 3].reshape(-1, 3).astype(int)
    assert (np.abs(edge - colour).sum(1) < 60).any()
    # nothing above threshold: picture is just the (upscaled) image
    plain = visualization.draw_detections(image, boxes, scores * 0, labels, kd.SHAPES_CLASS_NAMES)
    assert np.abs(plain[::4, ::4].astype(int) - image.astype(int)).mean() < 3


def test_gallery_and_box_size_histogram(tmp_path):
    examples = [kd.generate_example("test", i) for i in range(3)]
    images = [image for image, _, _ in examples]
    targets = [{"boxes": boxes, "classes": labels} for _, boxes, labels in examples]
    pictures = visualization.plot_gallery(images, targets, kd.SHAPES_CLASS_NAMES, str(tmp_path / "g.png"), size=128)
    assert pictures.shape == (3, 128, 128, 3) and os.path.getsize(tmp_path / "g.png") > 1000
    # ground truth is drawn in its class colour at the box's left edge
    boxes, labels = targets[0]["boxes"], targets[0]["classes"]
    colour = np.array([int(visualization.PALETTE[labels[0] % 18][i:i + 2], 16) for i in (1, 3, 5)])
    y0, x0, y1, x1 = (boxes[0] * 128).astype(int)
    edge = pictures[0, max(y0, 0):y1, max(x0 - 2, 0):x0 + 3].reshape(-1, 3).astype(int)
    assert (np.abs(edge - colour).sum(1) < 60).any()
    visualization.plot_box_sizes([3, 10, 40, 100], str(tmp_path / "h.png"), anchor_sizes=(32, 64))
    assert os.path.getsize(tmp_path / "h.png") > 1000
