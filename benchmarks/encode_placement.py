"""Where to compute the anchor targets: in the tf.data pipeline or in the train step (`keras-focal train --encode-in`).

    python benchmarks/encode_placement.py                                   # the compact main-job model, 128 px
    python benchmarks/encode_placement.py --backbone resnet50 --fpn-width 256 --head-convs 4 --image-size 640 \\
        --head retina --batch-size 2 --steps 3                              # the paper's RetinaNet at 640 px

Both placements train the same detector (two copies, same initial weights) with `fit` on the same files (the JPEGs
and COCO JSON of benchmarks/input_pipeline.py), augmentation on, the full input pipeline included: "pipeline" gives
`make_dataset` the head's encoder, "model" leaves the targets as boxes and the train step encodes them. The two take
turns, one `fit(steps_per_epoch=--steps)` each per round (a fresh iterator each: the pipeline's start-up is
included in both); the figure is the median images/s over --rounds rounds
after a warmup fit.
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from input_pipeline import coco_examples, write_coco_files  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--head", default="gfl", choices=["retina", "gfl"])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--fpn-width", type=int, default=64)
    p.add_argument("--head-convs", type=int, default=2)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="train steps per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--boxes", type=int, default=20)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import keras

    import keras_focal
    from keras_focal.data import make_dataset

    size = (args.image_size, args.image_size)
    with tempfile.TemporaryDirectory(prefix="kf-placement-") as folder:
        examples = coco_examples(write_coco_files(folder, args.images, args.boxes)).cache()
        fits = {}
        for placement in ("pipeline", "model"):
            keras.utils.set_random_seed(0)
            model = keras_focal.models.RetinaNet(3, backbone=args.backbone, head=args.head,
                                                 fpn_width=args.fpn_width, head_convs=args.head_convs,
                                                 image_size=size)
            model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9))
            ds = make_dataset(examples, image_size=size, batch_size=args.batch_size, augment=True, repeat=True,
                              drop_remainder=True,
                              encoder=model.anchor_encoder if placement == "pipeline" else None)

            def fit(model=model, ds=ds):
                model.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0)

            fits[placement] = fit
        for fit in fits.values():
            fit()  # tracing
        seconds = {name: [] for name in fits}
        for _ in range(args.rounds):
            for name, fit in fits.items():
                start = time.perf_counter()
                fit()
                seconds[name].append(time.perf_counter() - start)
        images = args.steps * args.batch_size
        print(f"{args.head} head, {args.backbone}, FPN {args.fpn_width}, {args.head_convs} convs, {size[0]} px, "
              f"batch {args.batch_size}, {args.boxes} boxes per image, {os.cpu_count()} CPU cores")
        for name, s in seconds.items():
            print(f"  encode in the {name:<8}: {images / statistics.median(s):6.2f} images/s (train step included)")
        ratio = statistics.median(a / b for a, b in zip(seconds["model"], seconds["pipeline"]))
        print(f"  pipeline / model speed: {ratio:.2f}")


if __name__ == "__main__":
    main()
