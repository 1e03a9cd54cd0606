"""COCO AP for the same training budget on the built-in dataset: keras_focal's two heads against keras-hub.

    python benchmarks/accuracy.py                                   # all three, 500 steps each (about 40 min, 2 cores)
    python benchmarks/accuracy.py --models retina,keras_hub         # the README's first accuracy row
    python benchmarks/accuracy.py --train-examples 1000             # the README's second row: 250 steps each
    python benchmarks/accuracy.py --epochs 1 --train-examples 64 --eval-examples 16      # a smoke run
    python benchmarks/accuracy.py --ablation today,cosine,mosaic,mixup,multi_scale --epochs 4 --seeds 0,1
                                                                    # the training recipe ablation (about 2 h, 2 cores)

`--ablation` trains the main job's compact GFL (ResNet-18, FPN and subnets 64 wide with 2 convs, 128 px, batch 8,
AdamW 1e-3, 4 epochs of the 2000 training images, anchor targets encoded in the train step) once per named recipe
(`ABLATION`: one ingredient at a time), with weight EMA on, and evaluates both the raw and the EMA weights of the
same run (the average never feeds back into training, so one run gives the row without EMA and the row with it).
`--seeds 0,1` repeats each row.

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
    p.add_argument("--ablation", default=None,
                   help=f"comma-separated recipes of the training-recipe ablation: {', '.join(ABLATION)}")
    p.add_argument("--seeds", default=None, help="comma-separated seeds of the ablation (default: --seed)")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="ablation: default one pass over the data")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="ablation: default a fifth of the steps (the main job's 200 of 1000)")
    p.add_argument("--ema-momentum", type=float, default=None,
                   help="ablation: default 1 - 10 / steps (the main job's 0.99 at 1000 steps)")
    return p.parse_args(argv)


# The training-recipe ablation (keras_focal.training.Recipe arguments, plus MosaicMixup's tile_scale / min_visible;
# EMA is always on and evaluated beside the raw weights). From today's recipe, one ingredient at a time: the cosine
# schedule, then each of mosaic, MixUp and multi-scale on top of it, and two mosaic variants.
ABLATION = {
    "today": dict(schedule="step"),
    "cosine": dict(schedule="cosine"),
    "mosaic": dict(schedule="cosine", mosaic=1.0, close_mosaic=1),
    "mosaic_half_size_tiles": dict(schedule="cosine", mosaic=1.0, close_mosaic=1, tile_scale=0.5),
    "mosaic_half_visible": dict(schedule="cosine", mosaic=1.0, close_mosaic=1, min_visible=0.5),
    "mixup": dict(schedule="cosine", mixup=0.5, close_mosaic=1),
    "multi_scale": dict(schedule="cosine", multi_scale=0.25),
}


def run_recipe(name, args, info, train_examples, eval_examples, seed):
    """The main job's model and budget under one recipe -> {"raw": metrics, "ema": metrics, "train_s": s}."""
    import keras

    import keras_focal
    from keras_focal import data, evaluation, training

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    size = (args.image_size, args.image_size)
    steps = args.steps_per_epoch or max(1, int(train_examples.cardinality()) // args.batch_size)
    total = steps * args.epochs
    settings = dict(ABLATION[name])
    mosaic_args = {k: settings.pop(k) for k in ("tile_scale", "min_visible") if k in settings}
    recipe = training.Recipe(ema=True, warmup_steps=args.warmup_steps if args.warmup_steps is not None
                             else round(total / 5), ema_momentum=args.ema_momentum or 1 - 10 / total, **settings)
    print(f"{name}: {recipe}, {steps} steps x {args.epochs} epochs", flush=True)
    model = keras_focal.models.RetinaNet(info.num_classes, backbone=args.backbone, head="gfl", fpn_width=64,
                                         head_convs=2, image_size=size)
    optimizer = recipe.optimizer("adamw", steps_per_epoch=steps, epochs=args.epochs, batch_size=args.batch_size,
                                 learning_rate=args.learning_rate)
    model.compile(optimizer=optimizer)
    mixer = recipe.mosaic_mixup(**mosaic_args)
    ds = data.make_dataset(train_examples, image_size=size, batch_size=args.batch_size, augment=True, shuffle=True,
                           repeat=True, seed=seed, mosaic=mixer, multi_scale=recipe.multi_scale_range(size))
    raw = {}

    class KeepRaw(keras.callbacks.Callback):  # before SwapEMAWeights: the raw weights of the last epoch
        def on_epoch_end(self, epoch, logs=None):
            if epoch == args.epochs - 1:
                raw["weights"] = [v.numpy() for v in model.trainable_variables]

    callbacks = recipe.callbacks([KeepRaw()], optimizer, mixer, epochs=args.epochs)
    callbacks.insert(0, callbacks.pop(callbacks.index(next(c for c in callbacks if isinstance(c, KeepRaw)))))
    start = time.time()
    model.fit(ds, epochs=args.epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=2)
    seconds = time.time() - start
    out = {"train_s": seconds}
    out["ema"] = evaluation.evaluate_model(model, eval_examples, category_ids=info.category_ids, image_size=size)
    for v, value in zip(model.trainable_variables, raw["weights"]):
        v.assign(value)
    out["raw"] = evaluation.evaluate_model(model, eval_examples, category_ids=info.category_ids, image_size=size)
    return out


def ablation(args, info, train, val):
    seeds = [int(s) for s in (args.seeds or str(args.seed)).split(",")]
    names = args.ablation.split(",")
    unknown = [n for n in names if n not in ABLATION]
    if unknown:
        raise SystemExit(f"error: unknown recipes {unknown}; expected some of {list(ABLATION)}")
    print(f"{'recipe':<22}{'EMA':>5}{'seed':>6}{'AP':>7}{'AP50':>7}{'APs':>7}{'train s':>9}", flush=True)
    lines = []
    for name in names:
        for seed in seeds:
            r = run_recipe(name, args, info, train, val, seed)
            for key in ("raw", "ema"):
                m = r[key]
                lines.append(f"{name:<22}{'yes' if key == 'ema' else 'no':>5}{seed:>6}{100 * m['AP']:>7.1f}"
                             f"{100 * m['AP50']:>7.1f}{100 * m['APs']:>7.1f}{r['train_s']:>9.0f}")
                print("ROW " + lines[-1], flush=True)
    print(f"\n{'recipe':<22}{'EMA':>5}{'seed':>6}{'AP':>7}{'AP50':>7}{'APs':>7}{'train s':>9}")
    print("\n".join(lines))


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
    if args.ablation:
        return ablation(args, info, train, val)
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
