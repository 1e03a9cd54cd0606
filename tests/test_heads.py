"""Open heads: the registry, a head written outside the package, a dynamic assigner's train-step path, and the
detections of models saved before heads owned their assigner, box coder and scores."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from _tiny import padded_targets, tiny_backbone
from keras_focal.assigners import ATSSAssigner, IoUAssigner
from keras_focal.layers import AnchorEncoder, AnchorGenerator
from keras_focal.models import HEADS, RetinaNet, RetinaNetHead, get_head, register_head

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "heads")


# ------------------------------------------------------------------------ a head written outside the package
@register_head("test_square_atss")
class SquareATSSHead(RetinaNetHead):
    """RetinaNet's subnets on one square anchor per location, trained with ATSS (top 5), scores sharpened."""

    def __init__(self, sharpness=2.0, **kwargs):
        super().__init__(**kwargs)
        self.sharpness = float(sharpness)

    def default_anchor_generator(self):
        return AnchorGenerator(anchor_size=8.0, num_scales=1, aspect_ratios=(1.0,))

    def default_assigner(self):
        return ATSSAssigner(topk=5)

    def scores(self, outputs):
        return ops.sigmoid(self.sharpness * ops.cast(outputs["class_logits"], "float32"))

    def get_config(self):
        return {**super().get_config(), "sharpness": self.sharpness}


def _batch(size=64):
    images = np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype("uint8")
    targets = padded_targets([[[0.1, 0.1, 0.6, 0.5], [0.3, 0.2, 0.9, 0.9]], [[0.05, 0.5, 0.4, 0.95]]], [[0, 2], [1]])
    return images, targets


def test_registry_names_builds_and_refuses():
    assert {"retina", "gfl", "test_square_atss"} <= set(HEADS)
    assert HEADS["test_square_atss"] is SquareATSSHead and SquareATSSHead.name == "test_square_atss"
    head = get_head("test_square_atss", sharpness=3.0)
    assert isinstance(head.assigner, ATSSAssigner) and head.sharpness == 3.0
    with pytest.raises(ValueError, match="registered"):
        get_head("fcos")
    with pytest.raises(ValueError, match="already registered"):
        register_head("retina")(type("Other", (RetinaNetHead,), {}))
    with pytest.raises(TypeError, match="DenseHead"):
        register_head("not_a_head")(object)
    with pytest.raises(ValueError, match="set them on"):
        get_head(RetinaNetHead(), alpha=0.5)
    # a head whose loss reads more than its assigner gives refuses it
    needy = type("Needy", (RetinaNetHead,), {"assignment_keys": ("alignment",)})
    with pytest.raises(ValueError, match="alignment"):
        needy()
    # the ATSS paper's RetinaNet: RetinaNet's anchors, head and loss, ATSS targets
    atss = RetinaNetHead(assigner=ATSSAssigner())
    assert atss.anchor_generator.anchors_per_location == 9
    assert isinstance(atss.anchor_encoder().assigner, ATSSAssigner)
    config = keras.saving.serialize_keras_object(atss)
    assert isinstance(keras.saving.deserialize_keras_object(config).assigner, ATSSAssigner)


def test_a_head_written_outside_the_package_trains_predicts_exports_and_reloads(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from keras_focal.export import export_saved_model, export_tflite

    images, targets = _batch()
    model = RetinaNet(3, backbone=tiny_backbone(), head="test_square_atss", fpn_width=16, head_convs=1,
                      image_size=(64, 64), score_threshold=0.0, max_detections=10)
    assert model.head == "test_square_atss" and model.anchor_generator.anchors_per_location == 1
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(images, targets, batch_size=2, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and history["box_loss"][0] > 0
    assert any(np.abs(w.numpy() - b).max() > 0 for w, b in zip(model.trainable_weights, before))

    detections = model.predict(images, verbose=0)
    assert set(detections) == {"detection_boxes", "detection_scores", "detection_classes", "num_detections"}
    assert detections["detection_boxes"].shape == (2, 10, 4) and np.all(detections["num_detections"] == 10)
    # the head's own score function is what the decoder ranks
    outputs = model(images)
    expected = np.sort(1 / (1 + np.exp(-2.0 * outputs["class_logits"].numpy().reshape(2, -1))), axis=1)[:, ::-1]
    np.testing.assert_allclose(detections["detection_scores"][:, 0], expected[:, 0], rtol=1e-5)

    path = str(tmp_path / "custom.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.detection_head, SquareATSSHead) and restored.detection_head.assigner.topk == 5
    again = restored.predict(images, verbose=0)
    for key in detections:
        np.testing.assert_allclose(again[key], detections[key], atol=1e-5)

    served = tf.saved_model.load(export_saved_model(model, str(tmp_path / "saved")))
    out = served.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_array_equal(out["num_detections"].numpy(), detections["num_detections"])
    np.testing.assert_allclose(out["detection_scores"].numpy(), detections["detection_scores"], atol=1e-5)

    interpreter = Interpreter(model_path=export_tflite(model, str(tmp_path / "custom.tflite")))
    runner = interpreter.get_signature_runner("serving_default")
    lite = runner(images=images[:1])
    assert int(np.ravel(lite["num_detections"])[0]) == int(detections["num_detections"][0])
    np.testing.assert_allclose(lite["detection_scores"][0], detections["detection_scores"][0], atol=1e-4)


# ------------------------------------------------------------------------------ a dynamic assigner in the step
class PredictionAwareIoU(IoUAssigner):
    """IoU assignment that also reads the predictions (as a task-aligned assigner does): it records what it gets
    and returns the best predicted score of every anchor as an extra entry."""

    needs_predictions = True
    assignment_keys = ("best_score",)
    seen = []

    def assign(self, anchor_generator, boxes, classes, image_height, image_width, predictions=None):
        type(self).seen.append({k: tuple(v.shape) for k, v in predictions.items()})
        out = super().assign(anchor_generator, boxes, classes, image_height, image_width)
        out["best_score"] = ops.max(predictions["scores"], axis=-1)
        return out


def test_a_dynamic_assigner_runs_in_the_train_step_with_the_predictions():
    images, targets = _batch()
    model = RetinaNet(3, backbone=tiny_backbone(), head=RetinaNetHead(num_convs=1, assigner=PredictionAwareIoU()),
                      fpn_width=16, image_size=(64, 64))
    head = model.detection_head
    assert model.anchor_encoder is None  # it cannot run in tf.data
    with pytest.raises(ValueError, match="train step"):
        AnchorEncoder(head.anchor_generator, assigner=PredictionAwareIoU())
    outputs = model(images)
    assigned = head.assign_targets(targets, outputs, 64, 64)
    anchors = head.anchor_generator.num_anchors(64, 64)
    assert PredictionAwareIoU.seen[-1] == {"scores": (2, anchors, 3), "boxes": (2, anchors, 4)}
    np.testing.assert_allclose(assigned["best_score"], head.scores(outputs).numpy().max(-1), rtol=1e-6)
    # the same assignment as the static IoU assigner in the pipeline, so the same loss
    static = AnchorEncoder(head.anchor_generator, assigner=IoUAssigner(), outputs=("class_targets", "matched_indices"))
    encoded = {**targets, **static(targets["boxes"], targets["classes"], 64, 64)}
    np.testing.assert_array_equal(assigned["class_targets"], encoded["class_targets"])
    model.compile(optimizer="sgd")
    np.testing.assert_allclose(float(model.compute_loss(images, targets, outputs)),
                               float(model.compute_loss(images, encoded, outputs)), rtol=1e-6)
    history = model.fit(images, targets, batch_size=2, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


# ------------------------------------------------------------------------------------- saved before the change
@pytest.mark.parametrize("head", ["retina", "gfl"])
def test_models_saved_before_the_head_objects_give_the_same_detections(head):
    # Written by the code before heads owned their assigner, box coder and scores (tiny backbone, 128 px, three
    # SGD steps, score threshold 0.001), with its detections of the images beside it.
    model = keras.saving.load_model(os.path.join(FIXTURES, f"{head}.keras"))
    images = np.load(os.path.join(FIXTURES, "images.npz"))["images"]
    expected = np.load(os.path.join(FIXTURES, f"{head}_detections.npz"))
    got = model.predict(images, verbose=0)
    assert int(expected["num_detections"].min()) > 0
    np.testing.assert_array_equal(got["num_detections"], expected["num_detections"])
    np.testing.assert_array_equal(got["detection_classes"], expected["detection_classes"])
    for key in ("detection_boxes", "detection_scores"):
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-5)
