"""Exports with resize, normalisation, box decoding and NMS in the graph: a SavedModel for TF Serving, and a
`.tflite` file for the LiteRT interpreter (phones, edge devices)."""

from keras_focal.export.saved_model import (
    LABELS_FILE,
    existing_versions,
    export_saved_model,
    parse_version,
    read_class_names,
)
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
    "read_class_names",
    "LABELS_FILE",
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
