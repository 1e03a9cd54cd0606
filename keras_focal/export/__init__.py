"""SavedModel export for TF Serving: in-graph resize, normalisation, box decoding and NMS (CONTRACT §4)."""

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
from keras_focal.export.warmup import build_warmup_requests, read_warmup_requests, write_warmup_requests

__all__ = [
    "export_saved_model",
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
