"""TF Serving warmup requests: `assets.extra/tf_serving_warmup_requests` in a SavedModel version directory.

TF Serving replays these `PredictionLog` records (a TFRecord file) when it loads a version, before it reports the
version as available, so the first real request does not pay for graph optimisation and memory allocation.
The model name in the records is not checked by TF Serving; the signature name and the input names and dtypes
must match the SavedModel.
"""

import os

import numpy as np
import tensorflow as tf

from keras_focal.export import serving

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"


def _warmup_images(image_size, batch_size, seed=0):
    """A deterministic smooth uint8 batch (gradients plus noise: something that looks like a photo to a JPEG coder)."""
    height, width = image_size
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    base = np.stack([yy, xx, 1 - yy], axis=-1) * 200
    noise = rng.uniform(0, 55, size=(batch_size, height, width, 3))
    return (base[None] + noise).astype(np.uint8)


def build_warmup_requests(image_size, model_name="keras_focal", batch_size=2):
    """PredictionLog records: one `serving_default` request with a uint8 batch, one `serving_bytes` with a PNG
    and a JPEG. Returns a list of `tensorflow_serving.apis.prediction_log_pb2.PredictionLog`."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    images = _warmup_images(image_size, batch_size)
    encoded = [tf.io.encode_png(images[0]).numpy(), tf.io.encode_jpeg(images[-1], quality=90).numpy()]

    def request(signature_name, inputs):
        req = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name))
        for key, value in inputs.items():
            req.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req))

    return [
        request(serving.SIGNATURE_IMAGES, {serving.IMAGES: images}),
        request(serving.SIGNATURE_BYTES, {serving.IMAGE_BYTES: np.array(encoded, dtype=object)}),
    ]


def write_warmup_requests(version_dir, image_size, model_name="keras_focal", batch_size=2):
    """Writes `<version_dir>/assets.extra/tf_serving_warmup_requests` and returns its path."""
    directory = os.path.join(version_dir, WARMUP_DIR)
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for record in build_warmup_requests(image_size, model_name, batch_size):
            writer.write(record.SerializeToString())
    return path


def read_warmup_requests(path):
    """Parses a warmup file back into PredictionLog records (for tests and for checking an export)."""
    from tensorflow_serving.apis import prediction_log_pb2

    records = []
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(raw)
        records.append(log)
    return records
