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
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 for two empty boxes: not an overlap
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


def randomize_normalization(module, seed=0):
    """Random BatchNorm statistics and affine parameters and random GroupNorm parameters, so that no
    normalization layer of the reference is an identity and a wrong mapping of any of them shows."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                channels = layer.num_features
                layer.running_mean.copy_(torch.randn(channels, generator=generator) * 0.1)
                layer.running_var.copy_(torch.rand(channels, generator=generator) * 0.5 + 0.75)
            if isinstance(layer, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
                channels = layer.weight.shape[0]
                layer.weight.copy_(torch.rand(channels, generator=generator) * 0.5 + 0.75)
                layer.bias.copy_(torch.randn(channels, generator=generator) * 0.1)
    return module.eval()


def random_retinanet(variant, image_size, seed=0):
    """torchvision's `variant` with random weights, random normalization and class biases moved up from the
    focal prior (-4.6) to about -2.5, so that random weights give a few hundred detections above 0.05."""
    import torch

    tv = import_torchvision()
    torch.manual_seed(seed)
    model = getattr(tv.models.detection, variant)(weights=None, weights_backbone=None, min_size=image_size,
                                                   max_size=image_size)
    randomize_normalization(model, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.head.classification_head.cls_logits.bias.normal_(-2.5, 0.5, generator=generator)
        model.head.regression_head.bbox_reg.weight.normal_(0.0, 0.02, generator=generator)
        model.head.regression_head.bbox_reg.bias.normal_(0.0, 0.1, generator=generator)
    return model.eval()


def numpy_state_dict(module):
    return {name: tensor.detach().numpy().copy() for name, tensor in module.state_dict().items()}
