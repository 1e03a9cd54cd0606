"""Imports torchvision's pure-Python model code on a CPU-only torch, as the reference for the converter tests.

The torchvision wheel from the registry links CUDA libraries, so its C++ extension (which registers the
`torchvision::nms` operator, among others) does not load against the CPU build of torch, and `import torchvision`
fails in its operator registrations. Defining `nms` (and `qnms`, whose fake kernel torchvision registers
unconditionally) with `torch.library` before the import, and making `torchvision.extension._has_ops` report True
afterwards, is enough for `torchvision.models.resnet*` and `torchvision.models.detection.retinanet_*`; NMS then
runs the small implementation below.
"""

import functools


def _nms(boxes, scores, iou_threshold):
    """Greedy NMS over [N, 4] xyxy boxes: indices kept, by decreasing score (torchvision.ops.nms semantics:
    a box is suppressed by a higher-scoring kept box whose IoU with it is > iou_threshold)."""
    import numpy as np
    import torch

    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order].double().numpy()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    width = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    overlaps = inter / (area[:, None] + area[None, :] - inter) > iou_threshold
    suppressed = np.zeros(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlaps[i]
    return order[torch.as_tensor(keep, dtype=torch.long)]


@functools.lru_cache(maxsize=None)
def import_torchvision():
    """Returns the `torchvision` module, importable on a CPU torch (see the module docstring)."""
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018  (already defined: the C++ extension or an earlier call)
    except (AttributeError, RuntimeError):
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.impl("nms", _nms, "CompositeExplicitAutograd")
        import_torchvision.library = library  # the definitions live as long as this object
    import torchvision
    import torchvision.extension

    torchvision.extension._has_ops = lambda: True
    return torchvision
