"""Pictures of detections and of datasets: boxes with class names (and scores) drawn on images, a gallery of a
dataset's images, and a histogram of box sizes.

    picture = draw_detections(image, out["detection_boxes"], out["detection_scores"], out["detection_classes"],
                              class_names, path="prediction.png")
    plot_gallery(images, targets, class_names, "gallery.png")          # ground truth with names, in a grid
    plot_box_sizes(sizes_px, "box_sizes.png", anchor_sizes=(32, 64, 128, 256, 512))

Boxes and labels are drawn with matplotlib (Agg backend, no display needed). `keras.visualization.draw_bounding_boxes`
is not used: it needs OpenCV (`cv2`), which keras_focal does not depend on, and it writes the labels at the image's
own resolution (unreadable on a 128 px image). The grid of a gallery is `keras.visualization.plot_image_gallery`.
"""

from __future__ import annotations

import numpy as np

# 18 distinguishable colours; class c is drawn in PALETTE[c % 18].
PALETTE = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
           "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def class_label(class_id, class_names=None):
    """The name of a class index, or the index itself when there are no names (or it is out of range)."""
    c = int(class_id)
    return class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)


def draw_detections(image, boxes, scores=None, classes=None, class_names=None, score_threshold=0.3,
                    num_detections=None, path=None, ground_truth=None, dpi=100, scale=None):
    """Draws boxes with class names (and scores) on one image.

    image: uint8 [H, W, 3]; boxes [N, 4] normalized yxyx; scores [N] or None (ground truth: every box is drawn,
    labelled with its name only); classes [N]; num_detections: use only the first N; ground_truth: optional
    (boxes [M, 4], classes [M]) drawn dashed in white (entries with class < 0 are padding).
    Returns the rendered picture as uint8 [H', W', 3] (H' = scale * H; scale defaults to fit >= 512 px); writes it
    to `path` (PNG) when given.
    """
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    h, w = image.shape[:2]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.round(np.asarray(classes if classes is not None else np.zeros(len(boxes)), np.float32)
                       .reshape(-1)).astype(np.int64)
    labelled_scores = scores is not None
    scores = np.asarray(scores, np.float32).reshape(-1) if labelled_scores else np.ones(len(boxes), np.float32)
    n = len(scores) if num_detections is None else min(int(num_detections), len(scores))
    scale = scale or max(1.0, 512.0 / max(h, w))
    fig = plt.figure(figsize=(w * scale / dpi, h * scale / dpi), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(image, interpolation="nearest")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.axis("off")
    if ground_truth is not None:
        for (y0, x0, y1, x1), c in zip(np.asarray(ground_truth[0]).reshape(-1, 4), np.asarray(ground_truth[1])):
            if c < 0:
                continue
            ax.add_patch(Rectangle((x0 * w - 0.5, y0 * h - 0.5), (x1 - x0) * w, (y1 - y0) * h, fill=False,
                                   edgecolor="white", linestyle="--", linewidth=1))
    for i in range(n):
        if classes[i] < 0 or (labelled_scores and scores[i] < score_threshold):
            continue
        y0, x0, y1, x1 = np.clip(boxes[i], 0, 1)
        colour = PALETTE[int(classes[i]) % len(PALETTE)]
        ax.add_patch(Rectangle((x0 * w - 0.5, y0 * h - 0.5), (x1 - x0) * w, (y1 - y0) * h, fill=False,
                               edgecolor=colour, linewidth=2))
        text = class_label(classes[i], class_names) + (f" {scores[i]:.2f}" if labelled_scores else "")
        ax.text(x0 * w - 0.5, y0 * h - 0.5, text, color="black", fontsize=8, va="bottom", ha="left",
                bbox=dict(facecolor=colour, edgecolor="none", pad=1, alpha=0.85))
    fig.canvas.draw()
    picture = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    if path:
        fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return picture


def _fit(picture, size):
    """Pads an [h, w, 3] picture with black to [size, size, 3] (it is already at most `size` on its long side)."""
    out = np.zeros((size, size, 3), np.uint8)
    h, w = min(size, picture.shape[0]), min(size, picture.shape[1])
    out[:h, :w] = picture[:h, :w]
    return out


def plot_gallery(images, targets, class_names=None, path=None, size=256, cols=None):
    """A grid of images with their ground-truth boxes and class names; writes `path` (PNG) when given.

    images: a list of uint8 [H, W, 3] (any sizes); targets: a list of {"boxes" [M, 4] normalized yxyx, "classes"
    [M]}. Each picture is drawn `size` px on its long side and padded to a square; the grid is
    `keras.visualization.plot_image_gallery`. Returns the pictures, uint8 [N, size, size, 3].
    """
    if not len(images):
        raise ValueError("plot_gallery needs at least one image")
    pictures = []
    for image, target in zip(images, targets):
        image = np.asarray(image)
        pictures.append(_fit(draw_detections(image, target["boxes"], None, target["classes"], class_names,
                                             scale=size / max(image.shape[:2])), size))
    pictures = np.stack(pictures)
    if path:
        import keras

        cols = cols or int(np.ceil(np.sqrt(len(pictures))))
        rows = int(np.ceil(len(pictures) / cols))
        grid = np.concatenate([pictures, np.zeros((rows * cols - len(pictures), size, size, 3), np.uint8)])
        keras.visualization.plot_image_gallery(grid, rows=rows, cols=cols, scale=size / 60, path=path,
                                               transparent=False, dpi=60, data_format="channels_last")
        _pyplot().close("all")
    return pictures


def plot_box_sizes(sizes, path, anchor_sizes=None, min_size=8.0, title=None):
    """Histogram of box sizes (sqrt(width * height) in pixels at the training size, log-spaced bins); marks the
    anchor sizes of the FPN levels and the `min_size` below which boxes are hard to learn. Writes `path` (PNG)."""
    plt = _pyplot()
    sizes = np.asarray(sizes, np.float64).reshape(-1)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    top = max(float(sizes.max()) if sizes.size else 1.0, max(anchor_sizes or [1.0]), 2.0 * min_size)
    bins = np.geomspace(1.0, top * 1.1, 40)
    ax.hist(np.clip(sizes, 1.0, None), bins=bins, color="#4363d8")
    ax.set_xscale("log")
    ax.axvline(min_size, color="#e6194b", linestyle="--", label=f"{min_size:g} px")
    for k, anchor in enumerate(anchor_sizes or ()):
        ax.axvline(anchor, color="#3cb44b", linestyle=":", label="anchor sizes" if k == 0 else None)
    ax.set_xlabel("box size sqrt(w * h), pixels at the training size")
    ax.set_ylabel("boxes")
    ax.set_title(title or f"{sizes.size} boxes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
