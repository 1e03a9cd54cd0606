"""Run a detector on images (or a dataset split) and write PNGs with boxes, class names and scores drawn.

    python examples/predict.py --model saved_models/retinanet --images a.jpg b.png --output-dir predictions
    python examples/predict.py --model runs/shapes/best.keras --split test --num-images 8
    python examples/predict.py --model tflite_models/shapes_gfl_dynamic.tflite --images a.jpg

Drawing uses matplotlib (Agg backend; no display needed).
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

_PALETTE = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
            "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1")


def draw_detections(image, boxes, scores, classes, class_names=None, score_threshold=0.3, num_detections=None,
                    path=None, ground_truth=None, dpi=100, scale=None):
    """Draws detections on one image with matplotlib.

    image: uint8 [H, W, 3]; boxes [N, 4] normalized yxyx; scores [N]; classes [N]; num_detections: use only the
    first N; ground_truth: optional (boxes [M, 4], classes [M]) drawn dashed in white.
    Returns the rendered picture as uint8 [H', W', 3] (H' = scale * H, scale defaults to fit >= 512 px); writes it
    to `path` (PNG) when given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    h, w = image.shape[:2]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    classes = np.round(np.asarray(classes, np.float32).reshape(-1)).astype(np.int64)
    n = len(scores) if num_detections is None else min(int(num_detections), len(scores))
    scale = scale or max(1.0, 512.0 / max(h, w))
    fig = plt.figure(figsize=(w * scale / dpi, h * scale / dpi), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(image, interpolation="nearest")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.axis("off")
    if ground_truth is not None:
        for (y0, x0, y1, x1), c in zip(np.asarray(ground_truth[0]).reshape(-1, 4), np.asarray(ground_truth[1])):
            if c < 0:
                continue
            ax.add_patch(Rectangle((x0 * w - 0.5, y0 * h - 0.5), (x1 - x0) * w, (y1 - y0) * h, fill=False,
                                   edgecolor="white", linestyle="--", linewidth=1))
    for i in range(n):
        if scores[i] < score_threshold:
            continue
        y0, x0, y1, x1 = np.clip(boxes[i], 0, 1)
        c = int(classes[i])
        colour = _PALETTE[c % len(_PALETTE)]
        ax.add_patch(Rectangle((x0 * w - 0.5, y0 * h - 0.5), (x1 - x0) * w, (y1 - y0) * h, fill=False,
                               edgecolor=colour, linewidth=2))
        name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
        ax.text(x0 * w - 0.5, y0 * h - 0.5, f"{name} {scores[i]:.2f}", color="black", fontsize=8,
                va="bottom", ha="left", bbox=dict(facecolor=colour, edgecolor="none", pad=1, alpha=0.85))
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    picture = rgba[..., :3].copy()
    if path:
        fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return picture


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="a .keras model file, a SavedModel directory, an export root holding integer versions, "
                        "or a .tflite file (examples/export.py --format tflite)")
    p.add_argument("--images", nargs="*", default=None, help="image files (JPEG/PNG); if none, use --dataset/--split")
    p.add_argument("--dataset", default="keras_focal_shapes",
                   help="dataset for class names, and for images when --images is not given")
    p.add_argument("--split", default="test", help="dataset split to draw from when --images is not given")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")
    p.add_argument("--num-images", type=int, default=8, help="how many dataset images to draw")
    p.add_argument("--image-size", type=int, nargs="+", default=None,
                   help="H [W] the model input is resized to (default: the model's image_size, else 128)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="draw detections scoring at least this")
    p.add_argument("--output-dir", default="predictions", help="where the PNGs go")
    p.add_argument("--show-ground-truth", action="store_true", help="also draw the dataset's boxes (dashed)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    import keras_focal.data as kd
    import keras_focal.evaluation as ke

    class_names = kd.dataset_info(args.dataset).class_names
    model = ke.load_detector(args.model)
    detect = ke.detection_fn(model)
    if args.image_size:
        size = tuple(args.image_size) if len(args.image_size) == 2 else (args.image_size[0],) * 2
    else:
        size = tuple(getattr(model, "image_size", None) or (128, 128))
    if args.images:
        items = []
        for f in args.images:
            img = tf.io.decode_image(tf.io.read_file(f), channels=3, expand_animations=False).numpy()
            items.append((os.path.splitext(os.path.basename(f))[0], img, None))
    else:
        ds = kd.load(args.dataset, split=args.split, data_dir=args.data_dir).take(args.num_images)
        items = [(f"{args.split}_{i:04d}", img.numpy(), (t["boxes"].numpy(), t["classes"].numpy()))
                 for i, (img, t) in enumerate(ds)]
    os.makedirs(args.output_dir, exist_ok=True)
    for name, img, gt in items:
        x = kd.resize_image(img, size)[None]
        out = {k: np.asarray(v)[0] for k, v in detect(x).items()}
        path = os.path.join(args.output_dir, f"{name}.png")
        draw_detections(img, out["detection_boxes"], out["detection_scores"], out["detection_classes"],
                        class_names, args.score_threshold, out.get("num_detections"), path=path,
                        ground_truth=gt if args.show_ground_truth else None)
        n = int(np.sum(out["detection_scores"][: int(out.get("num_detections", len(out["detection_scores"])))]
                       >= args.score_threshold))
        print(f"{path}: {n} detections >= {args.score_threshold}")


if __name__ == "__main__":
    main()
