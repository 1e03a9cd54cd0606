import keras
import numpy as np
import tensorflow as tf

from keras_focal.diagnostics import (
    MatchedGroundTruthFraction,
    MatchingStatisticsCallback,
    PositiveAnchorsPerImage,
    anchor_coverage,
    best_anchor_iou,
    format_matching_statistics,
    matching_statistics,
)
from keras_focal.assigners import IoUAssigner
from keras_focal.layers import AnchorEncoder, AnchorGenerator

# two levels of non-overlapping tiles on 256 x 256: P5 = 32-px tiles (8 x 8), P6 = 64-px tiles (4 x 4)
GEN = AnchorGenerator(min_level=5, max_level=6, anchor_size=1.0, num_scales=1, aspect_ratios=(1.0,))
ENC = AnchorEncoder(GEN, assigner=IoUAssigner(low_quality_matches=False))
BOXES = np.array(
    [[0, 0, 64, 64], [128, 128, 160, 160], [200, 200, 210, 210], [-256, -256, -256, -256]], "float32"
) / 256  # A on P6 (IoU 1), B on P5 (IoU 1), C too small for any anchor (best IoU 100/1024), padding
CLASSES = np.array([0, 1, 2, -1], "int32")


def test_matching_statistics_by_hand():
    t = ENC(BOXES[None], CLASSES[None], 256, 256)
    s = matching_statistics(t["class_targets"], t["matched_indices"], BOXES[None], CLASSES[None], GEN, 256, 256)
    np.testing.assert_allclose(s["matched_fraction_per_level"], [1 / 3, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(float(s["matched_fraction"]), 2 / 3, atol=1e-6)
    np.testing.assert_allclose(s["positives_per_image"], [2.0])
    assert int(s["num_ground_truth"]) == 3
    np.testing.assert_array_equal(s["gt_matched"], [[True, True, False, False]])
    np.testing.assert_array_equal(s["gt_matched_per_level"][0, :2], [[False, True], [True, False]])
    report = format_matching_statistics(s, GEN)
    assert "P5" in report and "66.7%" in report
    np.testing.assert_allclose(best_anchor_iou(BOXES, CLASSES, GEN, 256, 256), [1, 1, 100 / 1024, -1], atol=1e-5)


def test_no_boxes_is_fully_matched_and_finite():
    b = -np.ones((2, 3, 4), "float32")
    c = -np.ones((2, 3), "int32")
    t = ENC(b, c, 256, 256)
    s = matching_statistics(t["class_targets"], t["matched_indices"], b, c, GEN, 256, 256)
    assert float(s["matched_fraction"]) == 1.0 and int(s["num_ground_truth"]) == 0
    np.testing.assert_array_equal(s["positives_per_image"], [0, 0])


def test_metrics_and_callback():
    y = {"boxes": np.stack([BOXES, BOXES]), "classes": np.stack([CLASSES, CLASSES])}
    pos = PositiveAnchorsPerImage(ENC, image_size=(256, 256))
    pos.update_state(y)
    assert float(pos.result()) == 2.0
    frac = MatchedGroundTruthFraction(ENC, image_size=(256, 256))
    frac.update_state(y)
    np.testing.assert_allclose(float(frac.result()), 2 / 3, atol=1e-6)
    p5 = MatchedGroundTruthFraction(ENC, image_size=(256, 256), level=5)

    @tf.function
    def update(boxes, classes):
        p5.update_state({"boxes": boxes, "classes": classes})

    update(y["boxes"], y["classes"])
    np.testing.assert_allclose(float(p5.result()), 1 / 3, atol=1e-6)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(p5))
    assert clone.level == 5 and clone.image_size == (256, 256)

    ds = tf.data.Dataset.from_tensors((np.zeros((2, 8, 8, 3), "uint8"), y)).repeat(2)
    cov = anchor_coverage(ds, ENC, (256, 256))
    assert cov["num_ground_truth"] == 12
    np.testing.assert_allclose(cov["matched_fraction_per_level"], [1 / 3, 1 / 3], atol=1e-6)
    assert len(cov["best_anchor_iou"]) == 12 and len(cov["positives_per_image"]) == 4
    cb = MatchingStatisticsCallback(ds, ENC, (256, 256), verbose=0)
    cb.on_train_begin()
    logs = {}
    cb.on_epoch_end(0, logs)
    np.testing.assert_allclose(logs["matched_gt_fraction"], 2 / 3, atol=1e-6)
    np.testing.assert_allclose(logs["matched_gt_fraction_p6"], 1 / 3, atol=1e-6)
