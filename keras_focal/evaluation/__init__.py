"""COCO evaluation with pycocotools' COCOeval: a function, a model evaluator and a Keras callback.

    metrics = keras_focal.evaluation.evaluate_detections(groundtruths, detections, num_classes=5)
    metrics = keras_focal.evaluation.evaluate_model(model, val_batches)      # runs model.detect(images)
    callback = keras_focal.evaluation.COCOEvalCallback(val_batches, every_n_epochs=2)
"""

from keras_focal.evaluation.coco import (
    METRIC_NAMES,
    COCOEvaluator,
    evaluate_detections,
    format_coco_table,
    print_coco_table,
)
from keras_focal.evaluation.model_eval import (
    COCOEvalCallback,
    detection_fn,
    detector_class_names,
    evaluate_model,
    load_detector,
)

__all__ = [
    "COCOEvalCallback", "COCOEvaluator", "METRIC_NAMES", "detection_fn", "detector_class_names",
    "evaluate_detections", "evaluate_model", "format_coco_table", "load_detector", "print_coco_table",
]
