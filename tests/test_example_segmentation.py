"""examples/segmentation.py end to end on tiny data (the full run's figures are in docs/losses.md)."""

import numpy as np

from _examples import load_example


def test_segmentation_example_tiny_run():
    seg = load_example("segmentation")
    images, labels = seg.make_data(3, 24, seed=0)
    assert images.shape == (3, 24, 24, 3) and labels.shape == (3, 24, 24)
    assert set(np.unique(labels)) <= {0, 1, 2, 3, seg.VOID} and np.any(labels == seg.VOID)
    results = seg.main(["--tiny"])
    counts = results["pixel_counts"]
    assert len(results["alpha"]) == 4 and np.isclose(sum(results["alpha"]), 4)
    assert results["alpha"][int(np.argmin(counts))] == max(results["alpha"])  # the rarest class weighs most
    for name in ("focal+dice", "cross-entropy"):
        assert 0.0 <= results[name]["mean_iou"] <= 1.0 and len(results[name]["per_class_iou"]) == 4
