"""COCO AP for the same training budget on the built-in dataset: keras_focal's two heads against keras-hub.

    python benchmarks/accuracy.py                                   # all three, 500 steps each (about 40 min, 2 cores)
    python benchmarks/accuracy.py --models retina,keras_hub         # the README's first accuracy row
    python benchmarks/accuracy.py --train-examples 1000             # the README's second row: 250 steps each
    python benchmarks/accuracy.py --epochs 1 --train-examples 64 --eval-examples 16      # a smoke run

Every detector gets the same: ResNet-18 from random init, P3-P7, FPN and subnets 256 wide with 4 convs (the papers';
keras-hub fixes both), the same image size, batch, epochs, input pipeline with the same augmentation and order, the
same optimizer (AdamW, warmup then step decay, global clipnorm: `keras_focal.training.make_optimizer`), and the same
COCO evaluation (pycocotools, `keras_focal.evaluation.evaluate_model`, score threshold 0.05, 100 detections).
What differs is each library's own detector: keras_focal RetinaNet (focal loss with alpha, smooth-L1, the paper's
anchors and assignment), keras_focal GFL (QFL + DFL + GIoU, ATSS) and keras-hub's RetinaNetObjectDetector with its
default compile losses (Huber box loss, BinaryFocalCrossentropy without class balancing). `--hub-default-optimizer`
adds a row with keras-hub's whole default compile (its optimizer is Adam(5e-5)).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _peers import build_keras_hub_detector, keras_hub_predictor  # noqa: E402

SCORE_THRESHOLD = 0.05  # RetinaNet paper, section 4 (inference): detections below 0.05 are dropped.


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="retina,gfl,keras_hub", help="comma-separated: retina, gfl, keras_hub")
    p.add_argument("--hub-default-optimizer", action="store_true",
                   help="also train keras-hub with its default compile() optimizer (Adam 5e-5)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-examples", type=int, default=None, help="use only the first N training images")
    p.add_argument("--eval-examples", type=int, default=None, help="evaluate on the first N validation images")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="AdamW base rate, for every detector")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


class KerasHubDetections:
    """keras-hub's predict -> the contract's detection dict (normalised yxyx boxes), for `evaluate_model`."""

    def __init__(self, detector, image_size):
        self.predict = keras_hub_predictor(detector)
        self.image_size = image_size

    def __call__(self, images):
        out = self.predict(images.numpy())
        return {"detection_boxes": out["boxes"] / self.image_size, "detection_scores": out["confidence"],
                "detection_classes": out["labels"], "num_detections": out["num_detections"]}


def build(name, args, num_classes, steps_per_epoch):
    """(compiled model, its anchor encoder for the tf.data pipeline or None for keras-hub, which encodes in its
    train step, a function images -> detections for `evaluate_model`) for one row of the table."""
    import keras_focal

    optimizer = keras_focal.training.make_optimizer(
        "adamw", steps_per_epoch=steps_per_epoch, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate)
    size = args.image_size
    if name in ("retina", "gfl"):
        model = keras_focal.models.RetinaNet(num_classes, backbone=args.backbone, head=name, fpn_width=256,
                                             head_convs=4, image_size=(size, size),
                                             score_threshold=SCORE_THRESHOLD)
        model.compile(optimizer=optimizer)
        return model, model.anchor_encoder, model
    hub = build_keras_hub_detector(argparse.Namespace(
        backbone=args.backbone, image_size=size, num_classes=num_classes, head_convs=4,
        score_threshold=SCORE_THRESHOLD))
    hub.compile(optimizer="auto" if name == "keras_hub_default_optimizer" else optimizer)
    return hub, None, KerasHubDetections(hub, size)


def to_keras_hub_targets(size):
    """keras-hub reads absolute-pixel boxes in its format ("yxyx") under "boxes" and the classes under "labels"
    (-1: padding)."""
    import tensorflow as tf

    def convert(images, targets):
        return images, {"boxes": targets["boxes"] * float(size), "labels": tf.cast(targets["classes"], tf.float32)}

    return convert


def run(name, args, info, train_examples, eval_examples):
    import keras

    from keras_focal import data, evaluation

    keras.backend.clear_session()
    keras.utils.set_random_seed(args.seed)
    num_train = int(train_examples.cardinality())
    steps = max(1, num_train // args.batch_size)
    model, encoder, detect = build(name, args, info.num_classes, steps)
    size = args.image_size
    ds = data.make_dataset(train_examples, image_size=(size, size), batch_size=args.batch_size, encoder=encoder,
                           augment=True, shuffle=True, repeat=True, seed=args.seed, drop_remainder=True)
    if encoder is None:
        ds = ds.map(to_keras_hub_targets(size))
    start = time.time()
    history = model.fit(ds, epochs=args.epochs, steps_per_epoch=steps, verbose=2)
    seconds = time.time() - start
    metrics = evaluation.evaluate_model(detect, eval_examples, num_classes=info.num_classes,
                                        category_ids=info.category_ids, image_size=(size, size))
    return {"metrics": metrics, "train_s": seconds, "final_loss": history.history["loss"][-1]}


def main(argv=None):
    args = parse_args(argv)
    from keras_focal import data, evaluation

    info = data.dataset_info("keras_focal_shapes")
    train = data.load("keras_focal_shapes", "train", data_dir=args.data_dir)
    val = data.load("keras_focal_shapes", "validation", data_dir=args.data_dir)
    if args.train_examples:
        train = train.take(args.train_examples)
    if args.eval_examples:
        val = val.take(args.eval_examples)
    names = args.models.split(",") + (["keras_hub_default_optimizer"] if args.hub_default_optimizer else [])
    print(f"keras_focal_shapes: {int(train.cardinality())} training images, {int(val.cardinality())} validation "
          f"images; {args.backbone}, {args.image_size} px, batch {args.batch_size}, {args.epochs} epochs, "
          f"AdamW {args.learning_rate:g}\n")
    results = {}
    for name in names:
        results[name] = run(name, args, info, train, val)
        print(evaluation.format_coco_table(results[name]["metrics"], title=name))
    print(f"\n{'detector':<30}{'AP':>7}{'AP50':>7}{'AP75':>7}{'train s':>9}{'last loss':>11}")
    for name, r in results.items():
        m = r["metrics"]
        print(f"{name:<30}{100 * m['AP']:>7.1f}{100 * m['AP50']:>7.1f}{100 * m['AP75']:>7.1f}{r['train_s']:>9.0f}"
              f"{r['final_loss']:>11.4g}")
    if "retina" in results and "keras_hub" in results:
        gain = 100 * (results["retina"]["metrics"]["AP"] - results["keras_hub"]["metrics"]["AP"])
        print(f"keras_focal RetinaNet - keras-hub: {gain:+.1f} AP points (target: +5)")
    if "retina" in results and "gfl" in results:
        gain = 100 * (results["gfl"]["metrics"]["AP"] - results["retina"]["metrics"]["AP"])
        print(f"keras_focal GFL - keras_focal RetinaNet: {gain:+.1f} AP points (target: > 0)")


if __name__ == "__main__":
    main()
