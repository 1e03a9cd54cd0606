"""COCOeval wrapper, evaluate_model and the callback."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_focal import evaluation as ke


def _random_gt(rng, n_images=12, num_classes=3):
    gts = []
    for i in range(n_images):
        m = int(rng.integers(0, 6))  # includes images without ground truth
        yx = rng.uniform(0, 0.6, size=(m, 2))
        hw = rng.uniform(0.05, 0.4, size=(m, 2))
        gts.append({"boxes": np.concatenate([yx, yx + hw], 1).astype(np.float32),
                    "classes": rng.integers(0, num_classes, size=m).astype(np.int32),
                    "image_size": (int(rng.integers(100, 700)), int(rng.integers(100, 700)))})
    return gts


def _as_detections(gts, shift=0.0, class_offset=0, num_classes=3):
    dets = []
    for g in gts:
        boxes = g["boxes"].copy()
        boxes[:, [1, 3]] += shift
        dets.append({"detection_boxes": np.clip(boxes, 0, 1),
                     "detection_scores": np.linspace(0.9, 0.5, len(boxes)).astype(np.float32),
                     "detection_classes": (g["classes"] + class_offset) % num_classes,
                     "num_detections": len(boxes)})
    return dets


def test_ground_truth_as_detections_gives_ap_one():
    gts = _random_gt(np.random.default_rng(0))
    metrics = ke.evaluate_detections(gts, _as_detections(gts), num_classes=3)
    for key in ("AP", "AP50", "AP75", "AR100"):
        assert metrics[key] == pytest.approx(1.0), key
    assert all(isinstance(v, float) for v in metrics.values())


def test_wrong_detections_score_clearly_less():
    gts = _random_gt(np.random.default_rng(1))
    shifted = ke.evaluate_detections(gts, _as_detections(gts, shift=0.08), num_classes=3)
    wrong_class = ke.evaluate_detections(gts, _as_detections(gts, class_offset=1), num_classes=3)
    assert shifted["AP"] < 0.8 and shifted["AP75"] < shifted["AP50"] + 1e-9
    assert wrong_class["AP"] < 0.05 and wrong_class["AP50"] < 0.05


def test_padding_and_num_detections_respected():
    gt = {"boxes": np.array([[0.1, 0.1, 0.5, 0.5], [-1, -1, -1, -1]], np.float32),
          "classes": np.array([1, -1]), "image_size": (200, 300)}
    det = {"detection_boxes": np.array([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]], np.float32),
           "detection_scores": np.array([0.9, 0.95], np.float32),
           "detection_classes": np.array([1.0, 0.0], np.float32), "num_detections": 1}
    assert ke.evaluate_detections([gt], [det], num_classes=2)["AP"] == pytest.approx(1.0)
    det["num_detections"] = 2  # the higher-scored false positive now counts
    assert ke.evaluate_detections([gt], [det], num_classes=2)["AP"] == pytest.approx(1.0)  # other class
    det["detection_classes"] = np.array([1, 1])
    assert ke.evaluate_detections([gt], [det], num_classes=2)["AP"] < 0.6


def test_empty_cases_are_sane():
    gts = _random_gt(np.random.default_rng(2))
    empty = [{"detection_boxes": np.zeros((0, 4)), "detection_scores": np.zeros((0,)),
              "detection_classes": np.zeros((0,))} for _ in gts]
    m = ke.evaluate_detections(gts, empty, num_classes=3)
    assert m["AP"] == 0.0 and m["AP50"] == 0.0
    no_gt = [{"boxes": np.zeros((0, 4)), "classes": np.zeros((0,)), "image_size": (64, 64)}] * 3
    m = ke.evaluate_detections(no_gt, _as_detections(gts[:3]), num_classes=3)
    assert all(isinstance(v, float) and (math.isnan(v) or 0 <= v <= 1) for v in m.values())
    assert math.isnan(m["AP"])  # undefined without any ground truth: NaN, never -1


def test_crowd_boxes_are_ignored_regions():
    gt = {"boxes": np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]], np.float32),
          "classes": np.array([0, 0]), "is_crowd": np.array([0, 1]), "image_size": (100, 100)}
    det = {"detection_boxes": np.array([[0.1, 0.1, 0.4, 0.4], [0.55, 0.55, 0.85, 0.85]], np.float32),
           "detection_scores": np.array([0.5, 0.9]), "detection_classes": np.array([0, 0])}
    assert ke.evaluate_detections([gt], [det], num_classes=1)["AP"] == pytest.approx(1.0)


def test_pixel_sizes_drive_area_ranges():
    # The same normalized box is "small" in a 100 px image and "large" in a 1000 px one.
    box = np.array([[0.1, 0.1, 0.2, 0.2]], np.float32)
    det = {"detection_boxes": box, "detection_scores": np.array([0.9]), "detection_classes": np.array([0])}
    small = ke.evaluate_detections([{"boxes": box, "classes": np.array([0]), "image_size": (100, 100)}], [det],
                                   num_classes=1)
    large = ke.evaluate_detections([{"boxes": box, "classes": np.array([0]), "image_size": (1000, 1000)}], [det],
                                   num_classes=1)
    assert small["APs"] == pytest.approx(1.0) and math.isnan(small["APl"])
    assert large["APl"] == pytest.approx(1.0) and math.isnan(large["APs"])


class OracleModel(keras.Model):
    """Stand-in detector: returns the ground truth it was given (looked up by image content)."""

    def __init__(self, table, num_classes):
        super().__init__(name="oracle")
        self.table = table
        self.num_classes = num_classes
        self.image_size = (32, 32)
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        return self.dense(x)

    def detect(self, images):
        out = {"detection_boxes": [], "detection_scores": [], "detection_classes": [], "num_detections": []}
        for im in images.numpy():
            boxes, classes = self.table[int(round(float(im[0, 0, 0])))]
            n = len(classes)
            pad = 5 - n
            out["detection_boxes"].append(np.concatenate([boxes, np.zeros((pad, 4))]))
            out["detection_scores"].append(np.concatenate([np.full(n, 0.9), np.zeros(pad)]))
            out["detection_classes"].append(np.concatenate([classes, np.zeros(pad)]))
            out["num_detections"].append(n)
        return {k: np.asarray(v) for k, v in out.items()}


def _oracle_data(n=6):
    rng = np.random.default_rng(3)
    table, examples = {}, []
    for i in range(n):
        m = i % 4
        yx = rng.uniform(0, 0.5, size=(m, 2))
        boxes = np.concatenate([yx, yx + 0.3], 1).astype(np.float32)
        classes = rng.integers(0, 2, size=m).astype(np.int32)
        table[i * 10] = (boxes, classes)
        examples.append((np.full((40 + i, 30, 3), i * 10, np.uint8), boxes, classes))
    ds = tf.data.Dataset.from_generator(
        lambda: ((im, {"boxes": b, "classes": c}) for im, b, c in examples),
        output_signature=(tf.TensorSpec([None, None, 3], tf.uint8),
                          {"boxes": tf.TensorSpec([None, 4], tf.float32), "classes": tf.TensorSpec([None], tf.int32)}))
    return table, ds


def test_evaluate_model_batched_and_unbatched():
    from keras_focal.data import make_dataset

    table, ds = _oracle_data()
    model = OracleModel(table, num_classes=2)
    m1 = ke.evaluate_model(model, ds, batch_size=4)  # unbatched: true image sizes, resized to model.image_size
    assert m1["AP"] == pytest.approx(1.0)
    m2, ev = ke.evaluate_model(model, make_dataset(ds, image_size=(32, 32), batch_size=4), return_evaluator=True)
    assert m2["AP"] == pytest.approx(1.0) and ev.num_images == 6
    assert "Average Precision" in ev.table


def test_callback_logs_every_n_epochs(capsys):
    from keras_focal.data import make_dataset

    table, ds = _oracle_data()
    model = OracleModel(table, num_classes=2)
    model.compile(optimizer="sgd", loss="mse")
    cb = ke.COCOEvalCallback(make_dataset(ds, image_size=(32, 32), batch_size=3), every_n_epochs=2, verbose=1)
    history = model.fit(np.zeros((4, 3), np.float32), np.zeros((4, 1), np.float32), epochs=3, verbose=0,
                        callbacks=[cb])
    assert [e for e, _ in cb.history] == [1, 2]  # epoch 2, then the last epoch
    assert history.history["val_AP"][-1] == pytest.approx(1.0)
    assert "val_AP50" in capsys.readouterr().out
