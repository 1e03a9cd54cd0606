"""The assigners (keras_focal.assigners): IoU and ATSS against float64 NumPy references, hand cases, and their grid
paths (static image size) against their dense paths (dynamic size), bit for bit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from _layers_refs import random_ground_truth, ref_assign_atss, ref_assign_iou, ref_encode, ref_iou
from keras_focal.assigners import ATSSAssigner, Assigner, IoUAssigner
from keras_focal.assigners.iou import box_bucket
from keras_focal.layers import AnchorEncoder, AnchorGenerator, decode_deltas, encode_deltas
from keras_focal.models import get_head

ASSIGNERS = {"iou": IoUAssigner, "atss": ATSSAssigner}

# 4 x 4 non-overlapping 64-px tiles on a 256 x 256 image: anchor (i, j) = [64i, 64j, 64i+64, 64j+64] px,
# index i * 4 + j. A box inside one tile has IoU (its area / 4096) with that tile and 0 with the others.
S = 256.0
TILES = AnchorGenerator(min_level=6, max_level=6, anchor_size=1.0, num_scales=1, aspect_ratios=(1.0,))


def _px(*boxes):
    return np.array(boxes, "float32") / S


def test_assigners_round_trip_and_check_their_arguments():
    for assigner in (IoUAssigner(0.6, 0.3, low_quality_matches=False), ATSSAssigner(topk=5)):
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(assigner))
        assert type(clone) is type(assigner) and clone.get_config() == assigner.get_config()
        assert isinstance(clone, Assigner) and not clone.needs_predictions
    with pytest.raises(ValueError, match="negative_threshold"):
        IoUAssigner(positive_threshold=0.4, negative_threshold=0.5)
    with pytest.raises(ValueError, match="topk"):
        ATSSAssigner(topk=0)
    with pytest.raises(TypeError, match="Assigner"):
        AnchorEncoder(TILES, assigner="iou")


def test_iou_thresholds_are_the_assigners():
    # [0, 0, 64, 38.4] px: IoU 0.6 with tile 0; positive at 0.5, ignored with positive_threshold 0.7
    boxes = _px([0, 0, 64, 38.4])
    strict = AnchorEncoder(TILES, assigner=IoUAssigner(0.7, 0.4, low_quality_matches=False))
    assert strict(boxes, np.array([3]), 256, 256)["class_targets"].numpy()[0] == -2
    loose = AnchorEncoder(TILES, assigner=IoUAssigner(0.5, 0.4, low_quality_matches=False))
    assert loose(boxes, np.array([3]), 256, 256)["class_targets"].numpy()[0] == 3


def test_iou_band_without_low_quality():
    boxes = _px([0, 0, 64, 38.4], [64, 64, 128, 64 + 28.8], [128, 128, 192, 128 + 19.2])  # IoU 0.6, 0.45, 0.3
    enc = AnchorEncoder(TILES, assigner=IoUAssigner(low_quality_matches=False))
    ct = enc(boxes, np.array([3, 4, 5]), 256, 256)["class_targets"].numpy()
    assert ct[0] == 3  # 0.6 -> positive
    assert ct[5] == -2  # 0.45 -> ignored
    assert ct[10] == -1  # 0.3 -> background
    assert np.all(np.delete(ct, [0, 5, 10]) == -1)


def test_low_quality_matches():
    boxes = _px([0, 0, 64, 38.4], [64, 64, 128, 64 + 28.8], [128, 128, 192, 128 + 19.2])
    ct = AnchorEncoder(TILES)(boxes, np.array([3, 4, 5]), 256, 256)["class_targets"].numpy()
    assert ct[0] == 3 and ct[5] == 4 and ct[10] == 5  # each GT keeps its best anchor, even at IoU 0.3
    assert np.all(np.delete(ct, [0, 5, 10]) == -1)
    # a box straddling two tiles equally: both anchors tie at IoU 1/3 and both become positive
    ct = AnchorEncoder(TILES)(_px([0, 32, 64, 96]), np.array([7]), 256, 256)["class_targets"].numpy()
    assert ct[0] == 7 and ct[1] == 7 and np.sum(ct >= 0) == 2


def test_best_anchor_is_not_demoted_and_second_is_ignored():
    # cols 0..121.6: tile (0,0) IoU 64/121.6 = 0.526 (positive), tile (0,1) IoU 57.6/128 = 0.45 (ignored)
    ct = AnchorEncoder(TILES)(_px([0, 0, 64, 121.6]), np.array([1]), 256, 256)["class_targets"].numpy()
    assert ct[0] == 1 and ct[1] == -2 and np.sum(ct >= 0) == 1


@pytest.mark.parametrize("assigner", ["iou", "atss"])
def test_no_boxes(assigner):
    gen = AnchorGenerator() if assigner == "iou" else AnchorGenerator(anchor_size=8, num_scales=1, aspect_ratios=(1.0,))
    enc = AnchorEncoder(gen, assigner=ASSIGNERS[assigner]())
    for boxes, classes in [(np.zeros((0, 4), "float32"), np.zeros((0,), "int32")), (-np.ones((3, 4), "float32"), -np.ones((3,), "int32"))]:
        out = enc(boxes, classes, 128, 96)
        assert np.all(out["class_targets"].numpy() == -1)
        assert np.all(out["box_targets"].numpy() == 0) and np.all(out["matched_boxes"].numpy() == 0)
        assert out["class_targets"].dtype == tf.int32


def test_iou_assigner_matches_reference_and_round_trips():
    rng = np.random.default_rng(3)
    gen = AnchorGenerator()
    h, w = 96, 160
    anchors = gen(h, w).numpy()
    enc = AnchorEncoder(gen)
    boxes, classes = [], []
    for _ in range(2):
        b, c = random_ground_truth(rng, 4)
        boxes.append(b)
        classes.append(c)
    out = enc(np.stack(boxes), np.stack(classes), h, w)  # batched
    for i in range(2):
        ct_ref, match_ref = ref_assign_iou(anchors.astype(np.float64), boxes[i].astype(np.float64), classes[i])
        ct = out["class_targets"].numpy()[i]
        np.testing.assert_array_equal(ct, ct_ref)
        pos = np.where(ct >= 0)[0]
        assert len(pos) > 0
        mb = out["matched_boxes"].numpy()[i]
        np.testing.assert_allclose(mb[pos], boxes[i][match_ref[pos]], atol=1e-6)
        assert np.all(mb[ct < 0] == 0) and np.all(out["box_targets"].numpy()[i][ct < 0] == 0)
        bt = out["box_targets"].numpy()[i]
        ref_bt = np.stack([ref_encode(anchors[a].astype(np.float64), boxes[i][match_ref[a]].astype(np.float64)) for a in pos])
        np.testing.assert_allclose(bt[pos], ref_bt, atol=1e-4)
        # encode then decode recovers the ground truth
        np.testing.assert_allclose(decode_deltas(anchors[pos], bt[pos]).numpy(), boxes[i][match_ref[pos]], atol=1e-4)


def test_atss_hand_case():
    # one level of non-overlapping 8-px anchors (stride 8) on a 64 x 64 image, top-k 9.
    gen = AnchorGenerator(min_level=3, max_level=3, anchor_size=1, num_scales=1, aspect_ratios=(1.0,))
    enc = AnchorEncoder(gen, assigner=ATSSAssigner())
    # box [10, 10, 30, 30] px, centre (20, 20) = centre of cell (2, 2): the 9 nearest centres are the 3 x 3
    # block of cells 1..3. Overlaps per axis: 6, 8, 6 px -> IoU 64/400 = 0.16 (centre cell),
    # 48/416 = 0.1154 (4 edge cells), 36/428 = 0.0841 (4 corners). mean 0.1064, std (n-1) 0.0255,
    # threshold 0.1319: only the centre cell is positive.
    box = np.array([[10, 10, 30, 30]], "float32") / 64
    ct = enc(box, np.array([1]), 64, 64)["class_targets"].numpy().reshape(8, 8)
    expected = np.full((8, 8), -1)
    expected[2, 2] = 1
    np.testing.assert_array_equal(ct, expected)
    # a second, larger box [0, 0, 40, 24] px with class 2: its candidates overlap the first box's
    # cell (2, 2) (IoU 64/960 = 0.067 < 0.16), which keeps the higher-IoU assignment to box 1.
    boxes = np.array([[10, 10, 30, 30], [0, 0, 40, 24]], "float32") / 64
    ct2 = enc(boxes, np.array([1, 2]), 64, 64)["class_targets"].numpy().reshape(8, 8)
    assert ct2[2, 2] == 1 and np.any(ct2 == 2)


def test_atss_matches_reference():
    rng = np.random.default_rng(5)
    gen = AnchorGenerator(anchor_size=8, num_scales=1, aspect_ratios=(1.0,))
    h, w = 192, 256
    anchors = gen(h, w).numpy().astype(np.float64)
    enc = AnchorEncoder(gen, assigner=ATSSAssigner())
    # unclipped random boxes: centre-distance ties (where top-k order is arbitrary) have probability 0
    c = rng.uniform(0.3, 0.7, size=(5, 2))
    hw = rng.uniform(0.05, 0.55, size=(5, 2))
    boxes = np.concatenate([np.concatenate([c - hw / 2, c + hw / 2], 1), -np.ones((2, 4))]).astype("float32")
    classes = np.array([0, 1, 2, 3, 4, -1, -1], "int32")
    out = enc(boxes, classes, h, w)
    ct_ref, match_ref = ref_assign_atss(anchors, gen.level_sizes(h, w), boxes.astype(np.float64), classes, h, w)
    ct = out["class_targets"].numpy()
    np.testing.assert_array_equal(ct, ct_ref)
    pos = ct >= 0
    assert pos.sum() > 0 and not np.any(ct == -2)
    np.testing.assert_allclose(out["matched_boxes"].numpy()[pos], boxes[match_ref[pos]], atol=1e-6)


# --------------------------------------------------------------- grid paths against the dense paths, bit for bit
def _dense_reference(enc, boxes, classes, h, w):
    """The assigner's dense path (a dynamic image size) on every padded box, without the encoder's compaction,
    and every anchor's deltas encoded and masked."""
    boxes = tf.cast(boxes, tf.float32)[None]
    classes = tf.cast(classes, tf.int32)[None]
    assign = tf.function(lambda b, c, h, w: enc.assigner.assign(enc.anchor_generator, b, c, h, w)["assignment"])
    assignment = assign(boxes, classes, tf.constant(h), tf.constant(w))
    anchors = enc.anchor_generator(h, w)
    positive = assignment >= 0
    match = tf.maximum(assignment, 0)
    boxes = tf.pad(boxes, [[0, 0], [0, 1], [0, 0]], constant_values=-1.0)  # defined gathers when M == 0
    classes = tf.pad(classes, [[0, 0], [0, 1]], constant_values=-1)
    matched = tf.gather(boxes, match, batch_dims=1)
    cls = tf.where(positive, tf.gather(classes, match, batch_dims=1), assignment)
    deltas = encode_deltas(anchors, tf.where(positive[..., None], matched, anchors[None]))
    return {"class_targets": cls[0].numpy(), "box_targets": tf.where(positive[..., None], deltas, 0.0)[0].numpy(),
            "matched_boxes": tf.where(positive[..., None], matched, 0.0)[0].numpy(), "match": match[0].numpy()}


def _cases(rng):
    """(name, boxes [M, 4], classes [M]): random, empty, padded (padding in between), tied."""
    b, c = random_ground_truth(rng, 12, pad=0)
    yield "random", b, c
    yield "empty", np.zeros((0, 4), "float32"), np.zeros((0,), "int32")
    yield "all padding", -np.ones((5, 4), "float32"), -np.ones((5,), "int32")
    b2, c2 = random_ground_truth(rng, 4, pad=0)
    rows = [b2[0], -np.ones(4), b2[1], [0.3, 0.3, 0.3, 0.5], b2[2], -np.ones(4), b2[3]]  # padding + a zero-area box
    yield "padded", np.array(rows, "float32"), np.array([c2[0], -1, c2[1], 2, c2[2], -1, c2[3]], "int32")
    # the same box twice with different classes (every IoU ties), and a box that ties two anchors of one level
    tied = np.array([[0.25, 0.25, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5], [0.0, 0.125, 0.25, 0.375]], "float32")
    yield "tied", tied, np.array([1, 2, 3], "int32")


@pytest.mark.parametrize("head, assigner", [("retina", "iou"), ("gfl", "atss")])
def test_grid_path_gives_the_dense_paths_targets(head, assigner):
    # 9 anchors per location (RetinaNet's) and 1 (GFL's)
    head = get_head(head, assigner=ASSIGNERS[assigner]())
    enc = AnchorEncoder(head.anchor_generator, assigner=head.assigner)
    h, w = 128, 192
    rng = np.random.default_rng(11)
    cases = list(_cases(rng))
    m = max(len(b) for _, b, _ in cases)
    batch_b = np.full((len(cases), m, 4), -1, "float32")
    batch_c = np.full((len(cases), m), -1, "int32")
    for i, (_, b, c) in enumerate(cases):
        batch_b[i, : len(b)], batch_c[i, : len(c)] = b, c
    batched = enc(batch_b, batch_c, h, w)
    for i, (name, b, c) in enumerate(cases):
        ref = _dense_reference(enc, b, c, h, w)
        for out in (enc(b, c, h, w), {k: v[i] for k, v in batched.items()}):
            np.testing.assert_array_equal(out["class_targets"].numpy(), ref["class_targets"], err_msg=name)
            np.testing.assert_array_equal(out["matched_boxes"].numpy(), ref["matched_boxes"], err_msg=name)
            # the log of the size ratio may differ in the last bit (vectorised and scalar log)
            np.testing.assert_allclose(out["box_targets"].numpy(), ref["box_targets"], rtol=0, atol=1e-6,
                                       err_msg=name)
            positive = ref["class_targets"] >= 0
            mi = out["matched_indices"].numpy()
            assert mi.dtype == np.int32
            np.testing.assert_array_equal(mi[positive], ref["match"][positive], err_msg=name)
            assert np.all(mi[~positive] == -1)
        if name == "tied" and assigner == "iou":
            assert np.sum(ref["class_targets"] == 1) > 0 and not np.any(ref["class_targets"] == 2)
        if name in ("random", "padded"):
            assert positive.sum() > 0


def test_iou_of_exactly_the_positive_threshold_is_positive():
    # [0, 0, 64, 32] px: IoU with tile (0, 0) is 2048 / 4096 = 0.5 exactly, also in float32
    enc = AnchorEncoder(TILES, assigner=IoUAssigner(low_quality_matches=False))
    boxes = np.concatenate([_px([0, 0, 64, 32]), -np.ones((2, 4), "float32")])
    out = enc(boxes, np.array([4, -1, -1]), 256, 256)
    assert out["class_targets"].numpy()[0] == 4 and out["matched_indices"].numpy()[0] == 0
    assert np.sum(out["class_targets"].numpy() >= 0) == 1


def _awkward_boxes(rng, kind, b=4, m=15):
    """Boxes that make ties: clipped to the image, on a 1/16 lattice, or unclipped with duplicates."""
    if kind == "clipped":
        c, s = rng.uniform(-0.1, 1.1, (b, m, 2)), rng.uniform(0.01, 0.6, (b, m, 2))
        boxes = np.clip(np.concatenate([c - s / 2, c + s / 2], -1), 0, 1)
    elif kind == "lattice":
        q = rng.integers(0, 17, (b, m, 4)) / 16.0
        boxes = np.concatenate([np.minimum(q[..., :2], q[..., 2:]), np.maximum(q[..., :2], q[..., 2:])], -1)
    else:
        c, s = rng.uniform(-0.3, 1.3, (b, m, 2)), rng.uniform(0.01, 0.9, (b, m, 2))
        boxes = np.concatenate([c - s / 2, c + s / 2], -1)
        boxes[:, 1:8] = boxes[:, 0:7]
    return boxes.astype("float32"), rng.integers(-1, 5, (b, m)).astype("int32")


def test_box_bucket_is_the_smallest_listed_count_that_holds_the_boxes():
    listed = sorted({8 * 2**k for k in range(8)} | {12 * 2**k for k in range(8)})
    counts = np.arange(0, 1100)
    expected = [next(size for size in listed if size >= count) for count in counts]
    np.testing.assert_array_equal([int(box_bucket(tf.constant(int(m)))) for m in counts], expected)


@pytest.mark.parametrize("assigner", ["iou", "atss"])
def test_grid_paths_match_the_dense_path_on_awkward_boxes(assigner):
    # The static-size encoder (anchor-grid paths) against the dynamic-size one (dense pairwise IoU), batched, on
    # boxes whose IoUs and centre distances tie, at sizes whose coarse levels are smaller than top-k.
    generators = [AnchorGenerator(), AnchorGenerator(anchor_size=8, num_scales=1, aspect_ratios=(1.0,))]
    rng = np.random.default_rng(21)
    for gen in generators:
        enc = AnchorEncoder(gen, assigner=ASSIGNERS[assigner]())
        dense = tf.function(lambda b, c, h, w: enc(b, c, h, w))
        for h, w in [(96, 100)]:  # P7 is 1 x 1 there, P6 2 x 2: fewer anchors than top-k
            for kind in ("clipped", "lattice", "duplicates"):
                b, c = _awkward_boxes(rng, kind, m=18 if kind == "duplicates" else 15)  # 18 + 1: padded to 24
                grid, ref = enc(b, c, h, w), dense(b, c, tf.constant(h), tf.constant(w))
                for key in ("class_targets", "matched_indices", "matched_boxes"):
                    np.testing.assert_array_equal(grid[key].numpy(), ref[key].numpy(), err_msg=f"{kind} {h}x{w} {key}")
                np.testing.assert_allclose(grid["box_targets"].numpy(), ref["box_targets"].numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("head", ["retina", "gfl"])
@pytest.mark.parametrize("assigner", ["iou", "atss"])
def test_every_head_with_every_assigner_against_the_references(head, assigner):
    # The targets a head's loss reads (`assign_targets`, in the train step) for each built-in head's anchors with
    # each static assigner, against the float64 loops.
    head = get_head(head, assigner=ASSIGNERS[assigner]())
    h, w = 64, 96
    rng = np.random.default_rng(8)
    c = rng.uniform(0.3, 0.7, size=(3, 2))
    hw = rng.uniform(0.1, 0.6, size=(3, 2))
    boxes = np.concatenate([np.concatenate([c - hw / 2, c + hw / 2], 1), -np.ones((1, 4))]).astype("float32")
    classes = np.array([0, 1, 2, -1], "int32")
    targets = head.assign_targets({"boxes": boxes[None], "classes": classes[None]}, None, h, w)
    anchors = head.anchor_generator(h, w).numpy().astype(np.float64)
    ct = targets["class_targets"].numpy()[0]
    if assigner == "iou":
        ct_ref, match_ref = ref_assign_iou(anchors, boxes.astype(np.float64), classes)
        # A box's best IoU can be shared by anchors whose float32 IoUs differ in the last bit (the reference counts
        # them as ties): there either decision is right, with or without the low-quality rule.
        ct_strict, _ = ref_assign_iou(anchors, boxes.astype(np.float64), classes, low_quality=False)
        iou = ref_iou(anchors, boxes[:3].astype(np.float64))
        near_tie = np.any((iou >= iou.max(0) * (1 - 1e-6)) & (iou < iou.max(0)), axis=1)
        np.testing.assert_array_equal(ct[~near_tie], ct_ref[~near_tie])
        assert np.all((ct[near_tie] == ct_ref[near_tie]) | (ct[near_tie] == ct_strict[near_tie]))
    else:
        ct_ref, match_ref = ref_assign_atss(anchors, head.anchor_generator.level_sizes(h, w),
                                            boxes.astype(np.float64), classes, h, w)
        np.testing.assert_array_equal(ct, ct_ref)
    assert (ct >= 0).sum() > 0
    np.testing.assert_array_equal(targets["matched_indices"].numpy()[0][ct >= 0], match_ref[ct >= 0])
