"""Evaluate a detector on a dataset with COCOeval, and a Keras callback doing it every N epochs."""

from __future__ import annotations

import time

import keras
import tensorflow as tf

from keras_focal import letterbox as letterboxing
from keras_focal.evaluation.coco import COCOEvaluator
from keras_focal.export.layout import latest_version_dir, read_class_names


def detection_fn(model):
    """A function images -> detections dict (numpy-convertible) for: a model with `.detect` (RetinaNet), a loaded
    SavedModel (its `serving_default` signature, fed uint8 `images`), or any callable returning the dict."""
    if hasattr(model, "detect"):
        return model.detect
    signatures = getattr(model, "signatures", None)
    if signatures is not None and "serving_default" in signatures:
        serve = signatures["serving_default"]

        def run(images):
            images = tf.cast(tf.clip_by_value(tf.round(tf.cast(images, tf.float32)), 0, 255), tf.uint8)
            return serve(images=images)

        return run
    if callable(model):
        return model
    raise TypeError(f"Cannot run detections with {type(model).__name__}: it has no .detect and is not callable.")


def _is_batched(dataset):
    spec = dataset.element_spec
    image_spec = spec[0] if isinstance(spec, (tuple, list)) else spec["images"]
    return image_spec.shape.rank == 4


def _batched_with_sizes(dataset, image_size, batch_size, letterbox=False):
    """Unbatched (image, targets) -> batches of (resized float images, padded targets, true sizes [B, 2], content
    [B, 2]: the fraction of the model's frame each image covers, 1 unless letterboxed)."""
    from keras_focal.data.pipeline import pad_targets, resize_image

    def prep(image, targets):
        size = tf.shape(image)[:2]
        extra = {"is_crowd": targets["is_crowd"]} if "is_crowd" in targets else None
        t = pad_targets(targets["boxes"], targets["classes"], max_boxes=_MAX_EVAL_BOXES, extra=extra)
        if letterbox:
            frame, content = letterboxing.letterbox(image, image_size)
            return frame, t, size, content
        return resize_image(image, image_size), t, size, tf.ones([2], tf.float32)

    return dataset.map(prep, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


_MAX_EVAL_BOXES = 300


def evaluate_model(model, dataset, num_classes=None, class_names=None, category_ids=None, image_size=None,
                   batch_size=8, max_batches=None, verbose=False, return_evaluator=False, letterbox=None):
    """COCO metrics of `model` on `dataset`.

    model: anything `detection_fn` accepts (a RetinaNet with `.detect`, a loaded SavedModel, a callable).
    dataset: either batched `(images [B, H, W, 3], {"boxes", "classes"})` as from `make_dataset` (boxes are then
        scaled to pixels with the batch's image size), or unbatched `(image, {"boxes", "classes"})` as from
        `keras_focal.data.load` (images are resized to `image_size`, default `model.image_size`, for the model, and
        boxes are scaled with each image's true size, so small/medium/large use the original pixel areas).
    num_classes / class_names / category_ids: see `COCOEvaluator` (num_classes defaults to model.num_classes).
    max_batches: evaluate only this many batches.
    letterbox: resize unbatched images keeping their aspect ratio and pad them (`keras_focal.letterbox`), the
        detections mapped back to the original image; None: `model.letterbox` (False for a SavedModel, whose own
        serving graph resizes: pass True when it letterboxes).
    Returns {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", ...} (+ the evaluator).
    """
    if num_classes is None and class_names is None and category_ids is None:
        num_classes = getattr(model, "num_classes", None)
    evaluator = COCOEvaluator(num_classes=num_classes, class_names=class_names, category_ids=category_ids)
    detect = detection_fn(model)
    if _is_batched(dataset):
        def batches():
            for images, targets in dataset:
                shape = tf.shape(images)
                sizes = tf.tile(tf.reshape(shape[1:3], [1, 2]), [shape[0], 1])
                yield images, targets, sizes, None
        it = batches()
    else:
        if image_size is None:
            image_size = getattr(model, "image_size", None)
        if image_size is None:
            raise ValueError("An unbatched dataset needs image_size (or a model with .image_size).")
        if letterbox is None:
            letterbox = bool(getattr(model, "letterbox", False))
        it = iter(_batched_with_sizes(dataset, tuple(int(s) for s in image_size), batch_size, letterbox))
    start = time.time()
    for step, (images, targets, sizes, content) in enumerate(it):
        if max_batches is not None and step >= max_batches:
            break
        out = detect(images)
        boxes = out["detection_boxes"]
        if content is not None:
            boxes = letterboxing.boxes_from_frame(boxes, content)
        evaluator.update_batch(targets["boxes"], targets["classes"], boxes, out["detection_scores"],
                               out["detection_classes"], out.get("num_detections"), sizes, targets.get("is_crowd"))
    metrics = evaluator.result(verbose=verbose)
    if verbose:
        print(f"COCOeval on {evaluator.num_images} images in {time.time() - start:.1f} s")
    return (metrics, evaluator) if return_evaluator else metrics


class COCOEvalCallback(keras.callbacks.Callback):
    """Runs `evaluate_model` every `every_n_epochs` epochs and after the last one, and logs the metrics.

    The numbers are added to the epoch `logs` as `prefix + name` (e.g. "val_AP50"), so callbacks placed after this
    one (TensorBoard, CSVLogger, ModelCheckpoint(monitor="val_AP")) see them; put it first in the callback list.
    NaN (undefined) values are logged as they are.
    """

    def __init__(self, dataset, every_n_epochs=1, num_classes=None, class_names=None, category_ids=None,
                 image_size=None, prefix="val_", max_batches=None, verbose=1, print_table=False):
        super().__init__()
        self.dataset = dataset
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.kwargs = dict(num_classes=num_classes, class_names=class_names, category_ids=category_ids,
                           image_size=image_size, max_batches=max_batches)
        self.prefix = prefix
        self.verbose = verbose
        self.print_table = print_table
        self.history = []  # (epoch, metrics)
        self.last_metrics = None
        self.evaluator = None

    def _evaluate(self, epoch, logs):
        metrics, self.evaluator = evaluate_model(self.model, self.dataset, return_evaluator=True, **self.kwargs)
        self.last_metrics = metrics
        self.history.append((epoch, metrics))
        if logs is not None:
            for k, v in metrics.items():
                logs[self.prefix + k] = v
        if self.verbose:
            text = " - ".join(f"{self.prefix}{k}: {v:.4f}" for k, v in metrics.items()
                              if k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"))
            print(f"\nEpoch {epoch + 1}: COCO {text}")
        if self.print_table:
            print(self.evaluator.table, end="")
        return metrics

    def on_epoch_end(self, epoch, logs=None):
        last = (self.params or {}).get("epochs")
        if (epoch + 1) % self.every_n_epochs == 0 or (last is not None and epoch + 1 == last):
            self._evaluate(epoch, logs)


def detector_class_names(model):
    """The class names a detector carries, or None: `model.class_names` (a RetinaNet, also after loading a
    `.keras` file) or, for a loaded SavedModel, its `assets/labels.txt`."""
    names = getattr(model, "class_names", None)
    if names:
        return tuple(str(n) for n in names)
    asset = getattr(model, "class_names_file", None)
    if asset is None:
        return None
    return read_class_names(asset.asset_path.numpy().decode("utf-8"))


def load_detector(path):
    """Loads a detector for evaluation / prediction from a `.keras` file (a `keras_focal.models.RetinaNet`, which
    has `.detect`), a SavedModel directory (`saved_model.pb` inside; run through its `serving_default` signature),
    a TF Serving export root `saved_models/<name>/` (its highest integer version is used), or a `.tflite` file
    written by `keras_focal.export.export_tflite` (run in the LiteRT interpreter, one image per call)."""
    import os

    path = os.fspath(path)
    if os.path.isfile(path) and path.endswith(".tflite"):
        from keras_focal.export.tflite import TFLiteDetector

        return TFLiteDetector(path)
    if os.path.isfile(path):
        if not path.endswith(".keras"):
            raise ValueError(f"{path}: expected a .keras or .tflite model file (weights-only checkpoints need the "
                             "model's constructor arguments; save with model.save('x.keras') or export a SavedModel).")
        import keras_focal.models  # noqa: F401 - registers the custom classes for deserialization

        return keras.saving.load_model(path, compile=False)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            version_dir = latest_version_dir(path)
            if version_dir is None:
                raise ValueError(f"{path}: no saved_model.pb and no integer version directories with one.")
            path = version_dir
        return tf.saved_model.load(path)
    raise FileNotFoundError(path)
