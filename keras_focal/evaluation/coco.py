"""COCO-style detection metrics computed by pycocotools' COCOeval (not a reimplementation).

Boxes come in keras_focal's format (normalized yxyx) and are converted to pixel `[x, y, w, h]` with
each image's true height and width, so the small / medium / large split uses real pixel areas.

Returned numbers: AP (IoU .50:.95), AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl as Python floats in
[0, 1]. A number COCOeval cannot define (it reports -1: no ground truth at all, or none in that size range) is
returned as NaN, as Detectron2 does. Empty detections and images without ground truth are fine.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def _to_numpy(x):
    if x is None:
        return None
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x)


def _pixel_xywh(boxes, height, width):
    boxes = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0.0, 1.0)
    y0, x0, y1, x1 = boxes[:, 0] * height, boxes[:, 1] * width, boxes[:, 2] * height, boxes[:, 3] * width
    return np.stack([x0, y0, np.maximum(x1 - x0, 0.0), np.maximum(y1 - y0, 0.0)], axis=1)


class COCOEvaluator:
    """Accumulates ground truth and detections image by image, then runs COCOeval.

        ev = COCOEvaluator(num_classes=5)                     # or class_names=..., category_ids=... for COCO ids
        ev.update_batch(gt_boxes, gt_classes, det_boxes, det_scores, det_classes, num_detections, image_sizes)
        metrics = ev.result()                                 # {"AP": ..., "AP50": ..., ...}
        print(ev.table)                                       # COCOeval's summary table

    Classes are contiguous indices 0..num_classes-1 in both ground truth and detections; `category_ids[i]` is the
    id class i gets inside COCO (default i + 1; pass `keras_focal.data.COCO_CATEGORY_IDS` for COCO's own ids).
    """

    def __init__(self, num_classes=None, class_names=None, category_ids=None):
        if class_names is not None:
            class_names = [str(n) for n in class_names]
            num_classes = len(class_names) if num_classes is None else num_classes
        if num_classes is None and category_ids is not None:
            num_classes = len(category_ids)
        if num_classes is None:
            raise ValueError("COCOEvaluator needs num_classes, class_names or category_ids.")
        self.num_classes = int(num_classes)
        self.class_names = class_names or [str(i) for i in range(self.num_classes)]
        self.category_ids = [int(c) for c in (category_ids or range(1, self.num_classes + 1))]
        if len(self.category_ids) != self.num_classes or len(self.class_names) != self.num_classes:
            raise ValueError("class_names / category_ids must have num_classes entries.")
        self.table = ""
        self.per_class_ap = {}
        self.reset()

    def reset(self):
        self._images = []
        self._gt = []
        self._dt = []

    @property
    def num_images(self):
        return len(self._images)

    def update(self, gt_boxes, gt_classes, det_boxes, det_scores, det_classes, image_size, gt_is_crowd=None,
               num_detections=None):
        """Adds one image. gt_boxes [M, 4] normalized yxyx with gt_classes [M] (entries with class < 0 are
        padding); det_* [N, ...] (the first `num_detections` are used); image_size (height, width) in pixels."""
        image_id = len(self._images) + 1
        h, w = float(image_size[0]), float(image_size[1])
        self._images.append({"id": image_id, "height": h, "width": w})
        gt_classes = _to_numpy(gt_classes).reshape(-1).astype(np.int64)
        gt_boxes = _to_numpy(gt_boxes).reshape(-1, 4)[: len(gt_classes)]
        crowd = (np.zeros(len(gt_classes), bool) if gt_is_crowd is None
                 else _to_numpy(gt_is_crowd).reshape(-1)[: len(gt_classes)].astype(bool))
        valid = (gt_classes >= 0) & (gt_classes < self.num_classes)
        xywh = _pixel_xywh(gt_boxes, h, w)
        for box, cls, is_crowd in zip(xywh[valid], gt_classes[valid], crowd[valid]):
            self._gt.append({"id": len(self._gt) + 1, "image_id": image_id,
                             "category_id": self.category_ids[int(cls)], "bbox": [float(v) for v in box],
                             "area": float(box[2] * box[3]), "iscrowd": int(bool(is_crowd))})
        det_scores = _to_numpy(det_scores).reshape(-1)
        n = len(det_scores) if num_detections is None else min(int(_to_numpy(num_detections)), len(det_scores))
        det_scores = det_scores[:n].astype(np.float64)
        det_classes = np.round(_to_numpy(det_classes).reshape(-1)[:n]).astype(np.int64)
        det_xywh = _pixel_xywh(_to_numpy(det_boxes).reshape(-1, 4)[:n], h, w)
        keep = (det_classes >= 0) & (det_classes < self.num_classes) & np.isfinite(det_scores)
        for box, cls, score in zip(det_xywh[keep], det_classes[keep], det_scores[keep]):
            self._dt.append({"id": len(self._dt) + 1, "image_id": image_id,
                             "category_id": self.category_ids[int(cls)], "bbox": [float(v) for v in box],
                             "area": float(box[2] * box[3]), "score": float(score), "iscrowd": 0})

    def update_batch(self, gt_boxes, gt_classes, det_boxes, det_scores, det_classes, num_detections=None,
                     image_sizes=None, gt_is_crowd=None):
        """Batched `update`: leading axis B on every argument; image_sizes [B, 2] (height, width)."""
        gt_boxes, gt_classes = _to_numpy(gt_boxes), _to_numpy(gt_classes)
        det_boxes, det_scores, det_classes = _to_numpy(det_boxes), _to_numpy(det_scores), _to_numpy(det_classes)
        num_detections = _to_numpy(num_detections)
        image_sizes = _to_numpy(image_sizes)
        gt_is_crowd = _to_numpy(gt_is_crowd)
        for i in range(len(gt_classes)):
            self.update(gt_boxes[i], gt_classes[i], det_boxes[i], det_scores[i], det_classes[i], image_sizes[i],
                        None if gt_is_crowd is None else gt_is_crowd[i],
                        None if num_detections is None else num_detections[i])

    def detections_json(self, image_ids=None):
        """The detections added so far as a COCO results list, `[{"image_id", "category_id", "bbox": [x, y, w, h]
        in pixels, "score"}, ...]` (what `COCO.loadRes` reads). image_ids: the id of each added image in the
        user's annotation file, in the order the images were added (default 1, 2, ...)."""
        if image_ids is not None and len(image_ids) < len(self._images):
            raise ValueError(f"{len(self._images)} images were evaluated but {len(image_ids)} image ids were given")
        return [{"image_id": image_ids[d["image_id"] - 1] if image_ids is not None else d["image_id"],
                 "category_id": d["category_id"], "bbox": d["bbox"], "score": d["score"]} for d in self._dt]

    def _coco_objects(self):
        from pycocotools.coco import COCO

        categories = [{"id": cid, "name": name, "supercategory": "none"}
                      for cid, name in zip(self.category_ids, self.class_names)]
        gt = COCO()
        gt.dataset = {"images": list(self._images), "annotations": list(self._gt), "categories": categories}
        dt = COCO()
        dt.dataset = {"images": list(self._images), "annotations": list(self._dt), "categories": categories}
        with _quiet():
            gt.createIndex()
            dt.createIndex()
        return gt, dt

    def result(self, verbose=False):
        """Runs COCOeval on everything added; returns {name: float} (see METRIC_NAMES). Also sets `self.table`
        (COCOeval's printed summary) and `self.per_class_ap` ({class name: AP}). verbose prints the table."""
        from pycocotools.cocoeval import COCOeval

        if not self._images:
            raise ValueError("COCOEvaluator.result() called before any image was added.")
        gt, dt = self._coco_objects()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.imgIds = [im["id"] for im in self._images]
        ev.params.catIds = list(self.category_ids)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            ev.evaluate()
            ev.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            ev.summarize()
        self.table = summary.getvalue()
        stats = np.asarray(ev.stats, np.float64)
        metrics = {name: (float(v) if v >= 0 else float("nan")) for name, v in zip(METRIC_NAMES, stats)}
        # Per-class AP@[.5:.95] (area all, maxDets 100) from the accumulated precision array [T, R, K, A, M].
        precision = ev.eval["precision"][:, :, :, 0, -1]
        self.per_class_ap = {}
        for k, name in enumerate(self.class_names):
            p = precision[:, :, k]
            p = p[p > -1]
            self.per_class_ap[name] = float(p.mean()) if p.size else float("nan")
        if verbose:
            print(self.table, end="")
        return metrics


def evaluate_detections(groundtruths, detections, num_classes=None, class_names=None, category_ids=None,
                        verbose=False, return_evaluator=False):
    """COCO metrics for lists of per-image dicts.

    groundtruths: [{"boxes" [M, 4] normalized yxyx, "classes" [M], "image_size" (height, width),
                    optional "is_crowd" [M]}, ...]
    detections:   [{"detection_boxes" [N, 4], "detection_scores" [N], "detection_classes" [N],
                    optional "num_detections"}, ...] in the same order.
    Returns {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"} (and the
    evaluator too with return_evaluator=True; its `.table` holds the COCO table).
    """
    if len(groundtruths) != len(detections):
        raise ValueError(f"{len(groundtruths)} ground-truth images but {len(detections)} detection entries.")
    ev = COCOEvaluator(num_classes=num_classes, class_names=class_names, category_ids=category_ids)
    for gt, det in zip(groundtruths, detections):
        ev.update(gt["boxes"], gt["classes"], det["detection_boxes"], det["detection_scores"],
                  det["detection_classes"], gt["image_size"], gt.get("is_crowd"), det.get("num_detections"))
    metrics = ev.result(verbose=verbose)
    return (metrics, ev) if return_evaluator else metrics


def format_coco_table(metrics, title=None):
    """A compact table of the metrics dict (the full COCOeval table is `COCOEvaluator.table`)."""
    lines = [title] if title else []
    rows = [("AP", "IoU=0.50:0.95", "all"), ("AP50", "IoU=0.50", "all"), ("AP75", "IoU=0.75", "all"),
            ("APs", "IoU=0.50:0.95", "small"), ("APm", "IoU=0.50:0.95", "medium"),
            ("APl", "IoU=0.50:0.95", "large"), ("AR1", "maxDets=1", "all"), ("AR10", "maxDets=10", "all"),
            ("AR100", "maxDets=100", "all"), ("ARs", "maxDets=100", "small"), ("ARm", "maxDets=100", "medium"),
            ("ARl", "maxDets=100", "large")]
    for key, what, area in rows:
        if key in metrics:
            lines.append(f"  {key:<6} {what:<14} area={area:<7} {metrics[key]:.3f}")
    return "\n".join(lines)


def print_coco_table(metrics_or_evaluator, title=None):
    """Prints COCOeval's own summary table (given a COCOEvaluator after `result()`) or, for a metrics dict, the
    compact table."""
    if isinstance(metrics_or_evaluator, COCOEvaluator):
        if title:
            print(title)
        print(metrics_or_evaluator.table, end="")
    else:
        print(format_coco_table(metrics_or_evaluator, title))
