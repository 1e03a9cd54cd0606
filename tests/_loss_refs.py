"""Independent NumPy float64 references for the keras_focal losses, written from the formulas."""

import numpy as np

EPS = 1e-7  # keras.config.epsilon()


def sigmoid(x):
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def focal(y, x, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0):
    y = np.asarray(y, np.float64)
    y = y * (1 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        x = np.asarray(x, np.float64)
        # BCE from logits: -(y log sigmoid(x) + (1-y) log sigmoid(-x)), log sigmoid(x) = -log(1 + exp(-x))
        log_p = -np.logaddexp(0.0, -x)
        log_1mp = -np.logaddexp(0.0, x)
        p = sigmoid(x)
    else:
        p = np.clip(np.asarray(x, np.float64), EPS, 1 - EPS)
        log_p, log_1mp = np.log(p), np.log(1 - p)
    bce = -(y * log_p + (1 - y) * log_1mp)
    p_t = y * p + (1 - y) * (1 - p)
    a_t = 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
    return a_t * (1 - p_t) ** gamma * bce


def categorical(y, x, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0):
    y = np.asarray(y, np.float64)
    if label_smoothing:
        y = y * (1 - label_smoothing) + label_smoothing / y.shape[-1]
    if from_logits:
        p = softmax(x)
    else:
        p = np.asarray(x, np.float64)
        p = np.clip(p / p.sum(axis=-1, keepdims=True), EPS, 1 - EPS)
    a = 1.0 if alpha is None else alpha
    return np.sum(-y * a * (1 - p) ** gamma * np.log(p), axis=-1)


def sparse_categorical(labels, x, alpha=0.25, gamma=2.0, from_logits=False, ignore_class=None):
    labels = np.asarray(labels)
    num_classes = np.shape(x)[-1]
    ignored = labels == ignore_class if ignore_class is not None else np.zeros(labels.shape, bool)
    onehot = np.eye(num_classes)[np.where(ignored, 0, labels)]
    out = categorical(onehot, x, alpha, gamma, from_logits)
    return np.where(ignored, 0.0, out)


def qfl(y, x, beta=2.0, from_logits=False):
    y = np.asarray(y, np.float64)
    if from_logits:
        x = np.asarray(x, np.float64)
        sigma = sigmoid(x)
        log_s, log_1ms = -np.logaddexp(0.0, -x), -np.logaddexp(0.0, x)
    else:
        sigma = np.clip(np.asarray(x, np.float64), EPS, 1 - EPS)
        log_s, log_1ms = np.log(sigma), np.log(1 - sigma)
    return -np.abs(y - sigma) ** beta * ((1 - y) * log_1ms + y * log_s)


def dfl(y, x, from_logits=False):
    y = np.asarray(y, np.float64)
    n = np.shape(x)[-1] - 1
    if from_logits:
        s = softmax(x)
    else:
        s = np.asarray(x, np.float64)
        s = np.clip(s / s.sum(axis=-1, keepdims=True), EPS, 1.0)
    y = np.clip(y, 0, n - 1e-9)  # "a target equal to n is clamped just below n"
    y_l = np.floor(y)
    y_r = y_l + 1
    s_l = np.take_along_axis(s, y_l.astype(int)[..., None], -1)[..., 0]
    s_r = np.take_along_axis(s, y_r.astype(int)[..., None], -1)[..., 0]
    return -((y_r - y) * np.log(s_l) + (y - y_l) * np.log(s_r))


def giou(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    out = np.zeros(a.shape[:-1])
    for idx in np.ndindex(*a.shape[:-1]):
        ty0, tx0, ty1, tx1 = a[idx]
        py0, px0, py1, px1 = b[idx]
        area_t = max(ty1 - ty0, 0) * max(tx1 - tx0, 0)
        area_p = max(py1 - py0, 0) * max(px1 - px0, 0)
        inter = max(min(ty1, py1) - max(ty0, py0), 0) * max(min(tx1, px1) - max(tx0, px0), 0)
        union = area_t + area_p - inter
        hull = (max(ty1, py1) - min(ty0, py0)) * (max(tx1, px1) - min(tx0, px0))
        iou = inter / union if union > 0 else 0.0
        out[idx] = 1 - (iou - ((hull - union) / hull if hull > 0 else 0.0))
    return out


def smooth_l1(y, x, beta=0.11):
    d = np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))
    if beta == 0:
        return d
    return np.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta)


def reduce(values, sample_weight=None, reduction="sum_over_batch_size"):
    """Keras' reduction of per-sample values (weights of the same shape as the values)."""
    values = np.asarray(values, np.float64)
    if sample_weight is not None:
        values = values * np.asarray(sample_weight, np.float64)
    if reduction in (None, "none"):
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        return total / np.sum(sample_weight)
    return total / max(values.size, 1)


def average_precision(labels, scores):
    """Positive-class average precision (area under the precision-recall curve, step interpolation)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    labels = np.asarray(labels)[order]
    hits = np.cumsum(labels)
    precision = hits / np.arange(1, len(labels) + 1)
    return float(np.sum(precision * labels) / max(labels.sum(), 1))


# ----------------------------------------------------------------------------------------------------------------
# Per-class weights, ignored labels and the reductions that leave them out


def class_balanced_weights(counts, method="effective", beta=0.999):
    """Cui et al. 2019: w_c = (1 - beta) / (1 - beta^n_c) ("effective") or 1 / n_c ("inverse"), summing to C."""
    n = np.asarray(counts, np.float64)
    w = (1.0 - beta) / (1.0 - beta**n) if method == "effective" else 1.0 / n
    return w * len(n) / w.sum()


def masked_reduce(values, kept, sample_weight=None, reduction="sum_over_batch_size"):
    """Keras' rule for ignored entries: the weighted sum over kept entries divided by the number of kept entries
    ("sum_over_batch_size"), or by their summed weights ("mean_with_sample_weight"). `values` and `kept` are
    element-wise; `sample_weight` broadcasts over trailing axes."""
    values = np.asarray(values, np.float64) * kept
    w = np.ones_like(values) if sample_weight is None else np.asarray(sample_weight, np.float64)
    w = np.broadcast_to(w.reshape(w.shape + (1,) * (values.ndim - w.ndim)), values.shape)
    total = np.sum(values * w)
    if reduction == "sum_over_batch_size":
        return total / max(kept.sum(), 1)
    if reduction == "mean_with_sample_weight":
        return total / np.sum(w * kept)
    raise ValueError(reduction)


# ----------------------------------------------------------------------------------------------------------------
# Other libraries' focal losses, from their published source / documentation (none of them is imported)


def tfa_sigmoid_focal_crossentropy(y, x, alpha=0.25, gamma=2.0, from_logits=False):
    """tensorflow_addons.losses.sigmoid_focal_crossentropy: BCE (Keras' clipped BCE on probabilities), `if alpha:`
    and `if gamma:` guards (alpha=0 means no weighting), SUMMED over the last axis; the class's default reduction is
    NONE (one value per example)."""
    y = np.asarray(y, np.float64)
    p = sigmoid(x) if from_logits else np.asarray(x, np.float64)
    if from_logits:
        ce = np.logaddexp(0.0, x) - y * np.asarray(x, np.float64)
    else:
        pc = np.clip(p, EPS, 1 - EPS)
        ce = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    p_t = y * p + (1 - y) * (1 - p)
    a = y * alpha + (1 - y) * (1 - alpha) if alpha else 1.0
    m = (1 - p_t) ** gamma if gamma else 1.0
    return np.sum(a * m * ce, axis=-1)


def keras_cv_focal(y, x, alpha=0.25, gamma=2.0, from_logits=False):
    """keras_cv.losses.FocalLoss.call: sigmoid (if from_logits), Keras' clipped binary cross-entropy,
    alpha where y == 1 else 1 - alpha, (1 - p_t)^gamma, SUMMED over the last axis (then Keras' reduction)."""
    y = np.asarray(y, np.float64)
    p = sigmoid(x) if from_logits else np.asarray(x, np.float64)
    pc = np.clip(p, EPS, 1 - EPS)
    ce = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    a = np.where(y == 1.0, alpha, 1.0 - alpha)
    p_t = y * p + (1 - y) * (1 - p)
    return np.mean(np.sum(a * (1 - p_t) ** gamma * ce, axis=-1))


def torchvision_sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss(inputs=logits, targets, alpha, gamma, reduction): BCE with logits times
    (1 - p_t)^gamma, times alpha_t when alpha >= 0 (alpha=-1: no weighting); "none" | "mean" | "sum" over ALL
    elements."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    p = sigmoid(x)
    ce = np.logaddexp(0.0, x) - y * x
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]
