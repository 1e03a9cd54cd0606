"""Assigners: which ground-truth box, if any, each anchor learns from; one module each, behind one protocol
(`base.Assigner`). Static assigners (`IoUAssigner`, `ATSSAssigner`) see anchors and ground truth and run in the
tf.data pipeline; dynamic ones (`needs_predictions = True`: `TaskAlignedAssigner`) also see the head's predictions
and run in the train step."""

from keras_focal.assigners.atss import ATSSAssigner
from keras_focal.assigners.base import Assigner
from keras_focal.assigners.iou import IoUAssigner
from keras_focal.assigners.task_aligned import TaskAlignedAssigner

__all__ = ["ATSSAssigner", "Assigner", "IoUAssigner", "TaskAlignedAssigner"]
