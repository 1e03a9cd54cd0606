"""The TOOD head: its score, box alignment and loss against float64 NumPy references written from the paper (Feng et
al. 2021, Eq. 4-5, Sec. 3.2) and mmdetection's `tood_head.py`; the warm-up phase from the restored step counter
across a resume; the export round trip."""

import numpy as np
import pytest

import keras
import tensorflow as tf

from _tiny import padded_targets, tiny_backbone
from keras_focal.models.heads.tood import TOODHead


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _tiny_tood(**head_kwargs):
    from keras_focal.models import RetinaNet

    head = TOODHead(num_convs=2, **head_kwargs)
    return RetinaNet(3, backbone=tiny_backbone(), head=head, fpn_width=16, image_size=(64, 64))


# ----------------------------------------------------------------------------------------------- score
def test_score_is_the_geometric_mean_of_the_sigmoids():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (2, 7, 3))
    prob = rng.normal(0, 4, (2, 7, 1))
    got = TOODHead().scores({"class_logits": logits.astype("float32"), "alignment_logits": prob.astype("float32")})
    np.testing.assert_allclose(np.asarray(got), np.sqrt(_sigmoid(logits) * _sigmoid(prob)), rtol=1e-5)
    # finite gradient where a sigmoid underflows
    x = tf.Variable(np.full((1, 1, 1), -200.0, "float32"))
    with tf.GradientTape() as tape:
        s = TOODHead().scores({"class_logits": x, "alignment_logits": x})
    assert np.isfinite(tape.gradient(s, x).numpy()).all()


# ------------------------------------------------------------------------------------------ box alignment
def _bilinear_reference(distances, offsets, center_offset=0.5):
    """Eq. 5 one value at a time: side k of cell (i, j), as an absolute coordinate, read at (i + dy_k, j + dx_k)
    from the four cells around it, zero outside; crossed boxes keep the unsampled box."""
    b_, h, w, _ = distances.shape
    out = np.zeros_like(distances, dtype=np.float64)
    for b in range(b_):
        box = np.zeros((h, w, 4))
        for i in range(h):
            for j in range(w):
                left, top, right, bottom = distances[b, i, j]
                cx, cy = j + center_offset, i + center_offset
                box[i, j] = [cx - left, cy - top, cx + right, cy + bottom]
        for i in range(h):
            for j in range(w):
                sampled = np.zeros(4)
                for k in range(4):
                    y, x = i + offsets[b, i, j, 2 * k], j + offsets[b, i, j, 2 * k + 1]
                    y0, x0 = int(np.floor(y)), int(np.floor(x))
                    for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                        if 0 <= yy < h and 0 <= xx < w:
                            sampled[k] += (1 - abs(y - yy)) * (1 - abs(x - xx)) * box[yy, xx, k]
                if sampled[0] > sampled[2] or sampled[1] > sampled[3]:
                    sampled = box[i, j]
                cx, cy = j + center_offset, i + center_offset
                out[b, i, j] = [cx - sampled[0], cy - sampled[1], sampled[2] - cx, sampled[3] - cy]
    return out


def test_box_alignment_matches_bilinear_reference():
    from keras_focal.models.heads.tood import BoxAlignment

    rng = np.random.default_rng(1)
    distances = rng.uniform(0.2, 3.0, (2, 5, 6, 4))
    offsets = rng.normal(0, 1.5, (2, 5, 6, 8))  # some samples fall outside the map, some boxes cross
    layer = BoxAlignment()
    got = np.asarray(layer(distances.astype("float32"), offsets.astype("float32")))
    np.testing.assert_allclose(got, _bilinear_reference(distances, offsets), atol=2e-5)
    # zero offsets: the identity (how the head starts)
    same = np.asarray(layer(distances.astype("float32"), np.zeros_like(offsets, "float32")))
    np.testing.assert_allclose(same, distances, atol=1e-5)
    # the reference is sharp: another centre offset differs where samples reach past the border
    assert not np.allclose(got, _bilinear_reference(distances, offsets, center_offset=0.0), atol=1e-3)


# ------------------------------------------------------------------------------------------------ loss
def _giou(a, b):
    ih = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    iw = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return 1.0 - (inter / union - (hull - union) / hull)


def _loss_reference(anchors, strides, h, w, outputs, targets, warmup, beta=2.0, giou_weight=2.0, alpha=0.25,
                    gamma=2.0):
    """float64, one anchor at a time (mmdetection `TOODHead.loss_by_feat_single`, batch sums, clamp at 1)."""
    logits = outputs["class_logits"].astype(np.float64)
    prob = outputs["alignment_logits"].astype(np.float64)
    dist = outputs["box_outputs"].astype(np.float64)
    p = np.sqrt(_sigmoid(logits) * _sigmoid(prob))  # Eq. 4
    cls_sum = box_sum = cls_norm = box_norm = 0.0
    for b in range(logits.shape[0]):
        for a in range(logits.shape[1]):
            k = targets["class_targets"][b, a]
            t = targets["alignment"][b, a] if k >= 0 else 0.0
            for c in range(logits.shape[2]):
                y = (1.0 if warmup else t) if c == k else 0.0
                q = p[b, a, c]
                bce = -(y * np.log(q) + (1 - y) * np.log(1 - q))
                if warmup:  # focal loss on the score (mmdetection `initial_loss_cls`, activated)
                    pt = q if y == 1 else 1 - q
                    cls_sum += (alpha if y == 1 else 1 - alpha) * (1 - pt) ** gamma * bce
                else:  # QFL against t_hat
                    cls_sum += abs(y - q) ** beta * bce
            if k < 0:
                continue
            g = targets["boxes"][b, targets["matched_indices"][b, a]].astype(np.float64)
            cy, cx = (anchors[a, 0] + anchors[a, 2]) / 2, (anchors[a, 1] + anchors[a, 3]) / 2
            sy, sx = strides[a] / h, strides[a] / w
            l_, t_, r_, b_ = dist[b, a]
            pred = [cy - t_ * sy, cx - l_ * sx, cy + b_ * sy, cx + r_ * sx]
            if warmup:  # centerness of the anchor centre in its box
                lr = sorted([cx - g[1], g[3] - cx])
                tb = sorted([cy - g[0], g[2] - cy])
                weight = np.sqrt(lr[0] / lr[1] * tb[0] / tb[1])
                cls_norm += 1.0
            else:
                weight = t
                cls_norm += t
            box_sum += weight * _giou(g, pred)
            box_norm += weight
    return cls_sum / max(cls_norm, 1.0), giou_weight * box_sum / max(box_norm, 1.0)


def _loss_case(seed=0, h=32, w=48):
    head = TOODHead()
    anchors = np.asarray(head.anchor_generator(h, w), np.float64)
    strides = np.asarray(head.anchor_generator.anchor_strides(h, w), np.float64)
    a = len(anchors)
    rng = np.random.default_rng(seed)
    outputs = {"class_logits": rng.normal(-2, 2, (2, a, 3)).astype("float32"),
               "alignment_logits": rng.normal(0, 2, (2, a, 1)).astype("float32"),
               "box_outputs": rng.uniform(0.3, 3.0, (2, a, 4)).astype("float32")}
    targets = padded_targets([[[0.1, 0.1, 0.9, 0.7], [0.3, 0.5, 0.8, 0.95]], [[0.0, 0.0, 0.6, 0.6]]],
                             [[2, 0], [1]], max_boxes=3)
    # a handful of positive anchors whose centres lie inside their boxes
    c = (anchors[:, :2] + anchors[:, 2:]) / 2
    index = np.full((2, a), -1, "int32")
    for bi, rows in ((0, (0, 1)), (1, (0,))):
        for m in rows:
            g = targets["boxes"][bi, m]
            inside = np.nonzero((c[:, 0] > g[0]) & (c[:, 0] < g[2]) & (c[:, 1] > g[1]) & (c[:, 1] < g[3])
                                & (index[bi] < 0))[0][:3]
            index[bi, inside] = m
    classes = np.where(index >= 0, np.take_along_axis(targets["classes"], np.maximum(index, 0), 1), -1)
    alignment = np.where(index >= 0, rng.uniform(0.05, 0.9, (2, a)), 0.0).astype("float32")
    targets.update(class_targets=classes.astype("int32"), matched_indices=index, alignment=alignment)
    return head, anchors, strides, h, w, outputs, targets


@pytest.mark.parametrize("warmup", [False, True])
def test_loss_matches_reference(warmup):
    head, anchors, strides, h, w, outputs, targets = _loss_case()
    assert (targets["class_targets"] >= 0).sum() == 9
    got = head.loss({**targets, "warmup": tf.constant(warmup)}, outputs, h, w)
    expected = _loss_reference(anchors, strides, h, w, outputs, targets, warmup)
    np.testing.assert_allclose([float(v) for v in got], expected, rtol=2e-5)
    # the reference can fail: the other phase, or GIoU weight 1, differ
    other = _loss_reference(anchors, strides, h, w, outputs, targets, not warmup)
    assert not np.allclose([float(v) for v in got], other, rtol=1e-3)
    wrong = _loss_reference(anchors, strides, h, w, outputs, targets, warmup, giou_weight=1.0)
    assert not np.isclose(float(got[1]), wrong[1], rtol=1e-3)


# ----------------------------------------------------------------------------------- warm-up and resume
def test_warmup_steps_from_the_fraction():
    assert TOODHead().warmup_steps == 0  # no total_steps: task-aligned from the first step
    assert TOODHead(total_steps=12000).warmup_steps == 4000  # mmdetection: 4 of 12 epochs
    assert TOODHead(total_steps=10, warmup_fraction=0.25).warmup_steps == 2  # round(2.5), to even
    with pytest.raises(ValueError, match="warmup_fraction"):
        TOODHead(warmup_fraction=1.5)
    with pytest.raises(ValueError, match="one anchor per location"):
        from keras_focal.layers import AnchorGenerator

        TOODHead(anchor_generator=AnchorGenerator())
    with pytest.raises(ValueError, match="static"):
        from keras_focal.assigners.task_aligned import TaskAlignedAssigner

        TOODHead(warmup_assigner=TaskAlignedAssigner())


def _batch():
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    targets = padded_targets([[[0.1, 0.1, 0.5, 0.6], [0.05, 0.6, 0.12, 0.66]], [[0.3, 0.3, 0.9, 0.8]]],
                             [[1, 2], [0]])
    return images, targets


def test_resume_mid_warmup_continues_the_phases(tmp_path):
    """Kill after step 1 of 2 warm-up steps and resume from the checkpoint in a new model: the phases follow the
    restored step counter, so the resumed run ends with the weights of the run that went on uninterrupted."""
    from keras_focal.training import DistributedTrainer

    images, targets = _batch()
    dataset = tf.data.Dataset.from_tensors((images, targets)).repeat()

    def build(initial=None):
        model = _tiny_tood(total_steps=4, warmup_fraction=0.5)
        model.compile(optimizer=keras.optimizers.SGD(0.01))
        if initial is not None:
            model.set_weights(initial)
        return model

    straight = build()
    initial = straight.get_weights()
    trainer = DistributedTrainer(straight)
    trainer.fit(dataset, epochs=1, steps_per_epoch=1, model_dir=str(tmp_path), verbose=0)  # checkpoint at step 1
    resumed = build(initial)
    DistributedTrainer(resumed).fit(dataset, epochs=3, steps_per_epoch=1, model_dir=str(tmp_path), verbose=0)
    trainer.fit(dataset, epochs=3, steps_per_epoch=1, initial_epoch=1, verbose=0)  # the uninterrupted run
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == 3
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)

    # the phase is the step counter's: warm-up below step 2, task-aligned from it
    head = resumed.detection_head
    outputs = resumed(images)
    phases = [bool(head.assign_targets(targets, outputs, 64, 64, step=tf.constant(s, tf.int64))["warmup"])
              for s in range(4)]
    assert phases == [True, True, False, False]
    # the two phases train differently: the test can fail (the weights moved by more than the tolerance)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(initial, resumed.get_weights())) > 1e-4


# ------------------------------------------------------------------------------------------------ export
def test_export_round_trip_equals_predict(tmp_path):
    import keras_focal.export
    from keras_focal.export import TFLiteDetector, export_tflite

    keras.utils.set_random_seed(3)
    model = _tiny_tood()
    model.score_threshold = 0.0
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    expected = {k: np.asarray(v) for k, v in model.predict(images.astype("float32"), verbose=0).items()}
    assert int(expected["num_detections"].min()) > 0, "nothing to compare"

    version_dir = keras_focal.export.export_saved_model(model, str(tmp_path / "tood"))
    served = tf.saved_model.load(version_dir).signatures["serving_default"](images=tf.constant(images))
    tflite = TFLiteDetector(export_tflite(model, str(tmp_path / "tood.tflite")))(images)
    for got in ({k: v.numpy() for k, v in served.items()}, tflite):
        np.testing.assert_array_equal(got["num_detections"], expected["num_detections"])
        np.testing.assert_array_equal(got["detection_classes"], expected["detection_classes"])
        np.testing.assert_allclose(got["detection_scores"], expected["detection_scores"], atol=1e-4)
        np.testing.assert_allclose(got["detection_boxes"], expected["detection_boxes"], atol=1e-4)


def test_config_round_trip_and_registry(tmp_path):
    from keras_focal.models.heads import get_head

    head = get_head("tood", num_convs=3, box_alignment=False, total_steps=90)
    assert isinstance(head, TOODHead) and head.name == "tood" and head.nms_iou_threshold == 0.6
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert again.get_config() == head.get_config() and again.warmup_steps == 30
