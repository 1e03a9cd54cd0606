"""`export_saved_model`: a versioned SavedModel for TF Serving, written atomically.

Layout (`keras_focal.export.layout`): `<export_dir>/<version>/{saved_model.pb, variables/,
assets.extra/tf_serving_warmup_requests, assets/limits.json}`, plus `assets/labels.txt` when the model has class
names: one name per line, line i (0-based) = detection class i, UTF-8, readable by any client without keras_focal
(`layout.read_class_names` reads it). `assets/limits.json` records the input limits the graph enforces
(`layout.read_input_limits`).

TF Serving polls `<export_dir>` and loads the children whose name parses as an integer
(`layout.parse_version`), the highest one by default. A version is therefore first written to
`<export_dir>/.tmp-export-<random>/` (a name that never parses as an integer) and renamed to
`<export_dir>/<version>` only when it is complete; `rename(2)` is atomic on a local file system, so TF Serving
sees either no version or the whole version. On failure the temporary directory is removed.
"""

import os
import shutil
import tempfile

import tensorflow as tf

from keras_focal.export import serving, warmup
from keras_focal.export.layout import (
    LABELS_FILE,
    LIMITS_FILE,
    existing_versions,
    write_class_names,
    write_input_limits,
)
from keras_focal.image_limits import DEFAULT_MAX_IMAGE_PIXELS, check_limit_argument

TMP_PREFIX = ".tmp-export-"


def _check_version(export_dir, version):
    if version is None:
        versions = existing_versions(export_dir)
        return versions[-1] + 1 if versions else 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer or None, got {version!r}")
    if version in existing_versions(export_dir):
        raise FileExistsError(f"version {version} already exists in {export_dir}; versions are never overwritten "
                              "(pass another version, or version=None for the next one)")
    return version


def _write_version(model, tmp_dir, model_name, max_image_pixels, max_batch_size):
    """Everything that goes into one version directory."""
    module = serving.DetectionServingModule(model, max_image_pixels=max_image_pixels, max_batch_size=max_batch_size)
    class_names = getattr(model, "class_names", None)
    with tempfile.TemporaryDirectory() as assets_dir:
        # A tracked Asset is copied to <version>/assets/ and its path is restored by tf.saved_model.load.
        if class_names:
            labels = os.path.join(assets_dir, LABELS_FILE)
            write_class_names(labels, class_names)
            module.class_names_file = tf.saved_model.Asset(labels)
        limits = os.path.join(assets_dir, LIMITS_FILE)
        write_input_limits(limits, max_image_pixels, max_batch_size)
        module.input_limits_file = tf.saved_model.Asset(limits)
        tf.saved_model.save(module, tmp_dir, signatures=module.signatures())
    warmup.write_warmup_requests(tmp_dir, module.image_size, model_name=model_name)


def _publish(tmp_dir, version_dir):
    """Atomic rename into place; refuses to replace an existing version (even an empty directory)."""
    if os.path.lexists(version_dir):
        raise FileExistsError(f"{version_dir} already exists; versions are never overwritten")
    os.rename(tmp_dir, version_dir)


def export_saved_model(model, export_dir, version=None, *, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
                       max_batch_size=None):
    """Exports a keras_focal detector as `<export_dir>/<version>/` for TF Serving and returns that directory.

    Args:
        model: a `keras_focal.models.RetinaNet` (anything with `detect(images)` and `image_size` works).
        export_dir: the model's base path, e.g. `saved_models/shapes_gfl` (TF Serving's `base_path`).
        version: integer version; None (default) takes the next one (1 for the first export).

    Signatures (see `keras_focal.export.serving`): `serving_default` (uint8 `images` [B, H, W, 3], any size),
    `serving_bytes` (string `image_bytes` [B], JPEG or PNG) and `tf_example` (string `serialized_examples` [B],
    tf.train.Example with `image/encoded`). Outputs: `detection_boxes` float32 [B, N, 4] normalized yxyx,
    `detection_scores` float32 [B, N], `detection_classes` int32 [B, N], `num_detections` int32 [B].

    Input limits, checked in the graph before anything is decoded or resized, and recorded in
    `assets/limits.json` (`keras_focal.image_limits` reads the encoded headers):
        max_image_pixels: the most pixels (height x width) an image may have: the size an encoded image's header
            declares (PNG IHDR, JPEG SOF, GIF logical screen, BMP header), or the `images` tensor's H x W. 40
            megapixels by default; None: no limit.
        max_batch_size: the most images per request on every signature; None (default): no limit.
    An image over the limit, bytes that are not an image, or a batch over the limit fail the request with an
    InvalidArgumentError naming the limit and the declared size; the decoded image is never allocated.

    Raises:
        FileExistsError: `version` already exists (nothing is overwritten).
        ValueError: a limit that is neither a positive integer nor None.
    """
    export_dir = os.fspath(export_dir)
    if "://" in export_dir:
        raise ValueError("export_saved_model writes to a local directory (the atomic rename needs one); "
                         f"copy the version directory to {export_dir} afterwards")
    max_image_pixels = check_limit_argument(max_image_pixels, "max_image_pixels")
    max_batch_size = check_limit_argument(max_batch_size, "max_batch_size")
    _check_version(export_dir, version)  # fail early, before the (slow) tracing
    os.makedirs(export_dir, exist_ok=True)
    model_name = os.path.basename(os.path.normpath(os.path.abspath(export_dir)))
    tmp_dir = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=export_dir)
    try:
        os.chmod(tmp_dir, 0o755)  # mkdtemp makes it 0700; a TF Serving container may run as another user
        _write_version(model, tmp_dir, model_name, max_image_pixels, max_batch_size)
        # Resolve the number only now, so that an export that ran in the meantime is not overwritten.
        version = _check_version(export_dir, version)
        version_dir = os.path.join(export_dir, str(version))
        _publish(tmp_dir, version_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return version_dir
