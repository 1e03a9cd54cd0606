"""`export_saved_model`: a versioned SavedModel for TF Serving, written atomically.

Layout: `<export_dir>/<version>/{saved_model.pb, variables/, assets.extra/tf_serving_warmup_requests}`, plus
`assets/labels.txt` when the model has class names: one name per line, line i (0-based) = detection class i, UTF-8,
readable by any client without keras_focal (`read_class_names` does it here).

TF Serving polls `<export_dir>` and loads the children whose name parses as an integer (`safe_strto64`, in
`tensorflow_serving/sources/storage_path/file_system_storage_path_source.cc`), the highest one by default. A
version is therefore first written to `<export_dir>/.tmp-export-<random>/` (a name that never parses as an integer)
and renamed to `<export_dir>/<version>` only when it is complete; `rename(2)` is atomic on a local file system, so
TF Serving sees either no version or the whole version. On failure the temporary directory is removed.
"""

import os
import re
import shutil
import tempfile

import tensorflow as tf

from keras_focal.export import serving, warmup

TMP_PREFIX = ".tmp-export-"
LABELS_FILE = "labels.txt"
_VERSION_RE = re.compile(r"^\s*\+?(\d+)\s*$")  # what TF Serving's safe_strto64 accepts as a version >= 0


def parse_version(name):
    """The version number TF Serving would read from a directory name, or None."""
    match = _VERSION_RE.match(name)
    return int(match.group(1)) if match else None


def existing_versions(export_dir):
    """Sorted version numbers of the version directories under `export_dir` ([] if it does not exist)."""
    if not os.path.isdir(export_dir):
        return []
    versions = []
    for name in os.listdir(export_dir):
        version = parse_version(name)
        if version is not None and os.path.isdir(os.path.join(export_dir, name)):
            versions.append(version)
    return sorted(versions)


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


def _write_version(model, tmp_dir, model_name):
    """Everything that goes into one version directory."""
    module = serving.DetectionServingModule(model)
    class_names = getattr(model, "class_names", None)
    with tempfile.TemporaryDirectory() as labels_dir:
        if class_names:
            labels = os.path.join(labels_dir, LABELS_FILE)
            with open(labels, "w", encoding="utf-8") as f:
                f.write("".join(f"{name}\n" for name in class_names))
            # A tracked Asset is copied to <version>/assets/ and its path is restored by tf.saved_model.load.
            module.class_names_file = tf.saved_model.Asset(labels)
        tf.saved_model.save(module, tmp_dir, signatures=module.signatures())
    warmup.write_warmup_requests(tmp_dir, module.image_size, model_name=model_name)


def read_class_names(saved_model_dir):
    """The class names an export holds (`assets/labels.txt`), or None when it has none."""
    path = os.path.join(os.fspath(saved_model_dir), "assets", LABELS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return tuple(line.rstrip("\n") for line in f)


def _publish(tmp_dir, version_dir):
    """Atomic rename into place; refuses to replace an existing version (even an empty directory)."""
    if os.path.lexists(version_dir):
        raise FileExistsError(f"{version_dir} already exists; versions are never overwritten")
    os.rename(tmp_dir, version_dir)


def export_saved_model(model, export_dir, version=None):
    """Exports a keras_focal detector as `<export_dir>/<version>/` for TF Serving and returns that directory.

    Args:
        model: a `keras_focal.models.RetinaNet` (anything with `detect(images)` and `image_size` works).
        export_dir: the model's base path, e.g. `saved_models/shapes_gfl` (TF Serving's `base_path`).
        version: integer version; None (default) takes the next one (1 for the first export).

    Signatures (see `keras_focal.export.serving`): `serving_default` (uint8 `images` [B, H, W, 3], any size),
    `serving_bytes` (string `image_bytes` [B], JPEG or PNG) and `tf_example` (string `serialized_examples` [B],
    tf.train.Example with `image/encoded`). Outputs: `detection_boxes` float32 [B, N, 4] normalized yxyx,
    `detection_scores` float32 [B, N], `detection_classes` int32 [B, N], `num_detections` int32 [B].

    Raises:
        FileExistsError: `version` already exists (nothing is overwritten).
    """
    export_dir = os.fspath(export_dir)
    if "://" in export_dir:
        raise ValueError("export_saved_model writes to a local directory (the atomic rename needs one); "
                         f"copy the version directory to {export_dir} afterwards")
    _check_version(export_dir, version)  # fail early, before the (slow) tracing
    os.makedirs(export_dir, exist_ok=True)
    model_name = os.path.basename(os.path.normpath(os.path.abspath(export_dir)))
    tmp_dir = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=export_dir)
    try:
        os.chmod(tmp_dir, 0o755)  # mkdtemp makes it 0700; a TF Serving container may run as another user
        _write_version(model, tmp_dir, model_name)
        # Resolve the number only now, so that an export that ran in the meantime is not overwritten.
        version = _check_version(export_dir, version)
        version_dir = os.path.join(export_dir, str(version))
        _publish(tmp_dir, version_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return version_dir
