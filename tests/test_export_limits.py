"""Input limits of the exported SavedModel: every signature refuses an image over `max_image_pixels`, bytes that
are no image and a batch over `max_batch_size` before decoding, with the limit in the message; exactly at the
limit is accepted; `None` is no limit; the limits are recorded in `assets/limits.json`; and a plain TensorFlow
process that loads the export refuses the decompression bombs quickly and without the decoded image's memory.

A stand-in detector (one Dense layer) keeps the three exports fast; the RetinaNet export is in test_export.py.
"""

import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import keras_focal.export
from _bombs import jpeg_header, png_bomb
from test_export_layout import _StandInDetector

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
LIMIT = 16 * 16  # the small pixel limit: the stand-in's own image size


@pytest.fixture(scope="module")
def model():
    m = _StandInDetector()
    m(tf.zeros([1, 16, 16, 3]))
    return m


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    """{limits: version directory} for a small limit and for no limit."""
    base = tmp_path_factory.mktemp("limits")
    return {
        "small": keras_focal.export.export_saved_model(model, str(base / "small"), max_image_pixels=LIMIT,
                                                       max_batch_size=3),
        "none": keras_focal.export.export_saved_model(model, str(base / "none"), max_image_pixels=None),
    }


@pytest.fixture(scope="module")
def small(exports):
    return tf.saved_model.load(exports["small"])


def _png(height, width):
    return tf.io.encode_png(np.full((height, width, 3), 90, np.uint8)).numpy()


def _jpeg(height, width):
    return tf.io.encode_jpeg(np.full((height, width, 3), 90, np.uint8)).numpy()


def _example(encoded):
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
    return tf.train.Example(features=tf.train.Features(feature={"image/encoded": feature})).SerializeToString()


def _call(loaded, signature, encoded):
    """Runs `encoded` images through the bytes or the tf.Example signature."""
    if signature == "serving_bytes":
        return loaded.signatures[signature](image_bytes=tf.constant(encoded))
    return loaded.signatures[signature](serialized_examples=tf.constant([_example(e) for e in encoded]))


def test_limits_are_recorded_beside_the_labels(model, exports):
    read = keras_focal.export.read_input_limits
    assert read(exports["small"]) == {"max_image_pixels": LIMIT, "max_batch_size": 3}
    assert read(os.path.join(exports["small"], "assets", "limits.json")) == read(exports["small"])
    assert read(exports["none"]) == {"max_image_pixels": None, "max_batch_size": None}
    # The defaults: 40 megapixels, any batch size.
    defaults = inspect.signature(keras_focal.export.export_saved_model).parameters
    assert defaults["max_image_pixels"].default == 40_000_000 and defaults["max_batch_size"].default is None
    module = keras_focal.export.DetectionServingModule(model)
    assert (module.max_image_pixels, module.max_batch_size) == (40_000_000, None)


@pytest.mark.parametrize("signature", ["serving_bytes", "tf_example"])
def test_encoded_images_at_and_over_the_limits(small, signature):
    out = _call(small, signature, [_png(16, 16), _jpeg(8, 32), _png(1, 256)])  # exactly 256 pixels, 3 images
    np.testing.assert_array_equal(out["num_detections"].numpy(), [1, 1, 1])
    name = "image_bytes" if signature == "serving_bytes" else "serialized_examples"
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"{name}\[1\]: the PNG header declares 17 x 16 = 272 pixels \(width x height\), "
                             rf"over the limit max_image_pixels=256"):
        _call(small, signature, [_png(16, 16), _png(16, 17)])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"{name} holds 4 images, over the limit max_batch_size=3"):
        _call(small, signature, [_png(4, 4)] * 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0\] \(5 bytes\) is not an encoded JPEG or PNG"):
        _call(small, signature, [b"hello"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"65500 x 65500 = 4290250000 pixels .* "
                                                             r"max_image_pixels=256"):
        _call(small, signature, [jpeg_header(65500, 65500)])


def test_images_tensor_at_and_over_the_limits(small):
    serve = small.signatures["serving_default"]
    assert serve(images=tf.zeros([3, 16, 16, 3], tf.uint8))["num_detections"].shape == (3,)
    assert serve(images=tf.zeros([1, 2, 128, 3], tf.uint8))["num_detections"].shape == (1,)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"images of 17 x 16 = 272 pixels \(width x height\), over the limit max_image_pixels=256"):
        serve(images=tf.zeros([1, 16, 17, 3], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="images holds 4 images, over the limit max_batch_size=3"):
        serve(images=tf.zeros([4, 8, 8, 3], tf.uint8))


def test_no_limit_restores_the_unlimited_graph(model, exports):
    loaded = tf.saved_model.load(exports["none"])
    images = np.random.default_rng(0).integers(0, 256, (5, 40, 30, 3), dtype=np.uint8)
    expected = model.detect(tf.image.resize(tf.constant(images, tf.float32), (16, 16)))
    got = [loaded.signatures["serving_default"](images=tf.constant(images)),
           _call(loaded, "serving_bytes", [tf.io.encode_png(image).numpy() for image in images])]
    for out in got:
        np.testing.assert_allclose(out["detection_boxes"].numpy(), expected["detection_boxes"].numpy(), atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not an encoded JPEG or PNG"):
        _call(loaded, "serving_bytes", [b"hello"])  # bytes that are no image are refused with or without a limit


def test_bad_limit_argument_fails_before_tracing(model, tmp_path):
    with pytest.raises(ValueError, match="max_batch_size must be a positive integer or None"):
        keras_focal.export.export_saved_model(model, str(tmp_path / "m"), max_batch_size=0)
    assert not os.path.exists(tmp_path / "m")


PLAIN_TF_BOMBS = textwrap.dedent("""
    import sys
    import time

    import numpy as np
    import tensorflow as tf


    def peak_rss_mb():  # VmHWM: the process's peak resident set size
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


    export_dir, *bombs = sys.argv[1:]
    model = tf.saved_model.load(export_dir)
    serve = model.signatures["serving_bytes"]
    small = tf.io.encode_png(np.zeros((8, 8, 3), np.uint8))
    serve(image_bytes=tf.stack([small]))  # traced and warm: what is left to grow is the request's own memory
    try:
        serve(image_bytes=tf.constant([b"warm the error path"]))
    except tf.errors.InvalidArgumentError:
        pass
    start_rss = peak_rss_mb()
    for path in bombs:
        data = open(path, "rb").read()
        start = time.perf_counter()
        try:
            serve(image_bytes=tf.constant([data]))
            print("ACCEPTED", path)
        except tf.errors.InvalidArgumentError as error:
            line = next(line for line in error.message.splitlines() if "assertion failed" in line)
            print(f"REJECTED {len(data)} {time.perf_counter() - start:.3f} {line}")
    print(f"GROWTH_MB {peak_rss_mb() - start_rss:.1f}")
    print("LEAKED", sorted(m for m in sys.modules if m.split(".")[0] == "keras_focal"))
""")


def test_plain_tensorflow_refuses_bombs_fast_and_small(exports, tmp_path):
    """A 16000 x 16000 PNG (250 KB, 768 MB decoded as RGB) and a 60-byte JPEG declaring 65500 x 65500 (12.9 GB)."""
    bombs = []
    for name, data in (("bomb.png", png_bomb(16000, 16000)), ("bomb.jpg", jpeg_header(65500, 65500))):
        assert len(data) < 2 ** 20
        (tmp_path / name).write_bytes(data)
        bombs.append(str(tmp_path / name))
    script = tmp_path / "bombs.py"
    script.write_text(PLAIN_TF_BOMBS)
    proc = subprocess.run([sys.executable, str(script), exports["small"], *bombs], capture_output=True, text=True,
                          env=ENV, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    rejected = [line.split(" ", 3) for line in lines if line.startswith("REJECTED")]
    assert len(rejected) == 2, proc.stdout
    for (_, size, seconds, message), words in zip(rejected, ("PNG header declares 16000 x 16000 = 256000000",
                                                             "JPEG header declares 65500 x 65500 = 4290250000")):
        assert float(seconds) < 1.0, message
        assert words in message and f"over the limit max_image_pixels={LIMIT}" in message, message
    growth = float(next(line for line in lines if line.startswith("GROWTH_MB")).split()[1])
    assert growth < 500, proc.stdout
    assert "LEAKED []" in proc.stdout, proc.stdout
