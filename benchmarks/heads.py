"""The heads and assigners against each other on the built-in dataset, at the main job's compact configuration and
budget: RetinaNet, RetinaNet with ATSS, GFL, TOOD and TOOD's options.

    python benchmarks/heads.py                                        # every variant, seed 0
    python benchmarks/heads.py --variants gfl,tood --seeds 0,1,2      # several seeds where the differences are small
    python benchmarks/heads.py --epochs 1 --train-examples 64 --eval-examples 16     # a smoke run
    python benchmarks/heads.py --step-time --variants retina,gfl,tood,tood_no_box_alignment   # train-step time

Every variant: ResNet-18 from random init, FPN and head 64 wide with 2 convs, 128 px, batch 8, AdamW 1e-3 with the
step schedule (`keras_focal.training.make_optimizer`), 4 epochs of the 2000 training images, augmentation on, the
same seed and input order; COCO AP / AP50 / AP75 / AP_S from `keras_focal.evaluation.evaluate_model`.
`--step-time` instead times one training step of each variant at 128 px (batch 8) and 512 px (batch 2) on random
images with 10 boxes each, the variants taking turns (`_profile.time_interleaved`); every head gets the plain boxes
and classes, so each computes its targets inside the step. RetinaNet's and
GFL's targets are encoded in the input pipeline, TOOD's in the train step (its assigner reads the predictions). TOOD's warm-up
(ATSS + focal) covers the first third of the run's steps (`head.total_steps`).

- `retina`: `RetinaNetHead` defaults (IoU assigner, 9 anchors per location);
- `retina_atss`: `RetinaNetHead(assigner=ATSSAssigner())`, the ATSS paper's RetinaNet (Zhang et al. 2020: about
  +2 AP on COCO with the same head);
- `gfl`: `GFLHead` defaults;
- `tood`: `TOODHead` defaults (box alignment on; the small-object rule of `TaskAlignedAssigner` on);
- `tood_warmup_10`: `TOODHead(warmup_fraction=0.1)`, a tenth of the steps in the warm-up instead of a third;
- `tood_no_box_alignment`: `TOODHead(box_alignment=False)`: what box alignment is worth is the difference with `tood`;
- `tood_no_small`: `TaskAlignedAssigner(ensure_positive=False)`, mmdetection's assigner exactly, and
  `tood_no_box_alignment_warmup_10`, `tood_no_warmup`: `warmup_fraction=0.1` and `0`; these three keep box
  alignment off and compare with `tood_no_box_alignment`.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

VARIANTS = ("retina", "retina_atss", "gfl", "tood", "tood_warmup_10", "tood_no_box_alignment", "tood_no_small",
            "tood_no_box_alignment_warmup_10", "tood_no_warmup")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; each variant runs once per seed")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--fpn-width", type=int, default=64)
    p.add_argument("--head-convs", type=int, default=2)
    p.add_argument("--train-examples", type=int, default=None, help="use only the first N training images")
    p.add_argument("--eval-examples", type=int, default=None, help="evaluate on the first N validation images")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data_dir")
    p.add_argument("--step-time", action="store_true", help="time a training step of each variant instead")
    p.add_argument("--steps", type=int, default=5, help="--step-time: timed steps per variant (median)")
    return p.parse_args(argv)


def head_for(variant, convs):
    from keras_focal.assigners import ATSSAssigner, TaskAlignedAssigner
    from keras_focal.models.heads import GFLHead, RetinaNetHead, TOODHead

    heads = {
        "retina": lambda: RetinaNetHead(num_convs=convs),
        "retina_atss": lambda: RetinaNetHead(num_convs=convs, assigner=ATSSAssigner()),
        "gfl": lambda: GFLHead(num_convs=convs),
        "tood": lambda: TOODHead(num_convs=convs),
        "tood_warmup_10": lambda: TOODHead(num_convs=convs, warmup_fraction=0.1),
        "tood_no_box_alignment": lambda: TOODHead(num_convs=convs, box_alignment=False),
        "tood_no_small": lambda: TOODHead(num_convs=convs, box_alignment=False,
                                          assigner=TaskAlignedAssigner(ensure_positive=False)),
        "tood_no_box_alignment_warmup_10": lambda: TOODHead(num_convs=convs, box_alignment=False,
                                                            warmup_fraction=0.1),
        "tood_no_warmup": lambda: TOODHead(num_convs=convs, box_alignment=False, warmup_fraction=0.0),
    }
    if variant not in heads:
        raise SystemExit(f"error: unknown variant {variant!r}; expected some of {VARIANTS}")
    return heads[variant]()


def run(variant, seed, args, info, train, val):
    import keras

    import keras_focal
    from keras_focal import data, evaluation

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    size = (args.image_size, args.image_size)
    steps = max(1, int(train.cardinality()) // args.batch_size)
    head = head_for(variant, args.head_convs)
    model = keras_focal.models.RetinaNet(info.num_classes, backbone="resnet18", head=head,
                                         fpn_width=args.fpn_width, image_size=size)
    head.total_steps = steps * args.epochs  # what the training entry point sets: the warm-up is a third of it
    model.compile(optimizer=keras_focal.training.make_optimizer(
        "adamw", steps_per_epoch=steps, epochs=args.epochs, batch_size=args.batch_size))
    ds = data.make_dataset(train, image_size=size, batch_size=args.batch_size, encoder=model.anchor_encoder,
                           augment=True, shuffle=True, repeat=True, seed=seed, drop_remainder=True)
    start = time.time()
    model.fit(ds, epochs=args.epochs, steps_per_epoch=steps, verbose=2)
    seconds = time.time() - start
    metrics = evaluation.evaluate_model(model, val, category_ids=info.category_ids, image_size=size)
    return metrics, seconds


def step_times(args, num_classes=5):
    """Median seconds of one `fit` step of each variant, at 128 px batch 8 and 512 px batch 2."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_focal
    from _profile import time_interleaved

    variants = args.variants.split(",")
    rng = np.random.default_rng(0)
    for size, batch in ((128, 8), (512, 2)):
        corner = rng.uniform(0.0, 0.7, (batch, 10, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(0.05, 0.3, (batch, 10, 2))], -1).astype("float32")
        data = tf.data.Dataset.from_tensors((
            rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"),
            {"boxes": boxes, "classes": rng.integers(0, num_classes, (batch, 10)).astype("int32")})).repeat()
        steps = {}
        for variant in variants:
            head = head_for(variant, args.head_convs)
            head.total_steps = 1000  # the warm-up is its first third: these steps are in it, as a run's first are
            model = keras_focal.models.RetinaNet(num_classes, backbone="resnet18", head=head,
                                                 fpn_width=args.fpn_width, image_size=(size, size))
            model.compile(optimizer=keras.optimizers.AdamW(1e-3))
            steps[variant] = lambda m=model: m.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
        seconds, _ = time_interleaved(steps, args.steps)
        for variant in variants:
            print(f"{size} px, batch {batch}: {variant:<24}{seconds[variant]:.3f} s/step "
                  f"({seconds[variant] / seconds[variants[0]]:.2f}x {variants[0]})", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.step_time:
        return step_times(args)
    from keras_focal import data

    info = data.dataset_info("keras_focal_shapes")
    train = data.load("keras_focal_shapes", "train", data_dir=args.data_dir)
    val = data.load("keras_focal_shapes", "validation", data_dir=args.data_dir)
    if args.train_examples:
        train = train.take(args.train_examples)
    if args.eval_examples:
        val = val.take(args.eval_examples)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant in args.variants.split(","):
            metrics, seconds = run(variant, seed, args, info, train, val)
            rows.append((variant, seed, metrics, seconds))
            print(f"{variant} seed {seed}: AP {100 * metrics['AP']:.1f}", flush=True)
    print(f"\n{'variant':<22}{'seed':>5}{'AP':>7}{'AP50':>7}{'AP75':>7}{'AP_S':>7}{'train s':>9}")
    for variant, seed, m, seconds in rows:
        print(f"{variant:<22}{seed:>5}{100 * m['AP']:>7.1f}{100 * m['AP50']:>7.1f}{100 * m['AP75']:>7.1f}"
              f"{100 * m['APs']:>7.1f}{seconds:>9.0f}")


if __name__ == "__main__":
    main()
