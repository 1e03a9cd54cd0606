"""Exports with resize, normalisation, box decoding and NMS in the graph: a SavedModel for TF Serving, and a
`.tflite` file for the LiteRT interpreter (phones, edge devices)."""

from keras_focal.export.layout import (
    LABELS_FILE,
    LIMITS_FILE,
    existing_versions,
    latest_version_dir,
    parse_version,
    read_class_names,
    read_input_limits,
)
from keras_focal.export.saved_model import export_saved_model
from keras_focal.export.serving import (
    IMAGE_BYTES,
    IMAGES,
    OUTPUT_DTYPES,
    SERIALIZED_EXAMPLES,
    SIGNATURE_NAMES,
    DetectionServingModule,
)
from keras_focal.export.tflite import QUANTIZATIONS, TFLiteDetector, export_tflite
from keras_focal.export.warmup import build_warmup_requests, read_warmup_requests, write_warmup_requests

__all__ = [
    "export_saved_model",
    "export_tflite",
    "TFLiteDetector",
    "QUANTIZATIONS",
    "existing_versions",
    "parse_version",
    "latest_version_dir",
    "read_class_names",
    "read_input_limits",
    "LABELS_FILE",
    "LIMITS_FILE",
    "DetectionServingModule",
    "build_warmup_requests",
    "write_warmup_requests",
    "read_warmup_requests",
    "IMAGES",
    "IMAGE_BYTES",
    "SERIALIZED_EXAMPLES",
    "SIGNATURE_NAMES",
    "OUTPUT_DTYPES",
]
