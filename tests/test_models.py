"""RetinaNet / GFL model: structure, paper defaults, loss behaviour, persistence."""

import functools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import keras_focal
from keras_focal.layers import AnchorEncoder
from keras_focal.losses import focal_loss, smooth_l1_loss
from keras_focal.models import GFLHead, RetinaNet, RetinaNetHead
from keras_focal.models.backbones import build_backbone

from _tiny import padded_targets, tiny_backbone, tiny_model


@pytest.mark.parametrize("head", ["retina", "gfl"])
def test_outputs_cover_every_anchor_for_any_image_size(head):
    model = tiny_model(head)
    for height, width in [(128, 128), (100, 150)]:
        out = model(np.zeros((2, height, width, 3), "float32"))
        expected = model.anchor_generator(height, width).shape[0]
        per_location = 9 if head == "retina" else 1
        levels = sum(math.ceil(height / 2**l) * math.ceil(width / 2**l) for l in range(3, 8))
        assert expected == levels * per_location
        assert out["class_logits"].shape == (2, expected, 3)
        assert out["box_outputs"].shape == (2, expected, 4 if head == "retina" else 4 * 17)
        assert out["class_logits"].dtype == "float32"


@pytest.mark.parametrize("head", ["retina", "gfl"])
def test_class_bias_is_the_prior_and_initial_probability_is_about_one_percent(head):
    model = tiny_model(head)
    bias = model.get_layer("class_subnet_logits").bias.numpy()
    np.testing.assert_allclose(bias, -math.log(99.0), rtol=1e-6)
    images = np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 3)).astype("float32")
    probability = tf.sigmoid(model(images)["class_logits"]).numpy().mean()
    assert 0.008 < probability < 0.012


def test_uint8_and_float_images_give_the_same_outputs():
    model = tiny_model()
    images = np.random.default_rng(1).integers(0, 256, (1, 64, 96, 3)).astype("uint8")
    a = model(images)["class_logits"]
    b = model(images.astype("float32"))["class_logits"]
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_paper_defaults_with_resnet50():
    model = RetinaNet(80)  # resnet50, retina head, 256-wide 4-conv subnets
    assert model.anchor_generator.anchors_per_location == 9
    convs = [l for l in model.layers if l.name.startswith("class_subnet_conv")]
    assert len(convs) == 4 and all(l.filters == 256 for l in convs)
    assert model.prediction_decoder.score_threshold == 0.05 and model.prediction_decoder.iou_threshold == 0.5
    assert model.prediction_decoder.pre_nms_topk == 1000 and model.prediction_decoder.max_detections == 100
    assert model.detection_head.alpha == 0.25 and model.detection_head.gamma == 2.0
    # P6 is computed from C5 (2048 channels for ResNet-50), RetinaNet Sec. 4.
    assert model.get_layer("fpn_p6").kernel.shape == (3, 3, 2048, 256)
    gfl = RetinaNet(80, backbone="resnet18", head="gfl")
    assert gfl.prediction_decoder.iou_threshold == 0.6
    assert gfl.get_layer("fpn_p6").kernel.shape == (3, 3, 256, 256)  # GFL: P6 from P5


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_named_backbones_give_c3_to_c5(name):
    features = build_backbone(name)
    c3, c4, c5 = features(np.zeros((1, 64, 64, 3), "float32"))
    assert (c3.shape[1], c4.shape[1], c5.shape[1]) == (8, 4, 2)


def test_bad_backbone_and_head_names_are_rejected():
    with pytest.raises(ValueError, match="resnet18"):
        RetinaNet(3, backbone="vgg16")
    with pytest.raises(ValueError, match="head"):
        RetinaNet(3, backbone=tiny_backbone(), head="fcos")


def test_freeze_options_freeze_stem_and_batchnorm():
    features = build_backbone("resnet18", freeze_stem=True, freeze_batchnorm=True)
    layers = {l.name: l for l in features.layers}
    assert not layers["conv1_conv"].trainable
    assert all(not l.trainable for l in features.layers if isinstance(l, keras.layers.BatchNormalization))
    assert layers["stack1_block0_1_conv"].trainable


@pytest.mark.parametrize("head", ["retina", "gfl"])
def test_loss_is_finite_without_objects_and_still_trains_negatives(head):
    model = tiny_model(head)
    model.compile(optimizer="sgd")
    images = np.random.default_rng(2).uniform(0, 255, (2, 128, 128, 3)).astype("float32")
    empty = padded_targets([[], []], [[], []])
    loss = model.compute_loss(images, empty, model(images))
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert float(model.box_loss_tracker.result()) == 0.0
    with tf.GradientTape() as tape:
        loss = model.compute_loss(images, empty, model(images, training=True))
    grad = tape.gradient(loss, model.get_layer("class_subnet_logits").bias)
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0


def test_pipeline_encoded_and_in_graph_encoded_targets_give_the_same_loss():
    model = tiny_model()
    model.compile(optimizer="sgd")
    images = np.random.default_rng(3).uniform(0, 255, (2, 128, 128, 3)).astype("float32")
    targets = padded_targets([[[0.1, 0.1, 0.5, 0.4]], [[0.2, 0.3, 0.9, 0.9], [0.0, 0.0, 0.3, 0.3]]], [[0], [1, 2]])
    outputs = model(images)
    in_graph = model.compute_loss(images, targets, outputs)
    encoded = model.anchor_encoder(targets["boxes"], targets["classes"], 128, 128)
    pipeline = model.compute_loss(images, {**targets, **encoded}, outputs)
    np.testing.assert_allclose(float(in_graph), float(pipeline), rtol=1e-6)


@pytest.mark.parametrize("head", ["retina", "gfl"])
def test_crowd_boxes_are_not_targets_when_the_model_encodes(head):
    model = tiny_model(head)
    model.compile(optimizer="sgd")
    images = np.random.default_rng(4).uniform(0, 255, (1, 128, 128, 3)).astype("float32")
    outputs = model(images)
    crowd = padded_targets([[[0.1, 0.1, 0.5, 0.4], [0.5, 0.5, 0.9, 0.9]]], [[0, 1]])
    crowd["is_crowd"] = np.array([[0, 1, 0, 0]], "int32")
    without = padded_targets([[[0.1, 0.1, 0.5, 0.4]]], [[0]])
    with_box = padded_targets([[[0.1, 0.1, 0.5, 0.4], [0.5, 0.5, 0.9, 0.9]]], [[0, 1]])
    loss_crowd = float(model.compute_loss(images, crowd, outputs))
    np.testing.assert_allclose(loss_crowd, float(model.compute_loss(images, without, outputs)), rtol=1e-6)
    assert abs(loss_crowd - float(model.compute_loss(images, with_box, outputs))) > 1e-4


def test_keras_focal_loss_gives_the_default_loss():
    """classification_loss= accepts Keras losses: keras' class-balanced focal loss is the paper's focal loss."""
    model = tiny_model()
    images = np.random.default_rng(4).uniform(0, 255, (2, 128, 128, 3)).astype("float32")
    targets = padded_targets([[[0.1, 0.1, 0.5, 0.4]], [[0.2, 0.3, 0.9, 0.9]]], [[0], [2]])
    outputs = model(images)
    model.compile(optimizer="sgd")
    default = float(model.compute_loss(images, targets, outputs))
    model.compile(optimizer="sgd", classification_loss=keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, alpha=0.25, gamma=2.0, from_logits=True))
    custom = float(model.compute_loss(images, targets, outputs))
    np.testing.assert_allclose(custom, default, rtol=1e-5)
    with pytest.raises(ValueError, match="classification_loss"):
        model.compile(optimizer="sgd", loss="mse")


def test_targets_in_the_wrong_format_are_rejected():
    model = tiny_model()
    images = np.zeros((1, 64, 64, 3), "float32")
    with pytest.raises(ValueError, match="boxes"):
        model.compute_loss(images, np.zeros((1, 4)), model(images))


@pytest.mark.parametrize("head", ["retina", "gfl"])
def test_save_and_reload_keras_file(tmp_path, head):
    model = RetinaNet(3, backbone="resnet18", head=head, fpn_width=32, head_convs=1, image_size=(64, 64))
    images = np.random.default_rng(5).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.image_size == (64, 64) and restored.head == head
    np.testing.assert_allclose(restored(images)["class_logits"], model(images)["class_logits"], atol=1e-5)


def test_predict_returns_the_contract_detections():
    model = tiny_model(score_threshold=0.0)
    images = np.random.default_rng(6).uniform(0, 255, (3, 96, 128, 3)).astype("float32")
    out = model.predict(images, batch_size=2, verbose=0)
    assert set(out) == {"detection_boxes", "detection_scores", "detection_classes", "num_detections"}
    assert out["detection_boxes"].shape == (3, 100, 4)
    assert np.all(out["detection_boxes"] >= 0) and np.all(out["detection_boxes"] <= 1)
    assert np.all(np.diff(out["detection_scores"], axis=1) <= 1e-7)


# --------------------------------------------------------------------------------------------- head objects
def _loss_batch(seed=7):
    images = np.random.default_rng(seed).uniform(0, 255, (2, 128, 128, 3)).astype("float32")
    targets = padded_targets([[[0.1, 0.1, 0.5, 0.4]], [[0.2, 0.3, 0.9, 0.9], [0.0, 0.0, 0.3, 0.3]]], [[0], [2, 1]])
    return images, targets


def _compiled_loss(model, images, targets, outputs, **losses):
    model.compile(optimizer="sgd", **losses)
    return float(model.compute_loss(images, targets, outputs))


@pytest.mark.parametrize("head, same_losses", [
    ("retina", dict(classification_loss=keras_focal.FocalLoss(alpha=0.25, gamma=2.0, from_logits=True))),
    ("retina", dict(box_loss=keras_focal.SmoothL1Loss(beta=0.11))),
    ("retina", dict(classification_loss=functools.partial(focal_loss, from_logits=True),
                    box_loss=functools.partial(smooth_l1_loss, beta=0.11))),
    ("gfl", dict(classification_loss=keras_focal.QualityFocalLoss(beta=2.0, from_logits=True))),
    ("gfl", dict(box_loss=keras_focal.GIoULoss())),
], ids=["retina-class", "retina-box", "retina-functions", "gfl-class", "gfl-box"])
def test_the_default_loss_passed_explicitly_gives_the_default_training_loss(head, same_losses):
    """A user loss is evaluated per element with its own reduction set aside, so the head's default loss passed
    as an object (whatever it does with its last axis: SmoothL1Loss sums it, FocalLoss averages it) or as a plain
    function gives exactly the default; a different setting gives a different loss."""
    model = tiny_model(head)
    images, targets = _loss_batch()
    outputs = model(images)
    default = _compiled_loss(model, images, targets, outputs)
    same = _compiled_loss(model, images, targets, outputs, **same_losses)
    np.testing.assert_allclose(same, default, rtol=1e-6)
    other = {"classification_loss": keras_focal.FocalLoss(gamma=0.0, from_logits=True),
             "box_loss": keras_focal.SmoothL1Loss(beta=0.5) if head == "retina" else keras_focal.SmoothL1Loss()}
    key = next(iter(same_losses))
    assert abs(_compiled_loss(model, images, targets, outputs, **{key: other[key]}) - default) > 1e-3


def test_probability_losses_get_probabilities():
    """A Loss with from_logits=False receives sigmoid(logits): same value up to its probability clipping."""
    model = tiny_model()
    images, targets = _loss_batch()
    outputs = model(images)
    default = _compiled_loss(model, images, targets, outputs)
    probabilities = _compiled_loss(model, images, targets, outputs,
                                   classification_loss=keras.losses.BinaryFocalCrossentropy(
                                       apply_class_balancing=True, alpha=0.25, gamma=2.0))
    np.testing.assert_allclose(probabilities, default, rtol=1e-4)
    with pytest.raises(ValueError, match="one value per element"):
        _compiled_loss(model, images, targets, outputs, box_loss=lambda y, p: ops.sum(p))


def _full_encoder(model):
    """An encoder returning every target, box deltas and matched boxes included (the model's own returns the
    class targets and matched indices, and its loss derives the rest)."""
    head = model.detection_head
    return AnchorEncoder(head.anchor_generator, assigner=head.assigner, box_coder=head.box_coder)


@pytest.mark.parametrize("head", ["retina", "gfl"])
def test_loss_from_matched_indices_equals_loss_from_full_targets(head):
    # the model's encoder gives class targets and matched indices; the loss gathers the boxes and encodes them
    model = tiny_model(head=head)
    images, targets = _loss_batch()
    outputs = model(images)
    own = _compiled_loss(model, images, targets, outputs)
    full = {**targets, **_full_encoder(model)(targets["boxes"], targets["classes"], 128, 128)}
    assert "matched_indices" in full and ("box_targets" in full and "matched_boxes" in full)
    np.testing.assert_allclose(own, float(model.compute_loss(images, full, outputs)), rtol=1e-6)
    without = {k: v for k, v in full.items() if k not in ("box_targets", "matched_boxes", "matched_indices")}
    with pytest.raises(ValueError, match="matched_indices"):
        model.compute_loss(images, without, outputs)


def test_retina_head_loss_against_numpy():
    """Focal loss over non-ignored anchors plus smooth-L1 over positives, both over the positive count (float64)."""
    model = tiny_model()
    images, targets = _loss_batch()
    outputs = model(images)
    total = _compiled_loss(model, images, targets, outputs)
    encoded = _full_encoder(model)(targets["boxes"], targets["classes"], 128, 128)
    labels = np.asarray(encoded["class_targets"])
    x = np.asarray(outputs["class_logits"], "float64")
    y = (labels[..., None] == np.arange(3)).astype("float64")
    p = 1 / (1 + np.exp(-x))
    p_t = y * p + (1 - y) * (1 - p)
    focal = -(0.25 * y + 0.75 * (1 - y)) * (1 - p_t) ** 2 * np.log(p_t)
    d = np.abs(np.asarray(outputs["box_outputs"], "float64") - np.asarray(encoded["box_targets"], "float64"))
    smooth_l1 = np.where(d < 0.11, 0.5 * d * d / 0.11, d - 0.055)
    positive = labels >= 0
    expected = (focal[labels != -2].sum() + smooth_l1[positive].sum()) / max(positive.sum(), 1)
    np.testing.assert_allclose(total, expected, rtol=1e-5)


def test_decoding_settings_have_one_source():
    """Changing a decoding setting on the model changes predict (even after a first predict) and the export."""
    from keras_focal.export.serving import DetectionServingModule

    model = tiny_model(score_threshold=0.0)
    images = np.random.default_rng(8).uniform(0, 255, (1, 128, 128, 3)).astype("float32")
    assert model.predict(images, verbose=0)["detection_scores"].shape == (1, 100)
    model.max_detections = 5
    model.score_threshold = 0.001
    assert model.prediction_decoder.max_detections == 5 and model.prediction_decoder.score_threshold == 0.001
    assert model.predict(images, verbose=0)["detection_scores"].shape == (1, 5)
    module = DetectionServingModule(model)
    served = module.serve_images(tf.constant(images.astype("uint8")))
    assert served["detection_scores"].shape == (1, 5)
    model.iou_threshold = None  # back to the head's default
    assert model.iou_threshold == 0.5
    config = model.get_config()
    assert (config["max_detections"], config["score_threshold"]) == (5, 0.001)


def test_head_objects_names_and_configs():
    backbone = tiny_backbone()
    model = RetinaNet(3, backbone=backbone, head=RetinaNetHead(num_convs=1, group_norm=True), fpn_width=32)
    assert model.head == "retina" and model.head_convs == 1
    assert isinstance(model.get_layer("class_subnet_gn0"), keras.layers.GroupNormalization)
    clone = RetinaNet.from_config(model.get_config())
    assert clone.detection_head.group_norm and clone.detection_head.get_config() == model.detection_head.get_config()
    # A configuration written before the head objects: the head by name with its arguments beside it.
    legacy = {"num_classes": 3, "backbone": "resnet18", "head": "gfl", "fpn_width": 16, "head_convs": 1,
              "image_size": [64, 64], "focal_alpha": 0.25, "focal_gamma": 2.0, "reg_max": 8,
              "iou_threshold": None}
    restored = RetinaNet.from_config(legacy)
    assert restored.head == "gfl" and restored.detection_head.reg_max == 8 and restored.iou_threshold == 0.6
    assert restored.get_layer("box_subnet_distribution").filters == 4 * 9
    assert restored.detection_head.num_convs == 1
    with pytest.raises(ValueError, match="head_convs"):
        RetinaNet(3, backbone=tiny_backbone(), head=GFLHead(), head_convs=1)
    with pytest.raises((TypeError, ValueError), match="reg_max"):  # head arguments belong to the head object
        RetinaNet(3, backbone=tiny_backbone(), head="gfl", reg_max=8)


def test_gfl_head_loss_against_numpy():
    """QFL over the positive count; GIoU (x2) and DFL (x0.25, mean of the sides) weighted by the best class score
    over the sum of those weights (mmdetection GFLHead), in float64 from the encoder's targets."""
    model = tiny_model("gfl")
    images, targets = _loss_batch()
    outputs = model(images)
    model.compile(optimizer="sgd")
    total = float(model.compute_loss(images, targets, outputs))
    encoded = _full_encoder(model)(targets["boxes"], targets["classes"], 128, 128)
    labels = np.asarray(encoded["class_targets"])
    positive = labels >= 0
    anchors = np.asarray(model.anchor_generator(128, 128), "float64")
    unit = np.asarray(model.anchor_generator.anchor_strides(128, 128), "float64") / 128.0  # one stride, square
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2
    logits = np.asarray(outputs["box_outputs"], "float64").reshape(2, -1, 4, 17)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    left, top, right, bottom = np.moveaxis((probabilities * np.arange(17)).sum(-1), -1, 0)
    predicted = np.stack([centre[:, 0] - top * unit, centre[:, 1] - left * unit,
                          centre[:, 0] + bottom * unit, centre[:, 1] + right * unit], -1)
    matched = np.asarray(encoded["matched_boxes"], "float64")[positive]
    predicted = predicted[positive]

    def areas(b):
        return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)

    inter = areas(np.concatenate([np.maximum(matched[:, :2], predicted[:, :2]),
                                  np.minimum(matched[:, 2:], predicted[:, 2:])], -1))
    union = areas(matched) + areas(predicted) - inter
    enclosure = areas(np.concatenate([np.minimum(matched[:, :2], predicted[:, :2]),
                                      np.maximum(matched[:, 2:], predicted[:, 2:])], -1))
    iou = inter / union
    giou = 1 - (iou - (enclosure - union) / enclosure)

    x = np.asarray(outputs["class_logits"], "float64")
    sigma = 1 / (1 + np.exp(-x))
    quality = np.zeros_like(x)
    quality[positive, labels[positive]] = iou
    qfl = np.abs(quality - sigma) ** 2 * -(quality * np.log(sigma) + (1 - quality) * np.log(1 - sigma))
    weight = sigma.max(-1)[positive]

    a = centre[np.nonzero(positive)[1]]
    u = unit[np.nonzero(positive)[1]]
    distances = np.stack([a[:, 1] - matched[:, 1], a[:, 0] - matched[:, 0],
                          matched[:, 3] - a[:, 1], matched[:, 2] - a[:, 0]], -1) / u[:, None]
    distances = np.clip(distances, 0, 16 - 0.1)
    lower = np.floor(distances).astype(int)
    log_p = np.log(probabilities[positive])
    side = np.arange(4)[None]
    rows = np.arange(len(lower))[:, None]
    dfl = -((lower + 1 - distances) * log_p[rows, side, lower] + (distances - lower) * log_p[rows, side, lower + 1])
    expected = (qfl.sum() / max(positive.sum(), 1)
                + (2.0 * (giou * weight).sum() + 0.25 * (dfl.mean(-1) * weight).sum()) / max(weight.sum(), 1))
    assert positive.sum() > 0
    np.testing.assert_allclose(total, expected, rtol=1e-5)
