"""What every annotation-file source shares: the in-memory annotations, the bad-input policy, and the stream
that decodes the images inside tf.data.

A source reader (COCO JSON, VOC, YOLO) parses its annotation files once into an `Annotations`: one image path,
declared size, boxes and classes per image, all in memory (a 100k-image dataset is a few tens of MB of
numbers). `stream(annotations)` turns it into the unbatched examples of `keras_focal.data.load`, reading and
decoding each image file in a parallel tf.data map, so no image is held in memory before it is needed.

Box rule, the same as the tfds loaders: boxes are clipped to the image, and boxes of zero area (or with
non-finite coordinates) after clipping are dropped.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import tensorflow as tf

from keras_focal import image_limits

ON_ERROR = ("raise", "skip")
# The image files a source or a folder of photos may hold (what tf.io.decode_image reads).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# How many offending examples a warning or an error message names.
NAMED_PROBLEMS = 5


class DataSourceError(ValueError):
    """Bad input in a dataset source; the message names the file and the problem."""


@dataclasses.dataclass
class Annotations:
    """One split of a source, in memory.

    class_names: index = contiguous class id of the targets. category_ids: the id of each class in the source
    (COCO's category ids; `i + 1` for VOC and YOLO). image_paths / image_ids / image_sizes: one entry per image;
    image_sizes are the declared (height, width) in pixels, (0, 0) where the format declares none (YOLO).
    boxes: per image float32 [M, 4] normalized yxyx; classes: int32 [M]; is_crowd: bool [M].
    """

    source: str
    class_names: tuple
    category_ids: tuple
    image_paths: list
    image_ids: list
    image_sizes: list
    boxes: list
    classes: list
    is_crowd: list

    def __len__(self):
        return len(self.image_paths)

    def subset(self, keep):
        """The images whose index is in `keep` (in their order)."""
        keep = list(keep)

        def pick(values):
            return [values[i] for i in keep]

        return dataclasses.replace(
            self, image_paths=pick(self.image_paths), image_ids=pick(self.image_ids),
            image_sizes=pick(self.image_sizes), boxes=pick(self.boxes), classes=pick(self.classes),
            is_crowd=pick(self.is_crowd))


class Problems:
    """Collects bad examples while a source is read, then applies `on_error` once.

    `add(file, message, image=None)` records one problem; `image` is the index of the image it spoils (None when
    the problem spoils no single image, e.g. an annotation that names an unknown image id, which is then dropped).
    """

    def __init__(self, source, on_error):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.source = source
        self.on_error = on_error
        self.messages = []
        self.bad_images = set()

    def add(self, file, message, image=None):
        self.messages.append(f"{file}: {message}")
        if image is not None:
            self.bad_images.add(image)

    def resolve(self, annotations):
        """Raises DataSourceError (on_error="raise") or warns and returns the annotations without the bad images."""
        if not self.messages:
            return annotations
        first = "\n  ".join(self.messages[:NAMED_PROBLEMS])
        more = f"\n  ... and {len(self.messages) - NAMED_PROBLEMS} more" if len(self.messages) > NAMED_PROBLEMS else ""
        if self.on_error == "raise":
            raise DataSourceError(f"{len(self.messages)} problem(s) in {self.source}:\n  {first}{more}\n"
                                  "(pass on_error='skip' to leave these examples out)")
        keep = [i for i in range(len(annotations)) if i not in self.bad_images]
        warnings.warn(f"{self.source}: skipped {len(annotations) - len(keep)} of {len(annotations)} images "
                      f"({len(self.messages)} problem(s)):\n  {first}{more}", stacklevel=4)
        return annotations.subset(keep)


def require_path(path, what="dataset source"):
    if not os.path.exists(path):
        raise DataSourceError(f"{what} {path} does not exist")


def normalized_boxes(x0, y0, x1, y1, width, height):
    """Pixel corners -> (normalized yxyx float32 [M, 4] clipped to [0, 1], keep mask [M]) with the box rule."""
    x0, y0, x1, y1 = (np.asarray(v, np.float64).reshape(-1) for v in (x0, y0, x1, y1))
    boxes = np.stack([y0 / height, x0 / width, y1 / height, x1 / width], axis=-1).reshape(-1, 4)
    return clipped(boxes)


def clipped(boxes):
    """Normalized yxyx [M, 4] -> (clipped float32 boxes, keep mask): finite, positive area after clipping."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=-1)
    boxes = np.clip(np.where(finite[:, None], boxes, 0.0), 0.0, 1.0)
    keep = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes.astype(np.float32), keep


def image_size_from_header(path):
    """(height, width) from an image file's header (PIL reads no pixel data for this), (0, 0) if it does not read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.height, image.width
    except OSError:
        return 0, 0


def check_images_exist(annotations, problems):
    """Records a problem for every image file that is missing (os.stat only; nothing is decoded)."""
    for i, path in enumerate(annotations.image_paths):
        if not os.path.isfile(path):
            problems.add(path, "image file not found", image=i)


# ------------------------------------------------------------------------------------------------ the stream
# Magic numbers at the start of the image formats tf.io.decode_image reads.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
# The trailing bytes searched for a format's end marker (JPEG EOI, PNG IEND chunk, GIF trailer): some writers pad
# a few bytes after it.
_TAIL = 64


def _contains(haystack, needle):
    """bool scalar: the bytes `needle` occur in the uint8 vector `haystack`."""
    n = len(needle)
    size = tf.shape(haystack)[0]
    if n == 1:
        return tf.reduce_any(tf.equal(haystack, needle[0]))
    windows = tf.stack([haystack[i: tf.maximum(size - n + 1 + i, i)] for i in range(n)], axis=-1)
    return tf.reduce_any(tf.reduce_all(tf.equal(windows, tf.constant(list(needle), tf.uint8)), axis=-1))


def image_bytes_problem(data):
    """string scalar: "" when `data` starts as a JPEG, PNG, GIF or BMP file and is not cut short, else the problem.

    Graph-only (no Python in the tf.data map): the magic number at the start, and the end marker in the last
    bytes (JPEG `FF D9`, PNG `IEND`, GIF `3B`) or, for BMP, a declared file size no larger than the data.
    """
    length = tf.strings.length(data)
    tail = tf.io.decode_raw(tf.strings.substr(data, tf.maximum(length - _TAIL, 0), _TAIL), tf.uint8)

    def starts(signature):
        return tf.equal(tf.strings.substr(data, 0, len(signature)), signature)

    bmp_size = tf.io.decode_raw(tf.strings.substr(tf.strings.join([data, b"\0" * 6]), 2, 4), tf.uint8)
    bmp_size = tf.reduce_sum(tf.cast(bmp_size, tf.int64) * tf.constant([1, 256, 65536, 16777216], tf.int64))
    is_jpeg, is_png, is_bmp = starts(_SIGNATURES[0]), starts(_SIGNATURES[1]), starts(_SIGNATURES[4])
    is_gif = starts(_SIGNATURES[2]) | starts(_SIGNATURES[3])
    complete = tf.where(is_jpeg, _contains(tail, b"\xff\xd9"),
                        tf.where(is_png, _contains(tail, b"IEND"),
                                 tf.where(is_gif, _contains(tail, b"\x3b"), bmp_size <= tf.cast(length, tf.int64))))
    known = is_jpeg | is_png | is_gif | is_bmp
    return tf.where(~known, "not a JPEG, PNG, GIF or BMP image",
                    tf.where(complete, "", "image data is cut short (truncated file)"))


def decode_image_file(path, declared_size=None, max_image_pixels=image_limits.DEFAULT_MAX_IMAGE_PIXELS):
    """Reads and decodes one image file to RGB uint8 [H, W, 3] inside a tf.data map.

    JPEG, PNG, BMP, GIF (first frame); grayscale, RGBA and palette images become RGB. Bytes that are not an
    image, or are cut short, fail with an error naming `path`; so does an image whose size differs from a declared
    (height, width) (the boxes were normalized with it), and, before anything is decoded, an image whose header
    declares more than `max_image_pixels` pixels (None: no limit; see `keras_focal.image_limits`).
    """
    data = tf.io.read_file(path)
    problem = image_bytes_problem(data)
    check = tf.debugging.Assert(tf.equal(problem, ""), [path, problem], name="check_image_bytes")
    with tf.control_dependencies([check]):
        check = image_limits.check_declared_size(data, path, image_limits.check_limit_argument(
            max_image_pixels, "max_image_pixels"))
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image = tf.ensure_shape(image, [None, None, 3])
    if declared_size is not None:
        shape = tf.shape(image, out_type=tf.int32)[:2]
        declared = tf.cast(declared_size, tf.int32)
        unknown = tf.reduce_all(tf.equal(declared, 0))
        ok = unknown | tf.reduce_all(tf.equal(shape, declared))
        check = tf.debugging.Assert(ok, [path, "decoded size (height, width)", shape, "differs from the annotated",
                                         declared], name="check_image_size")
        with tf.control_dependencies([check]):
            image = tf.identity(image)
    return image


def _ragged(per_image, dtype, inner_shape):
    lengths = [len(v) for v in per_image]
    flat = (np.concatenate([np.asarray(v, dtype).reshape((-1,) + inner_shape) for v in per_image])
            if per_image else np.zeros((0,) + inner_shape, dtype))
    return tf.RaggedTensor.from_row_lengths(flat.astype(dtype), np.asarray(lengths, np.int64))


def stream(annotations, keep_crowd=False, on_error="raise", max_image_pixels=image_limits.DEFAULT_MAX_IMAGE_PIXELS):
    """`Annotations` -> unbatched `(image uint8 [H, W, 3], {"boxes" [M, 4], "classes" [M]})` examples.

    keep_crowd: keep crowd boxes, flagged in `targets["is_crowd"]` (bool [M]), for evaluation; otherwise they are
        left out. on_error="skip" leaves out images whose bytes fail to decode or whose header declares more than
        `max_image_pixels` pixels (None: no limit), and tf.data logs a warning naming each one; "raise" fails
        the iteration with an error naming the file.
    """
    max_image_pixels = image_limits.check_limit_argument(max_image_pixels, "max_image_pixels")
    boxes, classes, crowd = annotations.boxes, annotations.classes, annotations.is_crowd
    if not keep_crowd:
        kept = [~np.asarray(c, bool) for c in crowd]
        boxes = [np.asarray(b).reshape(-1, 4)[k] for b, k in zip(boxes, kept)]
        classes = [np.asarray(c)[k] for c, k in zip(classes, kept)]
        crowd = [np.asarray(c, bool)[k] for c, k in zip(crowd, kept)]
    sizes = np.asarray(annotations.image_sizes, np.int32).reshape(-1, 2)
    ds = tf.data.Dataset.from_tensor_slices((
        tf.constant(list(annotations.image_paths), tf.string), tf.constant(sizes), _ragged(boxes, np.float32, (4,)),
        _ragged(classes, np.int32, ()), _ragged(crowd, np.bool_, ())))

    def example(path, size, boxes, classes, crowd):
        image = decode_image_file(path, size, max_image_pixels)
        targets = {"boxes": tf.ensure_shape(tf.reshape(tf.convert_to_tensor(boxes), [-1, 4]), [None, 4]),
                   "classes": tf.reshape(tf.convert_to_tensor(classes), [-1])}
        if keep_crowd:
            targets["is_crowd"] = tf.reshape(tf.convert_to_tensor(crowd), [-1])
        return image, targets

    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if on_error == "skip":
        ds = ds.ignore_errors(log_warning=True)
    return ds
