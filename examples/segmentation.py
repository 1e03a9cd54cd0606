"""Semantic segmentation with the focal loss: class-balanced alpha from pixel counts, a void label, and Dice.

It makes its own data (no download): noisy images of a background with three kinds of objects, one common and two
rare (large discs, small squares, thin bars), whose 1-pixel outlines are labelled 255, the void label of Pascal VOC.
One small fully-convolutional Keras net is trained twice from the same initial weights, for the same number of
steps, on the same data:

- `SparseCategoricalFocalLoss.from_counts(pixel counts, beta=0.99999, ignore_class=255)` plus `keras.losses.Dice`
  on the softmax (void pixels left out of both);
- plain `keras.losses.SparseCategoricalCrossentropy(ignore_class=255)`.

Both are scored with `keras.metrics.MeanIoU(ignore_class=255)` on held-out images; the per-class IoU shows where
the difference is (the rare classes).

    python examples/segmentation.py              # a few minutes on a 2-core CPU
    python examples/segmentation.py --tiny       # seconds: checks that everything runs

The losses work under every Keras backend: `KERAS_BACKEND=jax python examples/segmentation.py`.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

VOID = 255  # Pascal VOC's "void" label: object outlines, never scored nor trained on
CLASS_NAMES = ("background", "disc", "square", "bar")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a few images and steps: seconds, to check that it runs")
    p.add_argument("--size", type=int, default=40, help="image side in pixels")
    p.add_argument("--train-images", type=int, default=384)
    p.add_argument("--test-images", type=int, default=96)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--width", type=int, default=32, help="channels of the net's convolutions")
    p.add_argument("--dice-weight", type=float, default=1.0)
    p.add_argument("--method", default="effective", choices=("effective", "inverse"), help="from_counts method")
    # Pixel counts run to hundreds of thousands: the effective number (1 - beta^n) / (1 - beta) saturates at
    # 1 / (1 - beta), so the loss's default beta = 0.999 would give every class about the same weight.
    p.add_argument("--beta", type=float, default=0.99999,
                   help="from_counts beta (effective number; counts far above 1 / (1 - beta) get equal weights)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.tiny:
        args.size, args.train_images, args.test_images, args.epochs, args.width = 24, 16, 8, 1, 8
    return args


# ----------------------------------------------------------------------------------------------------------------
# Data


def make_data(num_images, size, seed):
    """Images float32 [N, size, size, 3] in [0, 1] and labels uint8 [N, size, size] (0..3, VOID on outlines).

    Each image has a textured background, 1-3 discs (radius 5-9 px), 0-2 squares (side 3-4 px) and 0-2 bars
    (1-2 px thick); each class has its own mean colour, blurred by noise strong enough that colour alone is not
    enough. Pixels within one pixel of an object's edge (inside or out) are VOID.
    """
    rng = np.random.default_rng(seed)
    colours = np.array([[0.45, 0.45, 0.45], [0.65, 0.4, 0.35], [0.35, 0.6, 0.45], [0.4, 0.4, 0.7]])
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.empty((num_images, size, size, 3), np.float32)
    labels = np.zeros((num_images, size, size), np.uint8)
    for n in range(num_images):
        label = np.zeros((size, size), np.uint8)
        edge = np.zeros((size, size), bool)
        shapes = [(1, rng.integers(1, 4)), (2, rng.integers(0, 3)), (3, rng.integers(0, 3))]
        for cls, count in shapes:
            for _ in range(count):
                cy, cx = rng.uniform(4, size - 4, 2)
                if cls == 1:
                    r = rng.uniform(5, 9)
                    d = np.hypot(yy - cy, xx - cx)
                    inside, band = d <= r, np.abs(d - r) <= 1.0
                elif cls == 2:
                    h = rng.uniform(1.5, 2.0)
                    d = np.maximum(np.abs(yy - cy), np.abs(xx - cx))
                    inside, band = d <= h, np.abs(d - h) <= 0.5
                else:
                    length, thick = rng.uniform(6, 12), rng.uniform(0.5, 1.0)
                    if rng.uniform() < 0.5:
                        along, across = np.abs(xx - cx), np.abs(yy - cy)
                    else:
                        along, across = np.abs(yy - cy), np.abs(xx - cx)
                    inside = (along <= length) & (across <= thick)
                    band = inside & ((across > thick - 0.5) | (along > length - 0.5))
                label[inside] = cls
                edge |= band
        label[edge] = VOID
        image = colours[np.where(label == VOID, 0, label)] + rng.normal(0, 0.12, (size, size, 3))
        image += 0.1 * np.sin(xx / rng.uniform(2, 6) + rng.uniform(0, 6))[..., None]  # background texture
        images[n] = np.clip(image, 0, 1)
        labels[n] = label
    return images, labels


def pixel_counts(labels, num_classes):
    """Per-class pixel counts, VOID left out (each at least 1, so that from_counts accepts them)."""
    counts = np.bincount(labels[labels != VOID].ravel(), minlength=num_classes)[:num_classes]
    return np.maximum(counts, 1)


# ----------------------------------------------------------------------------------------------------------------
# Model and losses


def build_model(size, num_classes, width, seed):
    """A small fully-convolutional net: two stride-2 stages, dilated context, upsampling with a skip; logits out."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x1 = layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu")(x1)
    x = layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(2 * width, 3, padding="same", dilation_rate=2, activation="relu")(x)
    x = layers.UpSampling2D(2, interpolation="bilinear")(x)
    x = layers.Concatenate()([x, x1])
    x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    logits = layers.Conv2D(num_classes, 1)(x)
    return keras.Model(inputs, logits)


def focal_dice_loss(counts, num_classes, dice_weight, method="effective", beta=0.999):
    """SparseCategoricalFocalLoss(alpha from the pixel counts, ignore_class=VOID) + dice_weight * Dice.

    Dice (`keras.losses.Dice` over the height and width axes, one value per image and class, then averaged) is
    taken on the softmax against the one-hot labels, with VOID pixels zeroed in both, so they count in neither loss.
    """
    import keras
    from keras import ops

    from keras_focal.losses import SparseCategoricalFocalLoss

    focal = SparseCategoricalFocalLoss.from_counts(counts, method=method, beta=beta, from_logits=True,
                                                   ignore_class=VOID)
    dice = keras.losses.Dice(axis=(1, 2))

    def loss(y_true, y_pred):
        labels = ops.cast(y_true, "int32")
        kept = ops.cast(ops.not_equal(labels, VOID), y_pred.dtype)[..., None]
        one_hot = ops.one_hot(ops.where(labels == VOID, 0, labels), num_classes, dtype=y_pred.dtype) * kept
        return focal(y_true, y_pred) + dice_weight * dice(one_hot, ops.softmax(y_pred, axis=-1) * kept)

    return focal, loss


# ----------------------------------------------------------------------------------------------------------------
# Train and score


def train_and_score(model, loss, data, args):
    """Trains `model` with `loss` (Adam, a fixed number of epochs) and returns (mean IoU, per-class IoU, seconds)."""
    import keras

    (x_train, y_train), (x_test, y_test) = data
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=0, shuffle=True)
    seconds = time.perf_counter() - start
    num_classes = len(CLASS_NAMES)
    metric = keras.metrics.MeanIoU(num_classes, ignore_class=VOID, sparse_y_true=True, sparse_y_pred=False)
    metric.update_state(y_test.astype("int32"), model.predict(x_test, batch_size=args.batch_size, verbose=0))
    confusion = keras.ops.convert_to_numpy(metric.total_cm).astype(np.float64)
    per_class = np.diag(confusion) / np.maximum(confusion.sum(0) + confusion.sum(1) - np.diag(confusion), 1)
    return float(metric.result()), per_class.tolist(), seconds


def run(args):
    import keras

    num_classes = len(CLASS_NAMES)
    train = make_data(args.train_images, args.size, args.seed)
    test = make_data(args.test_images, args.size, args.seed + 1)
    counts = pixel_counts(train[1], num_classes)
    focal, focal_dice = focal_dice_loss(counts, num_classes, args.dice_weight, args.method, args.beta)
    results = {"pixel_counts": counts.tolist(), "alpha": focal.alpha}
    runs = {
        "focal+dice": focal_dice,
        "cross-entropy": keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=VOID),
    }
    for name, loss in runs.items():
        model = build_model(args.size, num_classes, args.width, args.seed)  # the same initial weights for both
        miou, per_class, seconds = train_and_score(model, loss, (train, test), args)
        results[name] = {"mean_iou": miou, "per_class_iou": per_class, "train_seconds": seconds}
    return results


def main(argv=None):
    args = parse_args(argv)
    results = run(args)
    print(f"pixel counts {dict(zip(CLASS_NAMES, results['pixel_counts']))}")
    print(f"alpha (from_counts, method {args.method}, beta {args.beta}): "
          + ", ".join(f"{n} {a:.3f}" for n, a in zip(CLASS_NAMES, results["alpha"])))
    print(f"{'loss':<16}{'mean IoU':>9}  " + "".join(f"{n:>12}" for n in CLASS_NAMES) + f"{'train s':>9}")
    for name in ("focal+dice", "cross-entropy"):
        r = results[name]
        print(f"{name:<16}{r['mean_iou']:>9.3f}  " + "".join(f"{v:>12.3f}" for v in r["per_class_iou"])
              + f"{r['train_seconds']:>9.1f}")
    return results


if __name__ == "__main__":
    main()
