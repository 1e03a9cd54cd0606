"""Calibration images for full-integer quantization: the user's images, resized exactly as the file's input is.

    representative_data                          calibration_images(...)
    a source (tfds name, COCO JSON, VOC folder,   -> the first `count` images of its "train" split
      YOLO YAML: keras_focal.data.load)
    a tf.data.Dataset (keras_focal.data.load)     -> the first `count` elements: an image, an (image, targets)
                                                     pair, or a dict with "image"
    any iterable of uint8 [H, W, 3] images        -> the first `count` of them
        -> each image resized to the file's input size: a bilinear stretch, or, for a model with
           `letterbox=True` and no `input_size`, `keras_focal.letterbox` (the caller letterboxes such a file's input)
        -> rounded to whole pixel values: float32 [1, h, w, 3] in 0..255, what the uint8 input holds

The converter records the range of every activation over these images, so they should look like what the file
will see: images of the deployment, not random noise. `MIN_CALIBRATION_IMAGES` (100) are asked for by default;
fewer, when that is all there is, are used with a warning (the ranges of rare activations may then be too narrow,
and clip), as ultralytics does for its int8 export (it warns below 300). None or no image at all is a ValueError
that says what to pass.
"""

import itertools
import os
import warnings

import numpy as np
import tensorflow as tf

from keras_focal import letterbox as letterboxing

MIN_CALIBRATION_IMAGES = 100

_WHAT_TO_PASS = ("pass representative_data=: a keras_focal data source (a tfds name, a COCO JSON file, a VOC folder "
                 "or a YOLO data.yaml), a tf.data.Dataset from keras_focal.data.load, or an iterable of uint8 "
                 f"[H, W, 3] images like the deployment's; {MIN_CALIBRATION_IMAGES} or more")


def _image_of(element):
    """The image of one dataset element: the element itself, the first of a tuple, or a dict's "image"."""
    if isinstance(element, dict):
        for key in ("image", "images"):
            if key in element:
                return element[key]
        raise ValueError(f"representative_data yields dicts without an 'image' key (keys {sorted(element)}); "
                         + _WHAT_TO_PASS)
    if isinstance(element, (tuple, list)) and element and np.ndim(element[0]) == 3:
        return element[0]
    return element


def _images(representative_data, count):
    if representative_data is None:
        raise ValueError("quantization='int8' calibrates the activation ranges on your images; " + _WHAT_TO_PASS)
    if isinstance(representative_data, (str, os.PathLike)):
        import keras_focal.data as kd

        representative_data = kd.load(os.fspath(representative_data), split="train")
    if isinstance(representative_data, tf.data.Dataset):
        representative_data = representative_data.take(count).as_numpy_iterator()
    if isinstance(representative_data, np.ndarray) and representative_data.ndim == 3:
        raise ValueError(f"representative_data is one image of shape {list(representative_data.shape)}; "
                         + _WHAT_TO_PASS)
    return [np.asarray(_image_of(e)) for e in itertools.islice(iter(representative_data), count)]


def _resized(image, size, letterbox):
    if letterbox:
        frame, _ = letterboxing.letterbox(image, size)
    else:
        frame = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
    return np.clip(np.round(frame.numpy()), 0.0, 255.0).astype(np.float32)[np.newaxis]


def calibration_images(representative_data, size, letterbox=False, count=MIN_CALIBRATION_IMAGES):
    """float32 [1, h, w, 3] arrays (whole values in 0..255) of the first `count` images of `representative_data`,
    resized to `size` = (h, w) by a bilinear stretch or, with `letterbox`, by `keras_focal.letterbox`."""
    images = _images(representative_data, int(count))
    if not images:
        raise ValueError("representative_data holds no image; " + _WHAT_TO_PASS)
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
            raise ValueError(f"representative_data image {i} has shape {list(image.shape)}, expected uint8 "
                             "[H, W, 3] (RGB)")
        if image.dtype != np.uint8:
            raise ValueError(f"representative_data image {i} is {image.dtype.name}, expected uint8 [H, W, 3] "
                             "(RGB values 0-255, as the file's input)")
    if len(images) < MIN_CALIBRATION_IMAGES:
        warnings.warn(f"int8 calibration on {len(images)} images (fewer than {MIN_CALIBRATION_IMAGES}): the "
                      "activation ranges may be too narrow for images unlike these; pass more images of the "
                      "deployment", stacklevel=3)
    size = tuple(int(s) for s in size)
    return [_resized(image, size, letterbox) for image in images]
