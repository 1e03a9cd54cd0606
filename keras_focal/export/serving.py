"""The serving graph: a `tf.Module` whose `tf.function`s are the SavedModel signatures.

Three entry points share one path, `resize -> model.detect -> cast`:

- `serving_default`: `images` uint8 [B, H, W, 3], any H and W;
- `serving_bytes`:   `image_bytes` string [B] of encoded JPEG or PNG;
- `tf_example`:      `serialized_examples` string [B] of tf.train.Example with feature `image/encoded`.

Input limits, before anything is decoded or resized (`keras_focal.image_limits`): a request with more than
`max_batch_size` images, an image whose header (or, for `images`, whose tensor shape) declares more than
`max_image_pixels` pixels, and bytes that are not a JPEG, PNG, GIF or BMP file fail with an InvalidArgumentError
naming the limit; every header of a batch is checked before the first image is decoded.

Resizing is a plain bilinear stretch to `model.image_size`, or, for a model with `letterbox=True`, the
aspect-preserving resize and pad of `keras_focal.letterbox` with the boxes mapped back. Either way the boxes are
normalized [ymin, xmin, ymax, xmax] of the original image, whatever its aspect ratio.

Why a `tf.Module` and not `keras.export.ExportArchive`: the module only tracks the model's variables (no Keras
objects end up in the SavedModel, so it loads with nothing but TensorFlow), the input and output names are exactly
the function's argument names and dict keys, and the output dtypes are cast explicitly, whatever the model's
dtype policy (keras issues #19458, #21258 and #20835 report names and dtypes lost on other export paths).
"""

import tensorflow as tf

from keras_focal import image_limits
from keras_focal import letterbox as letterboxing

# Input, output and signature names: the public serving interface.
IMAGES = "images"
IMAGE_BYTES = "image_bytes"
SERIALIZED_EXAMPLES = "serialized_examples"
ENCODED_IMAGE_FEATURE = "image/encoded"  # TF Model Garden / TF OD API convention
SIGNATURE_IMAGES = "serving_default"
SIGNATURE_BYTES = "serving_bytes"
SIGNATURE_TF_EXAMPLE = "tf_example"
SIGNATURE_NAMES = (SIGNATURE_IMAGES, SIGNATURE_BYTES, SIGNATURE_TF_EXAMPLE)

# Output names and dtypes. detection_classes is int32, the dtype model.detect / predict return, so served and
# in-process results are identical and REST JSON carries integers (TF OD API exports used float32 instead).
OUTPUT_DTYPES = {
    "detection_boxes": tf.float32,    # [B, N, 4] normalized yxyx
    "detection_scores": tf.float32,   # [B, N] sorted descending
    "detection_classes": tf.int32,    # [B, N]
    "num_detections": tf.int32,       # [B]
}


def _check_encoded_image(encoded, index, max_image_pixels, input_name=IMAGE_BYTES):
    """Assertions with a readable message naming the element: empty, not an image file we can decode, or a header
    that declares more than `max_image_pixels` pixels."""
    length = tf.strings.length(encoded)
    not_empty = tf.debugging.Assert(
        length > 0,
        [tf.strings.format(input_name + "[{}] is empty (0 bytes): expected an encoded JPEG or PNG image", index)])
    with tf.control_dependencies([not_empty]):
        known_format = tf.debugging.Assert(
            tf.not_equal(image_limits.image_format(encoded), image_limits.UNKNOWN),
            [tf.strings.format(input_name + "[{}] ({} bytes) is not an encoded JPEG or PNG image "
                               "(unrecognized header); send the encoded file, not decoded pixels", (index, length))])
    with tf.control_dependencies([known_format]):
        return image_limits.check_declared_size(
            encoded, tf.strings.format(input_name + "[{}]", index), max_image_pixels)


def _check_batch_size(batch, max_batch_size, input_name):
    """An assertion op: at most `max_batch_size` (None: any number) elements in a request."""
    if max_batch_size is None:
        return tf.no_op()
    return tf.debugging.Assert(
        batch <= max_batch_size,
        [tf.strings.format(input_name + " holds {} images, over the limit max_batch_size=" + str(max_batch_size),
                           batch)], name="check_batch_size")


def _tf_variable(variable):
    """The tf.Variable behind a Keras 3 variable.

    Tracking the Keras wrapper makes `tf.saved_model.save` write each variable twice: the handle the functions
    read, and a copy (`KerasVariable._export_to_saved_model_graph`) that the checkpoint restores into. TF2's
    `tf.saved_model.load` copes, but the TF1-style loader of TF Serving and `saved_model_cli run` then fails
    with "Could not find variable ...". Tracking the tf.Variable itself writes one variable, restored in place.
    """
    value = getattr(variable, "value", variable)  # outside an autocast scope: the tf.Variable itself
    return value if isinstance(value, tf.Variable) else variable


class DetectionServingModule(tf.Module):
    """Holds a keras_focal detector's variables and exposes the three serving signatures.

    `model` needs `detect(images) -> dict` (the OUTPUT_DTYPES keys) and `image_size` (H, W).
    max_image_pixels / max_batch_size: the input limits (see the module docstring); None: no limit.
    """

    def __init__(self, model, name="keras_focal_detector", *,
                 max_image_pixels=image_limits.DEFAULT_MAX_IMAGE_PIXELS, max_batch_size=None):
        super().__init__(name=name)
        self.max_image_pixels = image_limits.check_limit_argument(max_image_pixels, "max_image_pixels")
        self.max_batch_size = image_limits.check_limit_argument(max_batch_size, "max_batch_size")
        if not hasattr(model, "detect") or not hasattr(model, "image_size"):
            raise TypeError("export needs a keras_focal detector with `detect(images)` and `image_size`; "
                            f"got {type(model).__name__}")
        self.image_size = tuple(int(s) for s in model.image_size)
        self.letterbox = bool(getattr(model, "letterbox", False))
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"model.image_size must be (height, width) > 0, got {model.image_size}")
        # Track the variables only: the SavedModel then holds no Keras objects and loads with plain TensorFlow.
        # The model itself stays reachable through a closure, which tf.Module does not track.
        self.model_variables = [_tf_variable(v) for v in model.variables]
        detect = model.detect

        def _detect(framed):
            resized, content = framed
            outputs = detect(resized)
            missing = set(OUTPUT_DTYPES) - set(outputs)
            if missing:
                raise ValueError(f"model.detect did not return {sorted(missing)}")
            outputs = {k: tf.cast(outputs[k], dtype) for k, dtype in OUTPUT_DTYPES.items()}
            if content is not None:
                outputs["detection_boxes"] = letterboxing.boxes_from_frame(outputs["detection_boxes"], content)
            return outputs

        self._detect = _detect

    # ------------------------------------------------------------------------------------------ shared path
    def _resize(self, images):
        """uint8 or float images [B, H, W, 3] -> (float32 [B, h, w, 3] at model.image_size, values in [0, 255],
        the fraction [B, 2] of the frame the images cover when letterboxed, else None)."""
        if self.letterbox:
            return letterboxing.letterbox(images, self.image_size)
        return tf.image.resize(tf.cast(images, tf.float32), self.image_size, method="bilinear"), None

    def _decode_one(self, encoded):
        image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
        image.set_shape([None, None, 3])
        resized, content = self._resize(image[tf.newaxis])
        return resized[0], tf.ones([2]) if content is None else content[0]

    def _decode_and_resize(self, image_bytes, input_name):
        """Checks the batch size and every header, then decodes and resizes each image."""
        image_bytes = tf.reshape(image_bytes, [-1])
        batch = tf.shape(image_bytes)[0]
        with tf.control_dependencies([_check_batch_size(batch, self.max_batch_size, input_name)]):
            indices = tf.range(batch, dtype=tf.int32)

        def check_one(args):
            encoded, index = args
            with tf.control_dependencies([_check_encoded_image(encoded, index, self.max_image_pixels, input_name)]):
                return tf.constant(True)

        checked = tf.map_fn(check_one, (image_bytes, indices), fn_output_signature=tf.bool)
        with tf.control_dependencies([checked]):
            image_bytes = tf.identity(image_bytes)
        resized, content = tf.map_fn(
            self._decode_one, image_bytes,
            fn_output_signature=(tf.TensorSpec([*self.image_size, 3], tf.float32), tf.TensorSpec([2], tf.float32)))
        return resized, content if self.letterbox else None

    def _check_images(self, images):
        """Assertions on a uint8 `images` batch: height and width > 0, the batch and pixel limits."""
        shape = tf.shape(images, out_type=tf.int64)
        checks = [tf.debugging.Assert(
            tf.logical_and(shape[1] > 0, shape[2] > 0),
            [tf.strings.format("images must have height and width > 0, got shape {}", shape)]),
            _check_batch_size(shape[0], self.max_batch_size, IMAGES)]
        if self.max_image_pixels is not None:
            checks.append(tf.debugging.Assert(
                shape[1] * shape[2] <= self.max_image_pixels,
                [tf.strings.format("images of {} x {} = {} pixels (width x height), over the limit "
                                   f"max_image_pixels={self.max_image_pixels}",
                                   (shape[2], shape[1], shape[1] * shape[2]))], name="check_image_pixels"))
        return checks

    # ---------------------------------------------------------------------------------------- signatures
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=IMAGES)])
    def serve_images(self, images):
        with tf.control_dependencies(self._check_images(images)):
            images = tf.identity(images)
        return self._detect(self._resize(images))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGE_BYTES)])
    def serve_bytes(self, image_bytes):
        return self._detect(self._decode_and_resize(image_bytes, IMAGE_BYTES))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SERIALIZED_EXAMPLES)])
    def serve_tf_example(self, serialized_examples):
        with tf.control_dependencies([_check_batch_size(tf.shape(serialized_examples)[0], self.max_batch_size,
                                                        SERIALIZED_EXAMPLES)]):
            serialized_examples = tf.identity(serialized_examples)
        features = tf.io.parse_example(
            serialized_examples, {ENCODED_IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)})
        return self._detect(self._decode_and_resize(features[ENCODED_IMAGE_FEATURE], SERIALIZED_EXAMPLES))

    def signatures(self):
        """The concrete functions to pass as `signatures=` to `tf.saved_model.save`."""
        return {
            SIGNATURE_IMAGES: self.serve_images.get_concrete_function(),
            SIGNATURE_BYTES: self.serve_bytes.get_concrete_function(),
            SIGNATURE_TF_EXAMPLE: self.serve_tf_example.get_concrete_function(),
        }
