"""Training throughput: keras_focal's RetinaNet against keras-hub's RetinaNetObjectDetector, same process.

    python benchmarks/train_step.py                                    # ResNet-50-FPN, 512 and 256 px, batch 2
    python benchmarks/train_step.py --image-size 128 --steps 3 --backbone resnet18   # quick check

Both detectors: the same ResNet (keras-hub ResNetBackbone), P3-P7 with P6 from C5, 4-conv 256-wide subnets, SGD
momentum 0.9, random init, batch 2, the same random images and boxes. keras_focal encodes the anchor targets in the
tf.data pipeline (its normal training path); keras-hub encodes them in its train step (its only path). A step is one
`fit(steps_per_epoch=1)` (the same call overhead for both); the time is the median over --steps steps after --warmup
steps, the two detectors taking turns step by step (`_profile.time_interleaved`: this machine's speed changes by 2x
from one moment to the next). The achieved
GFLOP/s uses the forward FLOPs TensorFlow's profiler counts for keras_focal's model, times 3 for forward + backward.
--profile prints the op time by op type of one step of each.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _peers import RESNETS, build_keras_hub_detector  # noqa: E402
from _profile import format_profile, profile_op_types, time_interleaved  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet50", choices=sorted(RESNETS))
    p.add_argument("--image-size", type=int, nargs="+", default=[512, 256])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=80)
    p.add_argument("--head-convs", type=int, default=4)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (tracing)")
    p.add_argument("--jit-compile", action="store_true", help="compile both train steps with XLA")
    p.add_argument("--skip", nargs="*", default=[], choices=["keras_focal", "keras_hub"])
    p.add_argument("--score-threshold", type=float, default=0.05)
    p.add_argument("--profile", action="store_true", help="after timing, print op time by op type for one step")
    return p.parse_args(argv)


def random_batch(rng, batch, size, num_classes, max_boxes=8):
    import numpy as np

    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    boxes = np.full((batch, max_boxes, 4), -1.0, "float32")
    classes = np.full((batch, max_boxes), -1, "int32")
    for i in range(batch):
        n = rng.integers(1, max_boxes + 1)
        corner = rng.uniform(0.0, 0.6, (n, 2))
        extent = rng.uniform(0.1, 0.4, (n, 2))
        boxes[i, :n] = np.concatenate([corner, corner + extent], -1)
        classes[i, :n] = rng.integers(0, num_classes, n)
    return images, boxes, classes


def forward_gflops(model, size):
    """Forward FLOPs of one image counted by TensorFlow's profiler on the traced graph."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, size, size, 3], tf.float32))
    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return model_analyzer.profile(fn.graph, options=opts).total_float_ops / 1e9


def main(argv=None):
    args = parse_args(argv)
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_focal.models import RetinaNet

    print(f"{args.backbone}-FPN, batch {args.batch}, {args.head_convs}-conv heads, jit_compile={args.jit_compile}, "
          f"{os.cpu_count()} CPUs, devices {[d.device_type for d in tf.config.list_logical_devices()]}")
    rng = np.random.default_rng(0)
    for size in args.image_size:
        images, boxes, classes = random_batch(rng, args.batch, size, args.num_classes)
        steps = {}
        if "keras_focal" not in args.skip:
            model = RetinaNet(args.num_classes, backbone=args.backbone, head_convs=args.head_convs, image_size=(size, size))
            model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=args.jit_compile)
            # Targets encoded per image outside the step, as the tf.data pipeline does.
            encoded = [model.anchor_encoder(boxes[i], classes[i], size, size) for i in range(args.batch)]
            targets = {"boxes": boxes, "classes": classes, **{k: np.stack([e[k] for e in encoded]) for k in encoded[0]}}
            data = tf.data.Dataset.from_tensors((images, targets)).repeat()
            steps["keras_focal"] = lambda m=model, d=data: m.fit(d, steps_per_epoch=1, epochs=1, verbose=0)
            gflop = 3 * forward_gflops(model, size) * args.batch
        if "keras_hub" not in args.skip:
            hub = build_keras_hub_detector(argparse.Namespace(**{**vars(args), "image_size": size}))
            hub.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=args.jit_compile)
            # keras-hub takes absolute-pixel boxes in its bounding_box_format ("yxyx") and "labels".
            hub_data = tf.data.Dataset.from_tensors(
                (images, {"boxes": boxes * size, "labels": classes.astype("float32")})).repeat()
            steps["keras_hub"] = lambda m=hub, d=hub_data: m.fit(d, steps_per_epoch=1, epochs=1, verbose=0)
        seconds, ratios = time_interleaved(steps, args.steps, args.warmup)
        for name, sec in seconds.items():
            extra = f", {gflop / sec:.1f} GFLOP/s achieved ({gflop / args.batch:.1f} GFLOP per training image)" \
                if name == "keras_focal" else ""
            print(f"{size} px {name + ':':<12} {sec:.3f} s/step (median of {args.steps}), "
                  f"{args.batch / sec:.2f} images/s{extra}")
            if args.profile:
                print(format_profile(profile_op_types(steps[name])))
        if len(steps) == 2:
            print(f"{size} px speed-up keras_focal / keras_hub: {seconds['keras_hub'] / seconds['keras_focal']:.2f}x "
                  f"(median of the per-round ratios: {1 / ratios['keras_hub']:.2f}x)")


if __name__ == "__main__":
    main()
