"""Inference latency per image, NMS included: the keras_focal SavedModel against keras-hub's
RetinaNetObjectDetector.predict, with the same ResNet backbone, FPN width, head depth and image size, in one process.

    python benchmarks/inference.py                                   # ResNet-50, 512x512, batch 1 and 8
    python benchmarks/inference.py --image-size 128 --batch 1 2 --iters 3 --backbone resnet18   # quick check

What is timed, per call (then divided by the batch size):
- `savedmodel`: `tf.saved_model.load(export)["serving_default"](uint8 images)`: resize, normalisation, network,
  box decoding, top-k and per-class NMS, all in the exported graph (what TF Serving runs).
- `keras_focal.predict`: the same model in process, `model.predict(images, batch_size=B)`.
- `keras_hub.predict`: `RetinaNetObjectDetector.predict(images, batch_size=B)` with its preprocessor (resize and
  normalisation, a RetinaNetImageConverter) and its NonMaxSuppression decoder, set to the same score threshold,
  IoU and number of detections.
Both models are untrained (random weights): the latency does not depend on the weights except through the number
of candidates reaching NMS, which the shared score threshold keeps comparable (--score-threshold).

The runners take turns call by call (`_profile.time_interleaved`; this machine's speed changes by 2x from one
moment to the next); each figure is the median of --iters calls. Report numbers from an otherwise idle machine.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _peers import (  # noqa: E402,F401
    IMAGENET_MEAN, IMAGENET_STD, RESNETS, build_keras_hub_detector, keras_hub_predictor,
)
from _profile import format_profile, profile_op_types, time_interleaved  # noqa: E402



def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet50", choices=sorted(RESNETS),
                   help="ResNet depth, the same for both models (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=512, help="square input size in pixels (default: %(default)s)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes to time (default: 1 8)")
    p.add_argument("--num-classes", type=int, default=80, help="number of classes (default: %(default)s, COCO)")
    p.add_argument("--fpn-width", type=int, default=256,
                   help="FPN / head channels; keras-hub's head is fixed at 256 (default: %(default)s)")
    p.add_argument("--head-convs", type=int, default=4, help="convs per subnet, both models (default: %(default)s)")
    p.add_argument("--score-threshold", type=float, default=0.05,
                   help="detection score threshold for both decoders (default: %(default)s)")
    p.add_argument("--iters", type=int, default=10, help="timed calls per configuration (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (default: %(default)s)")
    p.add_argument("--skip", nargs="*", default=[], choices=["savedmodel", "keras_focal.predict", "keras_hub.predict"],
                   help="runners to leave out")
    p.add_argument("--profile", action="store_true", help="after timing, print op time by op type for one call")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import tensorflow as tf

    import keras_focal.export
    from keras_focal.models import RetinaNet

    size = (args.image_size, args.image_size)
    print(f"backbone {args.backbone}, image {size[0]}x{size[1]}, {args.num_classes} classes, FPN {args.fpn_width}, "
          f"{args.head_convs} head convs, score threshold {args.score_threshold}; "
          f"devices: {[d.device_type for d in tf.config.list_logical_devices()]}")

    runners = {}
    if "savedmodel" not in args.skip or "keras_focal.predict" not in args.skip:
        model = RetinaNet(args.num_classes, backbone=args.backbone, fpn_width=args.fpn_width,
                          head_convs=args.head_convs, image_size=size, score_threshold=args.score_threshold)
        if "keras_focal.predict" not in args.skip:
            runners["keras_focal.predict"] = lambda x: model.predict(x.astype("float32"), batch_size=len(x),
                                                                     verbose=0)
        if "savedmodel" not in args.skip:
            export_dir = tempfile.mkdtemp(prefix="kf-bench-")
            start = time.perf_counter()
            version_dir = keras_focal.export.export_saved_model(model, os.path.join(export_dir, "bench"))
            print(f"export: {time.perf_counter() - start:.1f} s -> {version_dir}")
            serve = tf.saved_model.load(version_dir).signatures["serving_default"]
            runners["savedmodel"] = lambda x: {k: v.numpy() for k, v in serve(images=tf.constant(x)).items()}
    if "keras_hub.predict" not in args.skip:

        detector = build_keras_hub_detector(args)

        runners["keras_hub.predict"] = keras_hub_predictor(detector)

    rng = np.random.default_rng(0)
    results = {}
    for batch in args.batch:
        images = rng.integers(0, 256, size=(batch, *size, 3), dtype=np.uint8)
        calls = {name: (lambda run=run: run(images)) for name, run in runners.items()}
        medians, _ = time_interleaved(calls, args.iters, args.warmup)
        for name, seconds in medians.items():
            results[name, batch] = seconds / batch
            print(f"{name:22s} batch {batch:3d}: {1000 * seconds:9.1f} ms per call, "
                  f"{1000 * seconds / batch:8.1f} ms per image")
            if args.profile:
                print(format_profile(profile_op_types(calls[name])))

    if "keras_hub.predict" in runners:
        print("\nratio keras_hub.predict / runner (per image; > 1 means faster than keras-hub):")
        for batch in args.batch:
            reference = results["keras_hub.predict", batch]
            for name in runners:
                if name != "keras_hub.predict":
                    print(f"  batch {batch:3d}  {name:22s} {reference / results[name, batch]:6.2f}x")


if __name__ == "__main__":
    main()
