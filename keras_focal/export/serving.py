"""The serving graph: a `tf.Module` whose `tf.function`s are the SavedModel signatures.

Three entry points share one path, `resize -> model.detect -> cast`:

- `serving_default`: `images` uint8 [B, H, W, 3], any H and W;
- `serving_bytes`:   `image_bytes` string [B] of encoded JPEG or PNG;
- `tf_example`:      `serialized_examples` string [B] of tf.train.Example with feature `image/encoded`.

Resizing is a plain bilinear stretch to `model.image_size`, or, for a model with `letterbox=True`, the
aspect-preserving resize and pad of `keras_focal.letterbox` with the boxes mapped back. Either way the boxes are
normalized [ymin, xmin, ymax, xmax] of the original image, whatever its aspect ratio.

Why a `tf.Module` and not `keras.export.ExportArchive`: the module only tracks the model's variables (no Keras
objects end up in the SavedModel, so it loads with nothing but TensorFlow), the input and output names are exactly
the function's argument names and dict keys, and the output dtypes are cast explicitly, whatever the model's
dtype policy (keras issues #19458, #21258 and #20835 report names and dtypes lost on other export paths).
"""

import tensorflow as tf

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

# Leading bytes of the image formats tf.io.decode_image reads (JPEG and PNG are the documented ones; GIF's first frame
# and BMP come for free).
_MAGIC_BYTES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def _check_encoded_image(encoded, index):
    """Assertions with a readable message naming the element: empty, or not an image file we can decode."""
    length = tf.strings.length(encoded)
    not_empty = tf.debugging.Assert(
        length > 0,
        [tf.strings.format("image_bytes[{}] is empty (0 bytes): expected an encoded JPEG or PNG image", index)])
    known = tf.reduce_any([tf.strings.substr(encoded, 0, len(m)) == m for m in _MAGIC_BYTES])
    with tf.control_dependencies([not_empty]):
        known_format = tf.debugging.Assert(
            known,
            [tf.strings.format("image_bytes[{}] ({} bytes) is not an encoded JPEG or PNG image "
                               "(unrecognized header); send the encoded file, not decoded pixels", (index, length))])
    return known_format


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
    """

    def __init__(self, model, name="keras_focal_detector"):
        super().__init__(name=name)
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

    def _decode_one(self, args):
        encoded, index = args
        with tf.control_dependencies([_check_encoded_image(encoded, index)]):
            image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
        image.set_shape([None, None, 3])
        resized, content = self._resize(image[tf.newaxis])
        return resized[0], tf.ones([2]) if content is None else content[0]

    def _decode_and_resize(self, image_bytes):
        image_bytes = tf.reshape(image_bytes, [-1])
        indices = tf.range(tf.shape(image_bytes)[0], dtype=tf.int32)
        resized, content = tf.map_fn(
            self._decode_one, (image_bytes, indices),
            fn_output_signature=(tf.TensorSpec([*self.image_size, 3], tf.float32), tf.TensorSpec([2], tf.float32)))
        return resized, content if self.letterbox else None

    # ---------------------------------------------------------------------------------------- signatures
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=IMAGES)])
    def serve_images(self, images):
        shape = tf.shape(images)
        check = tf.debugging.Assert(
            tf.logical_and(shape[1] > 0, shape[2] > 0),
            [tf.strings.format("images must have height and width > 0, got shape {}", shape)])
        with tf.control_dependencies([check]):
            return self._detect(self._resize(images))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=IMAGE_BYTES)])
    def serve_bytes(self, image_bytes):
        return self._detect(self._decode_and_resize(image_bytes))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SERIALIZED_EXAMPLES)])
    def serve_tf_example(self, serialized_examples):
        features = tf.io.parse_example(
            serialized_examples, {ENCODED_IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)})
        return self._detect(self._decode_and_resize(features[ENCODED_IMAGE_FEATURE]))

    def signatures(self):
        """The concrete functions to pass as `signatures=` to `tf.saved_model.save`."""
        return {
            SIGNATURE_IMAGES: self.serve_images.get_concrete_function(),
            SIGNATURE_BYTES: self.serve_bytes.get_concrete_function(),
            SIGNATURE_TF_EXAMPLE: self.serve_tf_example.get_concrete_function(),
        }
