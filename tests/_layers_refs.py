"""Independent NumPy references for the keras_focal.layers tests (loops, float64, no keras_focal code)."""

import math

import numpy as np


def ref_anchors(h, w, min_level=3, max_level=7, anchor_size=4.0, num_scales=3, ratios=(0.5, 1.0, 2.0), offset=0.5):
    out = []
    for level in range(min_level, max_level + 1):
        s = 2**level
        for i in range(math.ceil(h / s)):
            for j in range(math.ceil(w / s)):
                cy, cx = (i + offset) * s, (j + offset) * s
                for k in range(num_scales):
                    size = anchor_size * s * 2 ** (k / num_scales)
                    for r in ratios:
                        ah, aw = size * math.sqrt(r), size / math.sqrt(r)
                        out.append([(cy - ah / 2) / h, (cx - aw / 2) / w, (cy + ah / 2) / h, (cx + aw / 2) / w])
    return np.array(out, dtype=np.float64)


def ref_iou(a, b):
    """[N,4] x [M,4] -> [N,M]; 0 for empty boxes."""
    out = np.zeros((len(a), len(b)))
    for n in range(len(a)):
        for m in range(len(b)):
            ih = max(0.0, min(a[n, 2], b[m, 2]) - max(a[n, 0], b[m, 0]))
            iw = max(0.0, min(a[n, 3], b[m, 3]) - max(a[n, 1], b[m, 1]))
            inter = ih * iw
            ua = max(0.0, a[n, 2] - a[n, 0]) * max(0.0, a[n, 3] - a[n, 1])
            ub = max(0.0, b[m, 2] - b[m, 0]) * max(0.0, b[m, 3] - b[m, 1])
            union = ua + ub - inter
            out[n, m] = inter / union if union > 0 else 0.0
    return out


def ref_encode(anchor, box, weights=(1, 1, 1, 1)):
    ah, aw = anchor[2] - anchor[0], anchor[3] - anchor[1]
    acy, acx = anchor[0] + ah / 2, anchor[1] + aw / 2
    bh, bw = box[2] - box[0], box[3] - box[1]
    bcy, bcx = box[0] + bh / 2, box[1] + bw / 2
    return np.array(
        [weights[0] * (bcy - acy) / ah, weights[1] * (bcx - acx) / aw, weights[2] * math.log(bh / ah), weights[3] * math.log(bw / aw)]
    )


def ref_decode(anchor, d, weights=(1, 1, 1, 1), clip=math.log(1000 / 16)):
    ah, aw = anchor[2] - anchor[0], anchor[3] - anchor[1]
    acy, acx = anchor[0] + ah / 2, anchor[1] + aw / 2
    dy, dx, dh, dw = d[0] / weights[0], d[1] / weights[1], min(d[2] / weights[2], clip), min(d[3] / weights[3], clip)
    cy, cx, h, w = acy + dy * ah, acx + dx * aw, ah * math.exp(dh), aw * math.exp(dw)
    return np.array([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2])


def _valid(box, cls):
    return cls >= 0 and box[2] > box[0] and box[3] > box[1]


def ref_assign_iou(anchors, boxes, classes, pos=0.5, neg=0.4, low_quality=True):
    """torchvision Matcher semantics; returns class targets (-1 bg, -2 ignored) and matched index."""
    valid = [m for m in range(len(boxes)) if _valid(boxes[m], classes[m])]
    n = len(anchors)
    ct = np.full(n, -1)
    match = np.full(n, -1)
    if not valid:
        return ct, match
    iou = ref_iou(anchors, boxes[valid])
    for a in range(n):
        best = int(np.argmax(iou[a]))
        match[a] = valid[best]
        if iou[a, best] >= pos:
            ct[a] = classes[valid[best]]
        elif iou[a, best] >= neg:
            ct[a] = -2
    if low_quality:
        for m in range(len(valid)):
            gbest = iou[:, m].max()
            if gbest <= 0:
                continue
            for a in range(n):
                # ties within float32 rounding (symmetric anchors) count as ties, as they do in float32
                if iou[a, m] >= gbest * (1 - 1e-6):
                    ct[a] = classes[match[a]]
    return ct, match


def ref_assign_atss(anchors, level_sizes, boxes, classes, h, w, topk=9):
    """mmdetection ATSSAssigner semantics in pixel space; returns class targets and matched index."""
    scale = np.array([h, w, h, w], dtype=np.float64)
    anc = anchors * scale
    n = len(anc)
    ct = np.full(n, -1)
    match = np.full(n, -1)
    valid = [m for m in range(len(boxes)) if _valid(boxes[m], classes[m])]
    if not valid:
        return ct, match
    gts = boxes[valid] * scale
    iou = ref_iou(anc, gts)
    acy = (anc[:, 0] + anc[:, 2]) / 2
    acx = (anc[:, 1] + anc[:, 3]) / 2
    best_iou = np.full(n, -np.inf)
    for m, g in enumerate(gts):
        gcy, gcx = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2
        dist = np.sqrt((acy - gcy) ** 2 + (acx - gcx) ** 2)
        cands = []
        start = 0
        for size in level_sizes:
            order = np.argsort(dist[start:start + size], kind="stable")[: min(topk, size)]
            cands.extend((order + start).tolist())
            start += size
        vals = iou[cands, m]
        thr = vals.mean() + (vals.std(ddof=1) if len(vals) > 1 else 0.0)
        for a in cands:
            inside = min(acx[a] - g[1], acy[a] - g[0], g[3] - acx[a], g[2] - acy[a]) > 0.01
            if inside and iou[a, m] >= thr and iou[a, m] > best_iou[a]:
                best_iou[a] = iou[a, m]
                match[a] = valid[m]
                ct[a] = classes[valid[m]]
    return ct, match


def random_ground_truth(rng, m, pad=2):
    """m random boxes clipped to the image, with classes 0-4, then `pad` padding rows (-1)."""
    c = rng.uniform(0.1, 0.9, size=(m, 2))
    hw = rng.uniform(0.05, 0.6, size=(m, 2))
    boxes = np.clip(np.concatenate([c - hw / 2, c + hw / 2], axis=1), 0, 1)
    boxes = np.concatenate([boxes, -np.ones((pad, 4))]).astype("float32")
    classes = np.concatenate([rng.integers(0, 5, size=m), -np.ones(pad, int)]).astype("int32")
    return boxes, classes
