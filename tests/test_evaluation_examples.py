"""keras_focal.visualization drawing, and examples/evaluate.py / predict.py end to end with a stand-in SavedModel."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras_focal.data as kd
from keras_focal import visualization

from _examples import load_example


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


class _Stub(tf.Module):
    """A SavedModel with the contract's serving_default signature: one fixed detection per image."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(self, images):
        b = tf.shape(images)[0]
        return {"detection_boxes": tf.tile(tf.constant([[[0.25, 0.25, 0.75, 0.75]]]), [b, 1, 1]),
                "detection_scores": tf.fill([b, 1], 0.9),
                "detection_classes": tf.zeros([b, 1], tf.float32),
                "num_detections": tf.fill([b], 1)}


@pytest.fixture(scope="module")
def stub_savedmodel(tmp_path_factory):
    root = tmp_path_factory.mktemp("export") / "stub"
    m = _Stub()
    tf.saved_model.save(m, str(root / "1"), signatures={"serving_default": m.serve})
    return str(root)


def test_evaluate_and_predict_scripts(stub_savedmodel, tmp_path):
    data_dir = str(tmp_path / "tfds")
    kd.build_shapes_dataset(data_dir, config="small")
    evaluate = load_example("evaluate")
    metrics = evaluate.main(["--model", stub_savedmodel, "--dataset", "keras_focal_shapes/small", "--split",
                             "validation", "--data-dir", data_dir, "--max-images", "6",
                             "--output-json", str(tmp_path / "m.json")])
    assert 0.0 <= metrics["AP"] < 0.5 and os.path.exists(tmp_path / "m.json")
    predict = load_example("predict")
    out = tmp_path / "pred"
    predict.main(["--model", stub_savedmodel, "--dataset", "keras_focal_shapes/small", "--split", "test",
                  "--data-dir", data_dir, "--num-images", "2", "--output-dir", str(out), "--show-ground-truth"])
    assert sorted(os.listdir(out)) == ["test_0000.png", "test_0001.png"]


def test_scripts_help():
    for name in ("evaluate", "predict"):
        with pytest.raises(SystemExit) as e:
            load_example(name).parse_args(["--help"])
        assert e.value.code == 0
