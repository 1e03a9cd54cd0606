"""`load`: any dataset source as unbatched examples in one format, one example at a time.

Sources: a tensorflow-datasets name ("keras_focal_shapes", "coco/2017", "voc/2007", "voc/2012"), a COCO-format
JSON file, a Pascal VOC folder or a YOLO data YAML (`keras_focal.data.sources` reads the three file formats).

Each example is `(image, targets)` with `image` uint8 [H, W, 3] and
`targets = {"boxes": float32 [M, 4] normalized yxyx, "classes": int32 [M]}` (unbatched, unpadded, M may be 0).

Annotation clean-up, the same for every dataset:
- `bbox` and `label` of different lengths (tfds mock data produces these): both are cut to the shorter length.
- Boxes are clipped to [0, 1]; boxes that are then inverted (ymin > ymax or xmin > xmax), of zero area, or not
  finite are **dropped** (never reordered: an inverted box is a corrupt annotation, not a box to guess at).
- COCO crowd regions (`objects/is_crowd`) are excluded from the targets. With `keep_crowd=True` they are kept and
  flagged in an extra `targets["is_crowd"]` (bool [M]) so that evaluation can pass them to COCOeval as crowd;
  `make_dataset` never gives crowd boxes to the encoder.
- VOC boxes marked `is_difficult` are excluded unless `keep_difficult=True` (the usual VOC training practice).

The file sources follow the same rules on their own annotations (see `keras_focal.data.sources`).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from keras_focal.data import catalog, shapes_dataset, sources
from keras_focal.image_limits import DEFAULT_MAX_IMAGE_PIXELS


def _aligned(values, n, fill):
    """`values` (a 1-D tensor) cut or padded with `fill` to length n."""
    values = values[:n]
    pad = n - tf.shape(values)[0]
    return tf.concat([values, tf.fill([pad], tf.cast(fill, values.dtype))], axis=0)


def clean_annotations(boxes, labels, exclude=None, keep_flags=None):
    """Applies the clean-up rules above. boxes [N, 4], labels [K], exclude/keep_flags bool [L] (any lengths).

    Returns (boxes float32 [M, 4], classes int32 [M], flags bool [M] or None): `exclude` marks boxes to drop;
    `keep_flags` is carried along for the boxes kept (e.g. is_crowd when crowd boxes are kept).
    """
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    n = tf.minimum(tf.shape(boxes)[0], tf.shape(labels)[0])
    boxes, labels = boxes[:n], labels[:n]
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
    boxes = tf.where(finite[:, None], boxes, tf.zeros_like(boxes))
    boxes = tf.clip_by_value(boxes, 0.0, 1.0)
    keep = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (labels >= 0)
    if exclude is not None:
        keep &= ~_aligned(tf.reshape(tf.cast(exclude, tf.bool), [-1]), n, False)
    flags = None
    if keep_flags is not None:
        flags = tf.boolean_mask(_aligned(tf.reshape(tf.cast(keep_flags, tf.bool), [-1]), n, False), keep)
    return tf.boolean_mask(boxes, keep), tf.boolean_mask(labels, keep), flags


def _to_contract(example, keep_crowd, keep_difficult):
    objects = example["objects"]
    exclude = None
    flags = None
    if "is_crowd" in objects:
        if keep_crowd:
            flags = objects["is_crowd"]
        else:
            exclude = objects["is_crowd"]
    if "is_difficult" in objects and not keep_difficult:
        exclude = objects["is_difficult"] if exclude is None else exclude  # VOC has no crowd
    boxes, classes, flags = clean_annotations(objects["bbox"], objects["label"], exclude, flags)
    image = example["image"]
    if image.shape[-1] == 1:  # grayscale features
        image = tf.image.grayscale_to_rgb(image)
    image = tf.ensure_shape(image, [None, None, 3])
    targets = {"boxes": tf.ensure_shape(boxes, [None, 4]), "classes": classes}
    if flags is not None:
        targets["is_crowd"] = flags
    return tf.cast(image, tf.uint8), targets


def load(source: str = shapes_dataset.NAME, split: str = "train", *, image_dir: str | None = None,
         class_names=None, on_error: str = "raise", data_dir: str | None = None, shuffle_files: bool = False,
         download: bool = True, keep_crowd: bool = False, keep_difficult: bool = False, read_config=None,
         max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    """Loads a detection dataset as unbatched `(image uint8 [H, W, 3], {"boxes" [M, 4], "classes" [M]})`.

    source: a tfds name: "keras_focal_shapes" (default; alias "shapes"; "keras_focal_shapes/small" for the tiny
        config), "coco/2017", "voc/2007", "voc/2012" (unknown names raise ValueError listing them); or a path: a
        COCO-format `.json` file, a Pascal VOC folder (holding `Annotations/`), a YOLO data `.yaml`.
    split: a tfds split expression ("train", "validation", "test", "train[:10%]", ...); for a VOC folder the
        `ImageSets/Main/<split>.txt` list ("validation" -> val.txt); for YOLO "train", "validation"/"val", "test";
        not used by a COCO JSON file (one file is one split).
    image_dir: where a COCO file's `file_name`s are (default: the JSON file's folder) or a VOC folder's images
        (default `JPEGImages/`).
    class_names: a VOC folder's classes (default: the 20 VOC names, or the sorted names its XML files use).
    on_error: "raise" (default): bad input found in the annotations (a malformed file, an undeclared category /
        class, a missing image file, a YOLO line with the wrong number of fields) raises `DataSourceError` (a
        ValueError) naming each offending file, here, before any training step; bytes that do not decode as an
        image raise when the example is read, naming the file. "skip": such examples are left out, with a warning.
    keep_crowd: keep COCO crowd boxes, flagged in `targets["is_crowd"]` (for evaluation).
    keep_difficult: keep VOC `difficult` objects.
    max_image_pixels: annotation-file sources only: an image whose header declares more pixels fails (or with
        "skip", is left out) naming the file, before it is decoded (`keras_focal.image_limits`); None: no limit.
    data_dir, shuffle_files, download, read_config: tensorflow-datasets' own (tfds names only). `download`
        prepares a missing tfds dataset (the built-in one is generated locally, no network).
    """
    if catalog.is_source_path(source):
        annotations = sources.read(source, split, image_dir=image_dir, class_names=class_names,
                                   keep_difficult=keep_difficult, on_error=on_error)
        return sources.stream(annotations, keep_crowd=keep_crowd, on_error=on_error,
                              max_image_pixels=max_image_pixels)
    canonical, config = catalog.resolve_name(source)
    if image_dir is not None or class_names is not None:
        raise ValueError(f"image_dir and class_names apply to annotation files, not to the tfds dataset {source!r}")
    tfds_name = canonical
    if canonical == shapes_dataset.NAME and config:
        tfds_name = f"{canonical}/{config}"
    ds = tfds.load(tfds_name, split=split, data_dir=data_dir, shuffle_files=shuffle_files, download=download,
                   read_config=read_config)
    return ds.map(lambda ex: _to_contract(ex, keep_crowd, keep_difficult),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
