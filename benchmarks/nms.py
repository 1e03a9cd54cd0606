"""CPU benchmark of the NMS back ends for DetectionDecoder.

Compares, on the candidates DetectionDecoder feeds to NMS (top 1000 (anchor, class) pairs per level of a
512 x 512 image: 49104 anchors, 80 classes, batch 2):

* ``combined``  - ``tf.image.combined_non_max_suppression`` (one call, per-class NMS inside the kernel);
* ``padded_offset`` - ``tf.image.non_max_suppression_padded`` once per image, boxes shifted by 2 * class
  id so the class-agnostic NMS is class-aware (DetectionDecoder(nms_method="padded"));
* ``padded_per_class`` - ``tf.image.non_max_suppression_padded`` on a [B * C, K] batch, one row per
  (image, class), then the top ``max_detections`` over classes.

Two score distributions: "trained" (a few objects, each a cluster of high-scoring overlapping boxes, the
rest of the logits low), and "untrained" (logits ~ N(-2, 1): nearly every candidate passes the 0.05
threshold and NMS has the most work). Each variant runs the whole DetectionDecoder in a tf.function, and
the NMS alone on precomputed candidates.

    python benchmarks/nms.py [--repeats 5] [--size 512] [--classes 80] [--batch 2] [--threads 0]

The numbers are indicative: wall-clock medians on a CPU that may be shared with other processes.

Figures (2026-11, 2 shared CPU cores, load average ~5 from other jobs, TF 2.21, median of 9 runs, ms;
``padded_per_class`` 1 run, it was too slow to repeat):

    distribution  | NMS: combined | NMS: padded_offset | NMS: padded_per_class | decoder: combined | decoder: padded
    trained       |      5.1      |        9.1         |        ~59600         |       67          |      66
    untrained     |      6.3      |        8.2         |     (not run: >60 s)  |       73          |      68

Decision: ``combined`` is the default. It is the fastest NMS (about 1.5-2x the offset trick, and
~10^4x per-class ``non_max_suppression_padded``, whose batched implementation is a graph of while-loops
run once per (image, class) row of 5000 candidates), it is one fused kernel, and it gives exactly the
same detections as the offset trick. The whole decoder is dominated by the per-level top-k over
A * C logits (~60 ms), so the NMS choice moves it by a few ms only. ``combined_non_max_suppression`` has
no GPU kernel (in a served graph it is placed on the CPU) and does not convert to ONNX / TFLite:
``nms_method="padded"`` (offset trick) is there for those cases.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keras_focal.layers.anchor_generator import AnchorGenerator  # noqa: E402
from keras_focal.layers.box_coders import DeltaCoder  # noqa: E402
from keras_focal.layers.detection_decoder import DetectionDecoder  # noqa: E402


def make_inputs(kind, gen, size, num_classes, batch, seed=0):
    rng = np.random.default_rng(seed)
    a = gen.num_anchors(size, size)
    anchors = gen(size, size).numpy()
    deltas = rng.normal(0, 0.1, size=(batch, a, 4)).astype("float32")
    if kind == "untrained":
        logits = rng.normal(-2.0, 1.0, size=(batch, a, num_classes)).astype("float32")
        return logits, deltas
    logits = rng.normal(-7.0, 1.0, size=(batch, a, num_classes)).astype("float32")
    centers = 0.5 * (anchors[:, :2] + anchors[:, 2:])
    sizes = anchors[:, 2:] - anchors[:, :2]
    for b in range(batch):
        for _ in range(8):  # 8 objects per image
            c = rng.uniform(0.1, 0.9, size=2)
            s = rng.uniform(0.05, 0.5)
            cls = rng.integers(num_classes)
            near = np.all(np.abs(centers - c) < s / 2, axis=1) & (np.abs(sizes[:, 0] - s) < s)
            logits[b, near, cls] = rng.normal(1.0, 1.5, size=near.sum())
            # a confusable second class on the same object
            logits[b, near, (cls + 1) % num_classes] = rng.normal(-1.5, 1.0, size=near.sum())
    return logits, deltas


def nms_padded_per_class(dec, cand_s, cand_b, cand_c, num_classes):
    n = dec.max_detections
    batch = tf.shape(cand_s)[0]
    k = tf.shape(cand_s)[1]
    onehot = tf.one_hot(cand_c, num_classes, on_value=True, off_value=False, dtype=tf.bool)  # [B, K, C]
    s = tf.where(onehot & (cand_s[..., None] > dec.score_threshold), cand_s[..., None], -1.0)
    s = tf.reshape(tf.transpose(s, [0, 2, 1]), [-1, k])  # [B*C, K]
    bx = tf.reshape(tf.tile(cand_b[:, None], [1, num_classes, 1, 1]), [-1, k, 4])
    idx, valid = tf.image.non_max_suppression_padded(
        bx, s, max_output_size=n, iou_threshold=dec.iou_threshold,
        score_threshold=dec.score_threshold, pad_to_max_output_size=True,
    )
    sel_s = tf.gather(s, idx, batch_dims=1)
    sel_b = tf.gather(bx, idx, batch_dims=1)
    sel_s = tf.where(tf.range(n)[None] < valid[:, None], sel_s, -1.0)
    sel_s = tf.reshape(sel_s, [batch, num_classes * n])
    sel_b = tf.reshape(sel_b, [batch, num_classes * n, 4])
    cls = tf.reshape(tf.tile(tf.range(num_classes)[None, :, None], [batch, 1, n]), [batch, -1])
    top_s, top_i = tf.math.top_k(sel_s, k=n)
    valid_total = tf.reduce_sum(tf.cast(top_s > 0, tf.int32), axis=1)
    return dec._finalize(tf.gather(sel_b, top_i, batch_dims=1), top_s, tf.gather(cls, top_i, batch_dims=1), valid_total)


def timeit(fn, repeats):
    fn()  # trace / warm up
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, min(times) * 1000


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--variants", default="combined,padded_offset,padded_per_class")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: TF default)")
    args = p.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    gen = AnchorGenerator()
    size, c = args.size, args.classes
    print(f"# {size}x{size}, {gen.num_anchors(size, size)} anchors, {c} classes, batch {args.batch}, "
          f"CPU, tf {tf.__version__}, os.cpu_count()={os.cpu_count()}, median/min of {args.repeats} runs (ms)")
    decs = {m: DetectionDecoder(gen, nms_method=m) for m in ("combined", "padded")}
    for kind in ("trained", "untrained"):
        logits, deltas = make_inputs(kind, gen, size, c, args.batch)
        dec = decs["combined"]
        coder = DeltaCoder()
        cand = tf.function(
            lambda lg, d: dec._candidates(tf.sigmoid(lg), tf.clip_by_value(coder.decode(gen(size, size), d), 0.0, 1.0),
                                          size, size)
        )(tf.constant(logits), tf.constant(deltas))
        n_pass = int(tf.reduce_sum(tf.cast(cand[0] > dec.score_threshold, tf.int32)))
        print(f"\n## {kind}: {cand[0].shape[1]} candidates per image after top-k, {n_pass} above 0.05 in the batch")
        nms_only = {
            "combined": tf.function(lambda s, b, cl: dec._nms_combined(s, b, cl, c)),
            "padded_offset": tf.function(lambda s, b, cl: dec._nms_padded(s, b, cl)),
            "padded_per_class": tf.function(lambda s, b, cl: nms_padded_per_class(dec, s, b, cl, c)),
        }
        nms_only = {k: v for k, v in nms_only.items() if k in args.variants.split(",")}
        results = {}
        for name, fn in nms_only.items():
            med, best = timeit(lambda fn=fn: fn(*cand), args.repeats)
            results[name] = fn(*cand)
            print(f"NMS only      {name:18s} median {med:8.1f}  min {best:8.1f}", flush=True)
        for name in [n for n in ("padded_offset", "padded_per_class") if n in results and "combined" in results]:
            same = np.array_equal(results[name]["num_detections"], results["combined"]["num_detections"]) and np.allclose(
                results[name]["detection_scores"], results["combined"]["detection_scores"], atol=1e-6)
            print(f"  {name} gives the same detections as combined: {same}")
        lg, d = tf.constant(logits), tf.constant(deltas)
        for m, dm in decs.items():
            # what a RetinaNet head hands the decoder: sigmoid scores and decoded boxes
            f = tf.function(lambda a, b, dm=dm: dm(tf.sigmoid(a), coder.decode(gen(size, size), b), size, size))
            med, best = timeit(lambda f=f: f(lg, d), args.repeats)
            print(f"full decoder  {m:18s} median {med:8.1f}  min {best:8.1f}", flush=True)


if __name__ == "__main__":
    main()
